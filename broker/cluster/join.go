package cluster

import (
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/hashicorp/raft"

	"github.com/mqtt-operator/mqtt-operator/broker/apiv1"
)

// The membership verbs: bootstrap, join, leave, force-leave, reset, and the leader's
// side of join, remove and apply.

// bootstrap creates a new cluster with this node as its only member.
func (m *membership) bootstrap() error {
	v, r := m.viewRaft()
	if err := judgeBootstrap(v, r != nil); err != nil {
		return err
	}
	id := newClusterID()
	if err := m.storeClusterID(id); err != nil {
		return fmt.Errorf("storing the cluster ID: %w", err)
	}
	m.mu.Lock()
	m.clusterID, m.state = id, apiv1.StoreMember
	m.mu.Unlock()
	cfg := raft.Configuration{Servers: []raft.Server{{Suffrage: raft.Voter, ID: raft.ServerID(m.cfg.Name), Address: raft.ServerAddress(m.cfg.Advertise)}}}
	if err := r.BootstrapCluster(cfg).Error(); err != nil {
		return fmt.Errorf("bootstrapping raft: %w", err)
	}
	if err := m.waitFor(10*time.Second, func() bool { return r.State() == raft.Leader }); err != nil {
		return errorf(apiv1.CodeNoLeader, "the new cluster elected no leader: %v", err)
	}
	if err := m.apply(command{Op: "cluster_id", ClusterID: id}); err != nil {
		return err
	}
	m.log.Info("bootstrapped a new cluster", "clusterID", id)
	return m.waitFor(5*time.Second, m.isMember)
}

func newClusterID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40 // a version 4 UUID
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

// join asks the cluster seed belongs to (any member: it forwards to the leader) to add
// this node as a voter, and returns once this node sees itself in the configuration.
func (m *membership) join(ctx context.Context, seed string) error {
	v, r := m.viewRaft()
	if v.State == apiv1.StoreStale {
		return m.notMember()
	}
	if r == nil {
		return errorf(apiv1.CodeInternal, "raft is not running")
	}
	id := v.ClusterID
	already := m.isMember()
	// A node whose store is empty (new, reset, or its volume lost) comes in as a
	// non-voter and becomes a voter once it caught up (startPromote).
	resp, err := m.queryRetrying(ctx, seed, &request{Op: opJoin, Name: m.cfg.Name, Addr: m.cfg.Advertise, ClusterID: id,
		NonVoter: v.State == apiv1.StoreEmpty})
	if err != nil {
		return err
	}
	if err := resp.err(); err != nil {
		if resp.Code == apiv1.CodeStaleStore {
			m.markStale(resp.Message)
		}
		return err
	}
	if already {
		return errorf(apiv1.CodeAlreadyMember, "this node is already a member of cluster %s", id)
	}
	// The cluster's log may have reached this node before the answer did (its ID is
	// then applied already): either way the node is now a member of that cluster.
	if m.clusterIDNow() == "" {
		if err := m.storeClusterID(resp.ClusterID); err != nil {
			return fmt.Errorf("storing the cluster ID: %w", err)
		}
	}
	m.mu.Lock()
	if m.clusterID == "" {
		m.clusterID = resp.ClusterID
	}
	if m.state == apiv1.StoreEmpty {
		m.state = apiv1.StoreMember
	}
	m.mu.Unlock()
	if err := m.waitFor(requestTimeout, m.isMember); err != nil {
		return errorf(apiv1.CodeInternal, "joined, but this node does not see itself in the configuration: %v", err)
	}
	m.log.Info("joined the cluster", "seed", seed, "clusterID", resp.ClusterID)
	return nil
}

// joinRetryFor bounds how long a join keeps asking a seed that answers with a
// transient refusal: the seed has no leader right now (an election) or no link to it
// yet (it just joined, or the leader just changed).
const joinRetryFor = 20 * time.Second

// queryRetrying sends req to seed, again every 500 ms while the seed answers
// no_leader or unreachable, up to joinRetryFor or ctx's end. A seed that cannot be
// reached at all is not retried here (joinSeeds tries the next one); the error of a
// refusal that stayed says it was transient.
func (m *membership) queryRetrying(ctx context.Context, seed string, req *request) (*response, error) {
	deadline := time.Now().Add(joinRetryFor)
	for attempt := 1; ; attempt++ {
		resp, err := m.query(ctx, seed, req)
		if err != nil || (resp.Code != apiv1.CodeNoLeader && resp.Code != apiv1.CodeUnreachable) {
			return resp, err
		}
		if time.Now().After(deadline) {
			resp.Message = fmt.Sprintf("%s (transient; still so after %d attempts over %v: try again)", resp.Message, attempt, joinRetryFor)
			return resp, nil
		}
		m.log.Info("the seed cannot forward the join yet; trying again", "seed", seed, "code", resp.Code, "reason", resp.Message)
		select {
		case <-ctx.Done():
			return resp, nil
		case <-m.done:
			return nil, net.ErrClosed
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// joinSeeds tries the seeds in turn until one join succeeds, the node is a member, or
// ctx ends; cookie and stale-store refusals end it at once.
func (m *membership) joinSeeds(ctx context.Context, seeds []string, interval time.Duration) error {
	for {
		if m.isMember() {
			return nil
		}
		var last error
		for _, s := range seeds {
			err := m.join(ctx, s)
			if err == nil {
				return nil
			}
			switch CodeOf(err) {
			case apiv1.CodeCookieMismatch, apiv1.CodeStaleStore:
				return err
			}
			last = err
		}
		m.log.Debug("no seed accepted the join yet", "error", last)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-m.done:
			return net.ErrClosed
		case <-time.After(interval):
		}
	}
}

// leave removes this node from the cluster gracefully.
func (m *membership) leave() error {
	if !m.isMember() {
		return m.notMember()
	}
	if err := m.removeServer(m.cfg.Name); err != nil {
		return err
	}
	return m.waitFor(requestTimeout, func() bool { return m.view().State == apiv1.StoreStale })
}

// forceLeave removes another (dead) node from the cluster.
func (m *membership) forceLeave(node string) error {
	if !m.isMember() {
		return m.notMember()
	}
	if !containsServer(m.memberList(), node) {
		return errorf(apiv1.CodeUnknownNode, "the cluster has no member %q", node)
	}
	return m.removeServer(node)
}

func (m *membership) removeServer(node string) error {
	_, r := m.viewRaft()
	if r != nil && r.State() == raft.Leader {
		return applyErr(r.RemoveServer(raft.ServerID(node), 0, requestTimeout).Error())
	}
	resp, err := m.requestLeader(&request{Op: opRemove, Node: node})
	if err != nil {
		return err
	}
	return resp.err()
}

// wipe removes the store's content and raft's snapshots (reset; raft is stopped).
func (m *membership) wipe() error {
	if err := m.cfg.Store.Wipe(); err != nil {
		return fmt.Errorf("wiping the store: %w", err)
	}
	if err := os.RemoveAll(m.cfg.SnapshotDir); err != nil {
		return fmt.Errorf("removing raft snapshots: %w", err)
	}
	return ensureDir(m.cfg.SnapshotDir)
}

// changeConfig makes the configuration changes of a join or promotion on the leader.
// The first change applies only to the configuration at prevIndex; the next ones
// follow it.
func (m *membership) changeConfig(r *raft.Raft, steps []configStep, id raft.ServerID, addr raft.ServerAddress, prevIndex uint64) error {
	for i, step := range steps {
		prev := prevIndex
		if i > 0 {
			prev = 0
		}
		var err error
		switch step {
		case stepAddVoter:
			if err = r.AddVoter(id, addr, prev, requestTimeout).Error(); err == nil {
				m.log.Info("node is a voter", "node", id, "address", addr)
			}
		case stepDemote:
			if err = r.DemoteVoter(id, prev, requestTimeout).Error(); err == nil {
				m.log.Info("voter demoted: it rejoins with an empty store and votes again once it caught up", "node", id)
			}
		case stepAddNonvoter:
			if err = r.AddNonvoter(id, addr, prev, requestTimeout).Error(); err == nil {
				m.log.Info("node joined as a non-voter; it becomes a voter once it caught up", "node", id, "address", addr)
			}
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// requestLeader sends req to the leader over its link.
func (m *membership) requestLeader(req *request) (*response, error) {
	_, r := m.viewRaft()
	if r == nil {
		return nil, m.notMember()
	}
	var leader raft.ServerID
	_ = m.waitFor(3*m.cfg.HeartbeatTimeout, func() bool {
		_, leader = r.LeaderWithID()
		return leader != ""
	})
	if leader == "" {
		return nil, errorf(apiv1.CodeNoLeader, "the cluster has no leader now")
	}
	if string(leader) == m.cfg.Name {
		return m.handle(m.cfg.Name, req), nil
	}
	return m.request(string(leader), req)
}

// handleLeaderOp runs a membership or apply request on the leader (or forwards it).
func (m *membership) handleLeaderOp(req *request) *response {
	v, r := m.viewRaft()
	if err := judgeLeaderOp(v, r != nil, req); err != nil {
		return errResponse(err)
	}
	id := v.ClusterID
	if r.State() != raft.Leader {
		resp, err := m.requestLeader(req)
		if err != nil {
			return errResponse(err)
		}
		return resp
	}
	var err error
	switch req.Op {
	case opJoin, opPromote:
		if req.Name == "" || req.Addr == "" {
			return errResponse(errorf(apiv1.CodeBadRequest, "%s needs a node name and address", req.Op))
		}
		// A node already listed (reset, or its volume lost) is added again all the
		// same: raft's leader already found its log empty (a follower rejects entries
		// it lacks the predecessors of) and sent it the whole log.
		// Judged on the leader's own latest configuration, and changed only if it is
		// still the one judged (prevIndex): a promotion racing a removal must not bring
		// the removed node back as a voter.
		f := r.GetConfiguration()
		if err = f.Error(); err != nil {
			return errResponse(applyErr(err))
		}
		var steps []configStep
		if steps, err = judgeJoin(f.Configuration().Servers, req.Name, req.NonVoter, req.Op == opPromote); err != nil {
			return errResponse(err)
		}
		err = m.changeConfig(r, steps, raft.ServerID(req.Name), raft.ServerAddress(req.Addr), f.Index())
	case opRemove:
		err = r.RemoveServer(raft.ServerID(req.Node), 0, requestTimeout).Error()
		if err == nil {
			m.log.Info("node removed", "node", req.Node)
		}
	case opApply:
		err = r.Apply(req.Data, requestTimeout).Error()
	case opReadIndex:
		// A barrier first: once it returns, everything committed is applied here, and
		// the index of the last entry the state machine applied is what a member that
		// comes back must reach.
		if err = r.Barrier(requestTimeout).Error(); err == nil {
			return &response{ClusterID: id, Index: m.applied.Load()}
		}
	}
	if err != nil {
		return errResponse(applyErr(err))
	}
	return &response{ClusterID: id}
}
