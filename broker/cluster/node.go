package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mqtt-operator/mqtt-operator/broker/apiv1"
	"github.com/mqtt-operator/mqtt-operator/broker/server"
	"github.com/mqtt-operator/mqtt-operator/broker/session"
	"github.com/mqtt-operator/mqtt-operator/broker/store"
)

// Config configures a Node.
type Config struct {
	// Name is the node's name in the cluster (its raft server ID).
	Name string
	// Advertise is the cluster address other nodes dial (its raft server address).
	Advertise string
	// Store is the node's pebble store: raft log, stable state, cluster ID.
	Store *store.Pebble
	// SnapshotDir holds raft snapshots.
	SnapshotDir string
	// Auth authenticates cluster connections with the cookie.
	Auth *Authenticator
	// Server is the broker this node belongs to.
	Server *server.Server
	// Logger receives the node's logs.
	Logger *slog.Logger
	// TLS, when set, wraps every cluster connection: the listener requires and
	// verifies the peer's certificate, the dialer verifies the peer's name. The
	// cookie handshake runs inside it.
	TLS *tls.Config
	// Raft timing; zero values take LAN defaults.
	HeartbeatTimeout time.Duration
}

// Node is one broker's membership in a cluster. It wires five parts, each with one
// job and its own lock, and keeps the exported API; it implements server.Cluster:
//
//   - transport (transport.go, wire.go, handshake.go): the cluster port, TLS, the
//     cookie handshake, channels, frames;
//   - membership (membership.go, judge.go, raft.go, fsm.go, join.go): raft, its state
//     machine, the stale/member judgement, join, leave, reset, bootstrap;
//   - routing (routing.go, link.go, inbound.go, forward.go): links to the other
//     members, route replication, forwarding, requests between members;
//   - ownership (ownership.go, takeover.go): client-ID owners, epochs, takeovers;
//   - evacuation (evacuation.go): moving clients and sessions away.
//
// requests.go answers the requests members send each other, dispatching to the parts.
type Node struct {
	cfg Config
	srv *server.Server
	log *slog.Logger

	tr     *transport
	mem    *membership
	routes *routing
	own    *ownership
	evac   *evacuator

	closing atomic.Bool
	wg      sync.WaitGroup // every goroutine of every part
	done    chan struct{}  // closed by Close

	majorityLost atomic.Bool // the last readiness check found no majority of voters in reach

	manager atomic.Pointer[Manager] // answers management queries (SetManager)
}

// NewNode opens the node's cluster state from its store and starts raft. It does not
// bootstrap or join: see Bootstrap and Join.
func NewNode(cfg Config) (*Node, error) {
	if cfg.Store == nil || cfg.Server == nil || cfg.Auth == nil {
		return nil, errors.New("cluster node: store, server and authenticator are required")
	}
	if cfg.HeartbeatTimeout <= 0 {
		cfg.HeartbeatTimeout = 500 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	n := &Node{cfg: cfg, srv: cfg.Server, log: cfg.Logger, done: make(chan struct{})}
	n.wire()
	id, err := n.mem.storedClusterID()
	if err != nil {
		return nil, fmt.Errorf("reading the cluster ID from the store: %w", err)
	}
	n.mem.clusterID = id
	n.mem.state = apiv1.StoreEmpty
	if id != "" {
		n.mem.state = apiv1.StoreMember
	}
	if err := n.mem.startRaft(); err != nil {
		return nil, err
	}
	n.wg.Add(1)
	go n.mem.watch()
	return n, nil
}

// wire builds the parts and connects each to what it may call.
func (n *Node) wire() {
	cfg := n.cfg
	n.tr = newTransport(cfg, n.done, &n.wg)
	n.mem = &membership{cfg: cfg, log: n.log, srv: n.srv, tr: n.tr, done: n.done, wg: &n.wg}
	n.routes = newRouting(cfg.Name, n.log, n.done, &n.wg)
	peers := clusterPeers{n.mem, n.routes}
	n.own = &ownership{self: cfg.Name, log: n.log, srv: n.srv, peers: peers, now: time.Now,
		turns: newTurns(n.log, turnTTL), done: n.done, majority: n.reachesMajority}
	n.evac = &evacuator{self: cfg.Name, log: n.log, srv: n.srv, peers: peers, done: n.done, wg: &n.wg,
		takeTurn: n.own.takeTurn}

	n.tr.clusterID = n.mem.clusterIDNow
	n.tr.onRaft, n.tr.onLink, n.tr.onQuery = n.mem.acceptRaft, n.routes.serveInbound, n.handleRequest
	n.mem.setLinks, n.mem.request, n.mem.handle, n.mem.query = n.routes.setLinks, n.routes.request, n.handleRequest, n.tr.query
	n.routes.srv, n.routes.dialer, n.routes.judge, n.routes.handle = n.srv, n.tr, n.mem, n.handleRequest
	n.routes.onUp, n.routes.onGone = n.own.peerBack, n.own.stale.forget
}

// clusterPeers gives ownership and evacuation the members (membership) and their
// links (routing).
type clusterPeers struct {
	m *membership
	r *routing
}

func (p clusterPeers) memberNames() []string { return p.m.memberNames() }
func (p clusterPeers) peerUp(node string) bool {
	return p.r.peerUp(node)
}
func (p clusterPeers) request(peer string, req *request) (*response, error) {
	return p.r.request(peer, req)
}
func (p clusterPeers) requestLate(peer string, req *request, wait time.Duration, late func(*response)) (*response, error) {
	return p.r.requestLate(peer, req, wait, late)
}
func (p clusterPeers) barrier()      { p.r.barrier() }
func (p clusterPeers) drainInbound() { p.r.drainInbound() }

// Auth returns the node's authenticator (for its counters).
func (n *Node) Auth() *Authenticator { return n.cfg.Auth }

// Name returns the node's name.
func (n *Node) Name() string { return n.cfg.Name }

// Peers returns the names of the members this node has a working link to.
func (n *Node) Peers() []string { return n.routes.upPeers() }

// Stats are the node's counters and gauges for the metrics.
type Stats struct {
	ForwardedOut, ForwardedIn, ForwardFailures, TLSFailures uint64
	TLS12Handshakes, TLS13Handshakes                        uint64 // completed on the cluster port
	HeartbeatTimeouts, OutboxDropped, Duplicates            uint64
	Outboxed                                                int64
	Members, Peers, StaleKicks                              int
	Stale, Leader                                           bool
}

// Stats returns the node's counters.
func (n *Node) Stats() Stats {
	r := n.routes
	st := Stats{ForwardedOut: r.forwardedOut.Load(), ForwardedIn: r.forwardedIn.Load(),
		ForwardFailures: r.forwardFailure.Load(), TLSFailures: n.tr.tlsFailures.Load(), Peers: len(n.Peers()),
		HeartbeatTimeouts: r.heartbeatTimeouts.Load(), OutboxDropped: r.outboxDropped.Load(),
		Duplicates: r.duplicates.Load(), Outboxed: r.outboxed.Load(), StaleKicks: n.own.stale.size(),
		TLS12Handshakes: n.tr.tlsDone[0].Load(), TLS13Handshakes: n.tr.tlsDone[1].Load()}
	st.Members, st.Stale, st.Leader = n.mem.stats()
	return st
}

// Info returns the cluster side of GET /api/v1/node (the server fills the rest).
func (n *Node) Info() apiv1.Node {
	in := n.mem.info()
	in.Evacuating = n.evac.running()
	for _, name := range n.mem.memberNames() {
		if name != n.cfg.Name && !n.routes.peerUp(name) {
			in.Unreachable = append(in.Unreachable, name)
		}
	}
	slices.Sort(in.Unreachable)
	return in
}

// Member is one node of the cluster as GET /api/v1/cluster reports it.
type Member = apiv1.Member

// View is the cluster as this node sees it (GET /api/v1/cluster).
type View = apiv1.Cluster

// View returns the cluster as this node sees it, or not_member.
func (n *Node) View() (View, error) {
	v, err := n.mem.clusterView()
	if err != nil {
		return v, err
	}
	for i := range v.Members {
		m := &v.Members[i]
		m.Reachable = m.Name == n.cfg.Name || n.routes.peerUp(m.Name)
	}
	return v, nil
}

// reachesMajority reports whether this node reaches a majority of the voters (itself,
// if a voter, and the voters it has a link to); true while it knows of none.
func (n *Node) reachesMajority() bool {
	voters, reached := n.mem.votersReached(n.routes.peerUp)
	return voters == 0 || 2*reached > voters
}

// Ready reports whether the node may take clients: not stale, not evacuating, and,
// for a member that just started, linked both ways to every other member (so it has
// their routes and they have its) or linkGrace past its start (a dead member must not
// keep it unready). Once settled, a peer going away later does not make it unready.
func (n *Node) Ready() bool {
	ready, _ := n.Readiness()
	return ready
}

// Readiness is Ready with the reason it is not ready ("" when it is).
func (n *Node) Readiness() (bool, string) {
	v, settled, caughtUp, voter, memberFor, peers := n.mem.readyView()
	in := readiness{view: v, settled: settled, caughtUp: caughtUp, voter: voter,
		evacuating: n.evac.running(), memberFor: memberFor, peers: peers, linked: n.routes.linkedBothWays}
	in.voters, in.reached = n.mem.votersReached(n.routes.peerUp)
	ready, settle, why := judgeReady(in)
	n.noteMajority(v.member() && in.voters > 0, in.reached > in.voters/2, in.reached, in.voters)
	if settle {
		n.mem.markSettled()
	}
	return ready, why
}

// noteMajority logs when a member loses or regains a majority of the voters within
// reach (once per change: probes call Ready often).
func (n *Node) noteMajority(member, majority bool, reached, voters int) {
	lost := member && !majority
	if n.majorityLost.Swap(lost) == lost {
		return
	}
	if lost {
		n.log.Warn("not ready: this node reaches no majority of the cluster's voters", "reached", reached, "voters", voters)
	} else {
		n.log.Info("a majority of the cluster's voters is within reach again", "reached", reached, "voters", voters)
	}
}

// Serve accepts cluster connections on l until Close.
func (n *Node) Serve(l net.Listener) error { return n.tr.serve(l) }

// Close leaves the node's links and raft running no more (the node stays a member:
// this is a shutdown, not a leave).
func (n *Node) Close() {
	if !n.closing.CompareAndSwap(false, true) {
		return
	}
	close(n.done)
	n.tr.close()
	n.routes.close()
	n.mem.stopRaft()
	n.wg.Wait()
}

// Bootstrap creates a new cluster with this node as its only member.
func (n *Node) Bootstrap() error { return n.mem.bootstrap() }

// Join asks the cluster seed belongs to (any member: it forwards to the leader) to add
// this node as a voter, and returns once this node sees itself in the configuration.
func (n *Node) Join(ctx context.Context, seed string) error { return n.mem.join(ctx, seed) }

// JoinSeeds tries the seeds in turn until one join succeeds, the node is a member, or
// ctx ends; cookie and stale-store refusals end it at once.
func (n *Node) JoinSeeds(ctx context.Context, seeds []string, interval time.Duration) error {
	return n.mem.joinSeeds(ctx, seeds, interval)
}

// Leave removes this node from the cluster gracefully.
func (n *Node) Leave() error { return n.mem.leave() }

// ForceLeave removes another (dead) node from the cluster.
func (n *Node) ForceLeave(node string) error { return n.mem.forceLeave(node) }

// Reset wipes this node's store (cluster identity, raft state, sessions, retained
// messages) and leaves it empty, ready to join.
func (n *Node) Reset() error {
	n.mem.stopRaft()
	n.routes.setLinks(nil)
	n.srv.Reset()
	if err := n.mem.wipe(); err != nil {
		return err
	}
	n.mem.forget()
	n.evac.reset()
	n.log.Warn("store reset: this node is empty and may join a cluster")
	return n.mem.startRaft()
}

// Evacuate starts moving this node's clients and sessions to the other members:
// readiness goes false, clients are disconnected at rate per second (v5: 0x9C, use
// another server) and persistent sessions are handed to the members that own their
// client IDs. It returns at once; calling it again while it runs or after it is done
// changes nothing, and after a restart it starts over (idempotent and resumable).
func (n *Node) Evacuate(rate int) error {
	if !n.mem.isMember() {
		return n.mem.notMember()
	}
	n.evac.start(rate)
	return nil
}

// Evacuation returns the progress of an evacuation.
func (n *Node) Evacuation() EvacuationStatus { return n.evac.status() }

// RouteAdded implements server.Cluster.
func (n *Node) RouteAdded(r server.Route) { n.routes.sendRoutes(&routes{Add: []server.Route{r}}) }

// RouteRemoved implements server.Cluster.
func (n *Node) RouteRemoved(r server.Route) { n.routes.sendRoutes(&routes{Del: []server.Route{r}}) }

// PeerUp implements server.Cluster.
func (n *Node) PeerUp(node string) bool { return n.routes.peerUp(node) }

// Forward implements server.Cluster: one frame per interested node, sent at once; the
// returned wait collects every node's ack for QoS 1 and 2, so the publisher's ack
// (sent after it) means they all queued the message.
func (n *Node) Forward(msg *session.Message, targets map[string][]server.Route) func() int {
	return n.routes.forward(msg, targets)
}

// Retain implements server.Cluster: retained messages go through the raft log.
func (n *Node) Retain(msg *session.Message) error { return n.mem.retain(msg) }

// Takeover implements server.Cluster: the client ID's owner orders the connect and
// ends the ID's sessions elsewhere; a persistent one comes back to continue here.
func (n *Node) Takeover(id string, clean bool, claim server.Claim) (server.Handover, error) {
	if !n.mem.isMember() {
		return server.Handover{}, nil
	}
	return n.own.takeover(id, clean, claim)
}
