package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/mqtt-operator/mqtt-operator/broker/apiv1"
	"github.com/mqtt-operator/mqtt-operator/broker/server"
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

// Node is one broker's membership in a cluster: the cluster port, the raft group
// for membership and replicated metadata, and the links to the other members over
// which routes and messages travel. It implements server.Cluster.
type Node struct {
	cfg  Config
	srv  *server.Server
	log  *slog.Logger
	auth *Authenticator

	mu          sync.Mutex
	state       string
	staleReason string
	clusterID   string
	wasMember   bool          // this node saw itself in the raft configuration
	raft        *raft.Raft    // nil while stale or closed
	stream      *streamLayer  // the raft instance's stream layer
	members     []raft.Server // latest configuration (polled by watch)
	// The newest configuration this node's log holds (committed or not) and its
	// index: what link handshakes compare (see configView). The committed one is
	// what snapshots carry.
	configIndex      uint64
	configServers    []raft.Server
	committedIndex   uint64
	committedServers []raft.Server
	links            map[string]*link    // outbound links to the other members by name
	inbound          map[string]*inbound // the current inbound link of each peer
	conns            map[net.Conn]struct{}
	closed           bool

	lockIDs [64]sync.Mutex // the owner's per-client-ID order of connects
	epochMu sync.Mutex
	epoch   uint64

	evac    evacuation
	started time.Time
	settled bool // linked to every member once (or linkGrace passed): see Ready

	forwardedOut   atomic.Uint64
	forwardedIn    atomic.Uint64
	forwardFailure atomic.Uint64
	tlsFailures    atomic.Uint64

	wg   sync.WaitGroup
	done chan struct{}
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
	n := &Node{cfg: cfg, srv: cfg.Server, log: cfg.Logger, auth: cfg.Auth, started: time.Now(),
		links: map[string]*link{}, inbound: map[string]*inbound{}, conns: map[net.Conn]struct{}{}, done: make(chan struct{})}
	id, err := n.storedClusterID()
	if err != nil {
		return nil, fmt.Errorf("reading the cluster ID from the store: %w", err)
	}
	n.clusterID = id
	n.state = apiv1.StoreEmpty
	if id != "" {
		n.state = apiv1.StoreMember
	}
	if err := n.startRaft(); err != nil {
		return nil, err
	}
	n.wg.Add(1)
	go n.watch()
	return n, nil
}

// Auth returns the node's authenticator (for its counters).
func (n *Node) Auth() *Authenticator { return n.auth }

// Name returns the node's name.
func (n *Node) Name() string { return n.cfg.Name }

// Peers returns the names of the members this node has a working link to.
func (n *Node) Peers() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []string
	for name, l := range n.links {
		if l.up.Load() {
			out = append(out, name)
		}
	}
	return out
}

// Stats are the node's counters and gauges for the metrics.
type Stats struct {
	ForwardedOut, ForwardedIn, ForwardFailures, TLSFailures uint64
	Members, Peers                                          int
	Stale, Leader                                           bool
}

// Stats returns the node's counters.
func (n *Node) Stats() Stats {
	st := Stats{ForwardedOut: n.forwardedOut.Load(), ForwardedIn: n.forwardedIn.Load(),
		ForwardFailures: n.forwardFailure.Load(), TLSFailures: n.tlsFailures.Load(), Peers: len(n.Peers())}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.state == apiv1.StoreMember && n.wasMember {
		st.Members = len(n.members)
	}
	st.Stale = n.state == apiv1.StoreStale
	st.Leader = n.raft != nil && n.raft.State() == raft.Leader
	return st
}

// Info returns the cluster side of GET /api/v1/node (the server fills the rest).
func (n *Node) Info() apiv1.Node {
	n.mu.Lock()
	defer n.mu.Unlock()
	in := apiv1.Node{Name: n.cfg.Name, ClusterID: n.clusterID, StoreState: n.state, StaleReason: n.staleReason, Evacuating: n.evac.started}
	if n.raft != nil && n.state == apiv1.StoreMember {
		in.RaftState = n.raft.State().String()
	}
	return in
}

// Member is one node of the cluster as GET /api/v1/cluster reports it.
type Member = apiv1.Member

// View is the cluster as this node sees it (GET /api/v1/cluster).
type View = apiv1.Cluster

// View returns the cluster as this node sees it, or not_member.
func (n *Node) View() (View, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.state != apiv1.StoreMember || n.raft == nil || !n.wasMember {
		return View{}, n.notMemberLocked()
	}
	v := View{ClusterID: n.clusterID}
	_, leader := n.raft.LeaderWithID()
	v.Leader = string(leader)
	for _, s := range n.members {
		m := Member{Name: string(s.ID), Address: string(s.Address)}
		if m.Name == n.cfg.Name {
			m.Reachable = true
		} else if l := n.links[m.Name]; l != nil {
			m.Reachable = l.up.Load()
		}
		v.Members = append(v.Members, m)
	}
	return v, nil
}

func (n *Node) notMemberLocked() error {
	if n.state == apiv1.StoreStale {
		return errorf(apiv1.CodeStaleStore, "%s", n.staleReason)
	}
	return errorf(apiv1.CodeNotMember, "%s is not a member of a cluster", n.cfg.Name)
}

// Ready reports whether the node may take clients: not stale, not evacuating, and,
// for a member that just started, linked both ways to every other member (so it has
// their routes and they have its) or linkGrace past its start (a dead member must not
// keep it unready). Once settled, a peer going away later does not make it unready.
func (n *Node) Ready() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.state == apiv1.StoreStale || n.evac.started {
		return false
	}
	if n.settled || n.state != apiv1.StoreMember || !n.wasMember {
		return true
	}
	if time.Since(n.started) > linkGrace {
		n.settled = true
		return true
	}
	for _, s := range n.members {
		name := string(s.ID)
		if name == n.cfg.Name {
			continue
		}
		if l := n.links[name]; l == nil || !l.up.Load() || n.inbound[name] == nil {
			return false
		}
	}
	n.settled = true
	return true
}

// linkGrace bounds how long a member stays unready waiting for its links.
const linkGrace = 20 * time.Second

// Serve accepts cluster connections on l until Close.
func (n *Node) Serve(l net.Listener) error {
	if n.cfg.TLS != nil {
		cfg := n.cfg.TLS.Clone()
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
		l = tls.NewListener(l, cfg)
	}
	go func() {
		<-n.done
		_ = l.Close()
	}()
	for {
		c, err := l.Accept()
		if err != nil {
			select {
			case <-n.done:
				return nil
			default:
				return err
			}
		}
		if !n.track(c) {
			return nil
		}
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			n.accept(c)
		}()
	}
}

// track registers c so Close can close it; false when the node is closed.
func (n *Node) track(c net.Conn) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		_ = c.Close()
		return false
	}
	n.conns[c] = struct{}{}
	return true
}

func (n *Node) untrack(c net.Conn) {
	n.mu.Lock()
	delete(n.conns, c)
	n.mu.Unlock()
	_ = c.Close()
}

// accept authenticates an incoming connection and dispatches it by channel.
func (n *Node) accept(c net.Conn) {
	if tc, ok := c.(*tls.Conn); ok {
		ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
		err := tc.HandshakeContext(ctx)
		cancel()
		if err != nil {
			n.tlsFailures.Add(1)
			n.log.Warn("cluster TLS handshake failed", "remote", c.RemoteAddr().String(), "error", err)
			n.untrack(c)
			return
		}
	}
	peer, err := n.auth.Handshake(c, Listener)
	if err != nil {
		n.untrack(c)
		if errors.Is(err, ErrCookieMismatch) {
			n.log.Warn("cluster connection refused: cookie mismatch", "remote", c.RemoteAddr().String(), "peer", peer)
		} else {
			n.log.Warn("cluster connection refused", "remote", c.RemoteAddr().String(), "error", err)
		}
		return
	}
	_ = c.SetReadDeadline(time.Now().Add(requestTimeout))
	ch, theirID, err := readChannel(c)
	_ = c.SetReadDeadline(time.Time{})
	if err != nil {
		n.untrack(c)
		return
	}
	switch ch {
	case chanRaft:
		n.acceptRaft(c, peer, theirID)
	case chanLink:
		n.serveInbound(c, peer)
	case chanQuery:
		n.serveQuery(c, peer)
	default:
		n.log.Warn("cluster connection with an unknown channel", "peer", peer, "channel", ch)
		n.untrack(c)
	}
}

// dial connects and authenticates to a cluster address and names the channel.
func (n *Node) dial(ctx context.Context, addr string, ch byte) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, errorf(apiv1.CodeUnreachable, "%s: %v", addr, err)
	}
	if n.cfg.TLS != nil {
		cfg := n.cfg.TLS.Clone()
		if host, _, err := net.SplitHostPort(addr); err == nil {
			cfg.ServerName = host
		}
		tc := tls.Client(c, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			_ = c.Close()
			n.tlsFailures.Add(1)
			n.log.Warn("cluster TLS handshake failed", "remote", addr, "error", err)
			return nil, errorf(apiv1.CodeUnreachable, "%s: TLS: %v", addr, err)
		}
		c = tc
	}
	if !n.track(c) {
		return nil, net.ErrClosed
	}
	peer, err := n.auth.Handshake(c, Dialer)
	if err != nil {
		n.untrack(c)
		if errors.Is(err, ErrCookieMismatch) {
			n.log.Warn("cluster peer refused: cookie mismatch", "remote", addr, "peer", peer)
			return nil, errorf(apiv1.CodeCookieMismatch, "%s does not know this node's cookie", addr)
		}
		return nil, errorf(apiv1.CodeUnreachable, "%s: %v", addr, err)
	}
	n.mu.Lock()
	id := n.clusterID
	n.mu.Unlock()
	if err := writeChannel(c, ch, id); err != nil {
		n.untrack(c)
		return nil, errorf(apiv1.CodeUnreachable, "%s: %v", addr, err)
	}
	return c, nil
}

// Close leaves the node's links and raft running no more (the node stays a member:
// this is a shutdown, not a leave).
func (n *Node) Close() {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return
	}
	n.closed = true
	close(n.done)
	r := n.raft
	n.raft = nil
	links := n.links
	n.links = map[string]*link{}
	for c := range n.conns {
		_ = c.Close()
	}
	n.mu.Unlock()
	for _, l := range links {
		l.close()
	}
	if r != nil {
		if err := r.Shutdown().Error(); err != nil {
			n.log.Warn("raft shutdown", "error", err)
		}
	}
	n.wg.Wait()
}
