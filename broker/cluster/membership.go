package cluster

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/mqtt-operator/mqtt-operator/broker/apiv1"
	"github.com/mqtt-operator/mqtt-operator/broker/internal/lockorder"
	"github.com/mqtt-operator/mqtt-operator/broker/session"
)

// membership is this node's place in the cluster: its raft instance and state machine
// (raft.go, fsm.go), the configuration it follows, the stale-store state, and the
// verbs that change them (join.go). Its decisions are the pure functions of judge.go;
// it acts on them through the links it is given (setLinks) and the requests it may
// send (request, handle, query).
type membership struct {
	cfg Config
	log *slog.Logger
	srv retainedStore
	tr  *transport // raft's connections go over the cluster port

	// Wired by Node.
	setLinks func(servers []raft.Server)                                             // routing: one link per other member
	request  func(peer string, req *request) (*response, error)                      // routing: over a member's link
	handle   func(peer string, req *request) *response                               // this node's own answer
	query    func(ctx context.Context, addr string, req *request) (*response, error) // transport

	done <-chan struct{}
	wg   *sync.WaitGroup

	// applied is the index of the last entry the state machine applied (a command or
	// a configuration, or what a restored snapshot covered). Unlike raft's
	// AppliedIndex, which counts entries handed to the state machine's goroutine and
	// no-op entries, it says the retained messages are in place: catchUp waits on it.
	applied atomic.Uint64

	mu          lockorder.Mutex // guards the fields below; a leaf
	state       string
	staleReason string
	clusterID   string
	wasMember   bool // this node saw itself in the raft configuration
	settled     bool // ready once: see judgeReady
	// caughtUp: this raft instance applied the leader's commit index as it was when the
	// node came back (started, joined or reset): see catchUp.
	caughtUp    bool
	catchingUp  bool               // a catch-up attempt runs
	memberSince time.Time          // when this node was first seen a member since it started or was reset
	catchUpAt   time.Time          // the last catch-up attempt's start
	promoting   bool               // a request to become a voter runs (startPromote)
	promoteAt   time.Time          // the last one's start
	raft        *raft.Raft         // nil while stale or closed
	stream      *streamLayer       // the raft instance's stream layer
	snaps       raft.SnapshotStore // the raft instance's snapshots (Restore reads the newest's index)
	members     []raft.Server      // latest configuration (polled by watch)
	// The newest configuration this node's log holds (committed or not) and its
	// index: what link handshakes compare (see configView). The committed one is
	// what snapshots carry.
	configIndex      uint64
	configServers    []raft.Server
	committedIndex   uint64
	committedServers []raft.Server
}

// retainedStore is what the state machine needs of the server.
type retainedStore interface {
	ApplyRetained(msg *session.Message)
	RetainedMessages() []*session.Message
	ReplaceRetained(msgs []*session.Message)
}

// view copies the membership state.
func (m *membership) view() memberView {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.viewLocked()
}

// viewLocked copies the membership state; m.mu held on entry.
func (m *membership) viewLocked() memberView {
	return memberView{Self: m.cfg.Name, State: m.state, StaleReason: m.staleReason, ClusterID: m.clusterID, WasMember: m.wasMember}
}

// viewRaft copies the membership state and the running raft instance (nil if none).
func (m *membership) viewRaft() (memberView, *raft.Raft) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.viewLocked(), m.raft
}

func (m *membership) isMember() bool { return m.view().member() }

func (m *membership) notMember() error { return m.view().notMember() }

func (m *membership) clusterIDNow() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.clusterID
}

// memberNames returns the names in the latest configuration.
func (m *membership) memberNames() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]string, 0, len(m.members))
	for _, s := range m.members {
		out = append(out, string(s.ID))
	}
	return out
}

// memberList returns the latest configuration's servers.
func (m *membership) memberList() []raft.Server {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.members
}

// markSettled records that the node was ready once (see judgeReady).
func (m *membership) markSettled() {
	m.mu.Lock()
	m.settled = true
	m.mu.Unlock()
}

// watch follows the raft configuration: it keeps a link to every other member, drops
// the links and routes of removed ones, and notices when this node was removed.
func (m *membership) watch() {
	defer m.wg.Done()
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-m.done:
			return
		case <-t.C:
			m.syncMembers()
			m.startCatchUp()
			m.startPromote()
		}
	}
}

// startCatchUp starts a catch-up attempt (catchUp) unless one runs, the node caught
// up already or is not a member.
func (m *membership) startCatchUp() {
	m.mu.Lock()
	r := m.raft
	member := m.viewLocked().member()
	if member && m.memberSince.IsZero() {
		m.memberSince = time.Now()
	}
	// Not once settled (ready stays ready) unless the node is a non-voter (its
	// promotion waits for the catch-up), and at most every catchUpRetry: each attempt
	// costs the leader a barrier (a log entry).
	start := r != nil && !m.caughtUp && (!m.settled || m.nonVoterLocked()) && !m.catchingUp && member &&
		time.Since(m.catchUpAt) >= catchUpRetry
	m.catchingUp = m.catchingUp || start
	if start {
		m.catchUpAt = time.Now()
	}
	m.mu.Unlock()
	if !start {
		return
	}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		ok := m.catchUp(r)
		m.mu.Lock()
		m.catchingUp = false
		if ok && m.raft == r { // the same raft instance: a reset starts over
			m.caughtUp = true
		}
		m.mu.Unlock()
	}()
}

// startPromote asks the leader to make this node a voter once it is a non-voter that
// caught up (judgePromote): it joined with an empty store. One request at a time, at
// most every catchUpRetry; a request that fails is tried again.
func (m *membership) startPromote() {
	m.mu.Lock()
	start := m.raft != nil && m.viewLocked().member() && !m.promoting &&
		time.Since(m.promoteAt) >= catchUpRetry && judgePromote(m.members, m.cfg.Name, m.caughtUp)
	if start {
		m.promoting, m.promoteAt = true, time.Now()
	}
	m.mu.Unlock()
	if !start {
		return
	}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		resp, err := m.requestLeader(&request{Op: opPromote, Name: m.cfg.Name, Addr: m.cfg.Advertise})
		if err == nil {
			err = resp.err()
		}
		if err != nil {
			m.log.Info("asking to become a voter failed; trying again", "error", err)
		} else {
			m.log.Info("caught up: this node is a voter now")
		}
		m.mu.Lock()
		m.promoting = false
		m.mu.Unlock()
	}()
}

// votersReached returns the voters of the configuration and how many of them this
// node reaches: itself, if it is one, and those up reports a link to.
func (m *membership) votersReached(up func(node string) bool) (voters, reached int) {
	m.mu.Lock()
	members := m.members
	m.mu.Unlock()
	for _, s := range members {
		if s.Suffrage != raft.Voter {
			continue
		}
		voters++
		if string(s.ID) == m.cfg.Name || up(string(s.ID)) {
			reached++
		}
	}
	return voters, reached
}

// nonVoterLocked reports whether the configuration lists this node as a non-voter;
// m.mu held on entry.
func (m *membership) nonVoterLocked() bool {
	for _, s := range m.members {
		if string(s.ID) == m.cfg.Name {
			return s.Suffrage != raft.Voter
		}
	}
	return false
}

// storeEmpty reports whether this node's store holds no cluster (it never joined, or
// it was reset): it must not vote (voteGuard).
func (m *membership) storeEmpty() bool { return m.view().State == apiv1.StoreEmpty }

// catchUp is the read-index step of a node that comes back: it asks the leader what
// its state machine applied (the leader answers after a barrier, so that is everything
// committed) and waits until this node's state machine applied as much, so a node
// never serves an older retained set than the cluster had when it returned. False
// when there is no leader to ask or the wait ran out: a later watch tick tries again.
func (m *membership) catchUp(r *raft.Raft) bool {
	resp, err := m.requestLeader(&request{Op: opReadIndex})
	if err == nil {
		err = resp.err()
	}
	if CodeOf(err) == apiv1.CodeBadRequest {
		// A leader of an older version (during a rolling upgrade) does not know the
		// step: fall back on raft's own view, everything this node knows is committed
		// handed to its state machine.
		commit := r.CommitIndex()
		if commit == 0 || m.waitFor(requestTimeout, func() bool { return r.AppliedIndex() >= commit }) != nil {
			return false
		}
		m.log.Info("caught up with the log as far as this node knows it committed (the leader is of an older version)", "index", commit)
		return true
	}
	if err != nil {
		return false
	}
	target := resp.Index
	if err := m.waitFor(requestTimeout, func() bool { return m.applied.Load() >= target }); err != nil {
		m.log.Info("still catching up with the leader's log", "applied", m.applied.Load(), "target", target)
		return false
	}
	m.log.Info("caught up with the leader's log", "index", target)
	return true
}

func (m *membership) syncMembers() {
	m.mu.Lock()
	r := m.raft
	m.mu.Unlock()
	if r == nil {
		m.setLinks(nil)
		return
	}
	f := r.GetConfiguration()
	if f.Error() != nil {
		return
	}
	servers := f.Configuration().Servers
	m.mu.Lock()
	m.members = servers
	verdict := judgeConfig(m.viewLocked(), servers)
	m.wasMember = verdict.wasMember
	m.mu.Unlock()
	switch {
	case verdict.removed:
		m.markStale("the cluster removed this node (it left or was force-left); reset it to join again")
	case verdict.link:
		m.setLinks(servers)
	default:
		m.setLinks(nil)
	}
}

// markStale stops the node from acting as a member: raft stops, links close, peers'
// routes are forgotten. Only reset brings it back.
func (m *membership) markStale(reason string) {
	m.mu.Lock()
	if m.state == apiv1.StoreStale {
		m.mu.Unlock()
		return
	}
	m.state, m.staleReason = apiv1.StoreStale, reason
	m.mu.Unlock()
	m.log.Error("this node's store is stale: it serves no cluster traffic until reset", "reason", reason)
	m.stopRaft()
	m.setLinks(nil)
}

// judgeLink answers a peer's link hello (see judgePeer). Call it without m.mu.
func (m *membership) judgeLink(peer string, h *hello) *hello {
	servers, idx := m.configView()
	return judgePeer(m.view(), servers, idx, peer, h)
}

// helloView is what this node says in its own link hello: its cluster ID and the
// index of its newest configuration.
func (m *membership) helloView() (clusterID string, idx uint64) {
	_, idx = m.configView()
	return m.clusterIDNow(), idx
}

// refused acts on a peer's refusal of this node's link (see judgeRefusal).
func (m *membership) refused(peer string, h *hello, myIndex uint64, myCluster string) {
	if stale, reason := judgeRefusal(h, myIndex, myCluster, peer); stale {
		m.markStale(reason)
	}
}

// configView returns the newest configuration this node's log holds (committed or
// not) and its index, as one pair: link handshakes judge by it, so a node that has
// just been added (its log lists it) is never told it was removed by a peer whose
// log does not have that entry yet (the peer's index is lower).
//
// A node that has noted no configuration (it caught up from a snapshot that does not
// carry one) answers with raft's own list and index 0, from which nobody concludes
// anything. Call it without m.mu.
func (m *membership) configView() ([]raft.Server, uint64) {
	m.mu.Lock()
	servers, idx, r := m.configServers, m.configIndex, m.raft
	m.mu.Unlock()
	if servers != nil || r == nil {
		return servers, idx
	}
	if f := r.GetConfiguration(); f.Error() == nil {
		return f.Configuration().Servers, 0
	}
	return nil, 0
}

// noteConfig records a configuration entry of the log (or of a snapshot) when it is
// the newest seen. Entries a new leader truncates are not taken back: the index then
// overstates, which only makes this node slower to conclude it was removed.
func (m *membership) noteConfig(index uint64, servers []raft.Server) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if index >= m.configIndex {
		m.configIndex, m.configServers = index, servers
	}
}

// forget empties the membership state after the store was wiped (reset).
func (m *membership) forget() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.state, m.staleReason, m.clusterID, m.wasMember, m.members = apiv1.StoreEmpty, "", "", false, nil
	m.configIndex, m.configServers, m.committedIndex, m.committedServers = 0, nil, 0, nil
	// An empty node that joins again is a member coming back: it catches up and links
	// before it is ready, as after a start.
	m.settled, m.caughtUp, m.memberSince = false, false, time.Time{}
	m.applied.Store(0) // the new raft instance starts empty
}

// catchUpRetry spaces catch-up attempts.
const catchUpRetry = 2 * time.Second

// waitFor polls cond until it holds or d passes.
func (m *membership) waitFor(d time.Duration, cond func() bool) error {
	deadline := time.Now().Add(d)
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("not done after %s", d)
		}
		select {
		case <-t.C:
		case <-m.done:
			return net.ErrClosed
		}
	}
	return nil
}

// stats returns the membership's gauges: the configuration's size (for a member),
// whether the store is stale and whether this node leads.
func (m *membership) stats() (members int, stale, leader bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.viewLocked().member() {
		members = len(m.members)
	}
	return members, m.state == apiv1.StoreStale, m.raft != nil && m.raft.State() == raft.Leader
}

// info returns the membership's side of GET /api/v1/node.
func (m *membership) info() apiv1.Node {
	m.mu.Lock()
	defer m.mu.Unlock()
	in := apiv1.Node{Name: m.cfg.Name, ClusterID: m.clusterID, StoreState: m.state, StaleReason: m.staleReason}
	if m.raft != nil && m.state == apiv1.StoreMember {
		in.RaftState = m.raft.State().String()
		in.AppliedIndex, in.CommitIndex, in.CaughtUp = m.raft.AppliedIndex(), m.raft.CommitIndex(), m.caughtUp
	}
	return in
}

// clusterView returns the cluster as the configuration lists it (reachability not
// filled in), or not_member.
func (m *membership) clusterView() (View, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	v := m.viewLocked()
	if !v.member() || m.raft == nil {
		return View{}, v.notMember()
	}
	out := View{ClusterID: m.clusterID}
	_, leader := m.raft.LeaderWithID()
	out.Leader = string(leader)
	for _, s := range m.members {
		out.Members = append(out.Members, Member{Name: string(s.ID), Address: string(s.Address), Voter: s.Suffrage == raft.Voter})
	}
	return out, nil
}

// readyView returns what Ready judges: the state, whether the node settled, and the
// other members of the configuration.
func (m *membership) readyView() (v memberView, settled, caughtUp, voter bool, memberFor time.Duration, peers []string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, s := range m.members {
		if string(s.ID) != m.cfg.Name {
			peers = append(peers, string(s.ID))
		} else {
			voter = s.Suffrage == raft.Voter
		}
	}
	if !m.memberSince.IsZero() {
		memberFor = time.Since(m.memberSince)
	}
	return m.viewLocked(), m.settled, m.caughtUp, voter, memberFor, peers
}
