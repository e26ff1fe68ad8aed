package cluster

import (
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"os"
	"slices"
	"time"

	"github.com/mqtt-operator/mqtt-operator/broker/apiv1"

	"github.com/hashicorp/raft"
)

// watch follows the raft configuration: it keeps a link to every other member, drops
// the links and routes of removed ones, and notices when this node was removed.
func (n *Node) watch() {
	defer n.wg.Done()
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-n.done:
			return
		case <-t.C:
			n.syncMembers()
		}
	}
}

func (n *Node) syncMembers() {
	n.mu.Lock()
	r := n.raft
	n.mu.Unlock()
	if r == nil {
		n.setLinks(nil)
		return
	}
	f := r.GetConfiguration()
	if f.Error() != nil {
		return
	}
	servers := f.Configuration().Servers
	self := slices.ContainsFunc(servers, func(s raft.Server) bool { return string(s.ID) == n.cfg.Name })
	n.mu.Lock()
	n.members = servers
	removed := false
	switch {
	case self && n.state == apiv1.StoreMember:
		n.wasMember = true
	case !self && n.wasMember && n.state == apiv1.StoreMember:
		removed = true
	}
	stale := n.state != apiv1.StoreMember || !n.wasMember
	n.mu.Unlock()
	if removed {
		n.markStale("the cluster removed this node (it left or was force-left); reset it to join again")
		return
	}
	if stale {
		n.setLinks(nil)
		return
	}
	n.setLinks(servers)
}

// markStale stops the node from acting as a member: raft stops, links close, peers'
// routes are forgotten. Only reset brings it back.
func (n *Node) markStale(reason string) {
	n.mu.Lock()
	if n.state == apiv1.StoreStale {
		n.mu.Unlock()
		return
	}
	n.state, n.staleReason = apiv1.StoreStale, reason
	n.mu.Unlock()
	n.log.Error("this node's store is stale: it serves no cluster traffic until reset", "reason", reason)
	n.stopRaft()
	n.setLinks(nil)
}

// Bootstrap creates a new cluster with this node as its only member.
func (n *Node) Bootstrap() error {
	n.mu.Lock()
	r, state, id := n.raft, n.state, n.clusterID
	n.mu.Unlock()
	switch {
	case state == apiv1.StoreStale:
		return n.notMember()
	case state == apiv1.StoreMember || id != "":
		return errorf(apiv1.CodeAlreadyMember, "this node already belongs to cluster %s", id)
	case r == nil:
		return errorf(apiv1.CodeInternal, "raft is not running")
	}
	id = newClusterID()
	if err := n.storeClusterID(id); err != nil {
		return fmt.Errorf("storing the cluster ID: %w", err)
	}
	n.mu.Lock()
	n.clusterID, n.state = id, apiv1.StoreMember
	n.mu.Unlock()
	cfg := raft.Configuration{Servers: []raft.Server{{Suffrage: raft.Voter, ID: raft.ServerID(n.cfg.Name), Address: raft.ServerAddress(n.cfg.Advertise)}}}
	if err := r.BootstrapCluster(cfg).Error(); err != nil {
		return fmt.Errorf("bootstrapping raft: %w", err)
	}
	if err := n.waitFor(10*time.Second, func() bool { return r.State() == raft.Leader }); err != nil {
		return errorf(apiv1.CodeNoLeader, "the new cluster elected no leader: %v", err)
	}
	if err := n.apply(command{Op: "cluster_id", ClusterID: id}); err != nil {
		return err
	}
	n.log.Info("bootstrapped a new cluster", "clusterID", id)
	return n.waitFor(5*time.Second, n.isMember)
}

func (n *Node) notMember() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.notMemberLocked()
}

func (n *Node) isMember() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.state == apiv1.StoreMember && n.wasMember
}

// waitFor polls cond until it holds or d passes.
func (n *Node) waitFor(d time.Duration, cond func() bool) error {
	deadline := time.Now().Add(d)
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("not done after %s", d)
		}
		select {
		case <-t.C:
		case <-n.done:
			return net.ErrClosed
		}
	}
	return nil
}

func newClusterID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40 // a version 4 UUID
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

// Join asks the cluster seed belongs to (any member: it forwards to the leader) to add
// this node as a voter, and returns once this node sees itself in the configuration.
func (n *Node) Join(ctx context.Context, seed string) error {
	n.mu.Lock()
	state, id, r := n.state, n.clusterID, n.raft
	n.mu.Unlock()
	if state == apiv1.StoreStale {
		return n.notMember()
	}
	if r == nil {
		return errorf(apiv1.CodeInternal, "raft is not running")
	}
	already := n.isMember()
	resp, err := n.query(ctx, seed, &request{Op: opJoin, Name: n.cfg.Name, Addr: n.cfg.Advertise, ClusterID: id})
	if err != nil {
		return err
	}
	if err := resp.err(); err != nil {
		if resp.Code == apiv1.CodeStaleStore {
			n.markStale(resp.Message)
		}
		return err
	}
	if already {
		return errorf(apiv1.CodeAlreadyMember, "this node is already a member of cluster %s", id)
	}
	// The cluster's log may have reached this node before the answer did (its ID is
	// then applied already): either way the node is now a member of that cluster.
	n.mu.Lock()
	adopted := n.clusterID != ""
	n.mu.Unlock()
	if !adopted {
		if err := n.storeClusterID(resp.ClusterID); err != nil {
			return fmt.Errorf("storing the cluster ID: %w", err)
		}
	}
	n.mu.Lock()
	if n.clusterID == "" {
		n.clusterID = resp.ClusterID
	}
	if n.state == apiv1.StoreEmpty {
		n.state = apiv1.StoreMember
	}
	n.mu.Unlock()
	if err := n.waitFor(requestTimeout, n.isMember); err != nil {
		return errorf(apiv1.CodeInternal, "joined, but this node does not see itself in the configuration: %v", err)
	}
	n.log.Info("joined the cluster", "seed", seed, "clusterID", resp.ClusterID)
	return nil
}

// JoinSeeds tries the seeds in turn until one join succeeds, the node is a member, or
// ctx ends; cookie and stale-store refusals end it at once.
func (n *Node) JoinSeeds(ctx context.Context, seeds []string, interval time.Duration) error {
	for {
		if n.isMember() {
			return nil
		}
		var last error
		for _, s := range seeds {
			err := n.Join(ctx, s)
			if err == nil {
				return nil
			}
			switch CodeOf(err) {
			case apiv1.CodeCookieMismatch, apiv1.CodeStaleStore:
				return err
			}
			last = err
		}
		n.log.Debug("no seed accepted the join yet", "error", last)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-n.done:
			return net.ErrClosed
		case <-time.After(interval):
		}
	}
}

// Leave removes this node from the cluster gracefully.
func (n *Node) Leave() error {
	if !n.isMember() {
		return n.notMember()
	}
	if err := n.removeServer(n.cfg.Name); err != nil {
		return err
	}
	return n.waitFor(requestTimeout, func() bool {
		n.mu.Lock()
		defer n.mu.Unlock()
		return n.state == apiv1.StoreStale
	})
}

// ForceLeave removes another (dead) node from the cluster.
func (n *Node) ForceLeave(node string) error {
	if !n.isMember() {
		return n.notMember()
	}
	n.mu.Lock()
	known := slices.ContainsFunc(n.members, func(s raft.Server) bool { return string(s.ID) == node })
	n.mu.Unlock()
	if !known {
		return errorf(apiv1.CodeUnknownNode, "the cluster has no member %q", node)
	}
	return n.removeServer(node)
}

func (n *Node) removeServer(node string) error {
	n.mu.Lock()
	r := n.raft
	n.mu.Unlock()
	if r != nil && r.State() == raft.Leader {
		return applyErr(r.RemoveServer(raft.ServerID(node), 0, requestTimeout).Error())
	}
	resp, err := n.requestLeader(&request{Op: opRemove, Node: node})
	if err != nil {
		return err
	}
	return resp.err()
}

// Reset wipes this node's store (cluster identity, raft state, sessions, retained
// messages) and leaves it empty, ready to join.
func (n *Node) Reset() error {
	n.stopRaft()
	n.setLinks(nil)
	n.srv.Reset()
	if err := n.cfg.Store.Wipe(); err != nil {
		return fmt.Errorf("wiping the store: %w", err)
	}
	if err := os.RemoveAll(n.cfg.SnapshotDir); err != nil {
		return fmt.Errorf("removing raft snapshots: %w", err)
	}
	if err := ensureDir(n.cfg.SnapshotDir); err != nil {
		return err
	}
	n.mu.Lock()
	n.state, n.staleReason, n.clusterID, n.wasMember, n.members = apiv1.StoreEmpty, "", "", false, nil
	n.configIndex, n.configServers, n.committedIndex, n.committedServers = 0, nil, 0, nil
	n.evac = evacuation{}
	n.mu.Unlock()
	n.log.Warn("store reset: this node is empty and may join a cluster")
	return n.startRaft()
}

// query sends one request to a node that need not be a member link peer.
func (n *Node) query(ctx context.Context, addr string, req *request) (*response, error) {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout+5*time.Second)
	defer cancel()
	c, err := n.dial(ctx, addr, chanQuery)
	if err != nil {
		return nil, err
	}
	defer n.untrack(c)
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	cd := newCodec(c)
	defer cd.close()
	if err := cd.write(&frame{Kind: fReq, Seq: 1, Req: req}); err != nil {
		return nil, errorf(apiv1.CodeUnreachable, "%s: %v", addr, err)
	}
	var f frame
	if err := cd.read(&f); err != nil || f.Resp == nil {
		return nil, errorf(apiv1.CodeUnreachable, "%s: no answer: %v", addr, err)
	}
	return f.Resp, nil
}

// serveQuery answers one request on a query connection.
func (n *Node) serveQuery(c net.Conn, peer string) {
	defer n.untrack(c)
	_ = c.SetDeadline(time.Now().Add(requestTimeout + 5*time.Second))
	cd := newCodec(c)
	defer cd.close()
	var f frame
	if err := cd.read(&f); err != nil || f.Req == nil {
		return
	}
	resp := n.handleRequest(peer, f.Req)
	_ = cd.write(&frame{Kind: fResp, Seq: f.Seq, Resp: resp})
}

// requestLeader sends req to the leader over its link.
func (n *Node) requestLeader(req *request) (*response, error) {
	n.mu.Lock()
	r := n.raft
	n.mu.Unlock()
	if r == nil {
		return nil, n.notMember()
	}
	var leader raft.ServerID
	_ = n.waitFor(3*n.cfg.HeartbeatTimeout, func() bool {
		_, leader = r.LeaderWithID()
		return leader != ""
	})
	if leader == "" {
		return nil, errorf(apiv1.CodeNoLeader, "the cluster has no leader now")
	}
	if string(leader) == n.cfg.Name {
		return n.handleRequest(n.cfg.Name, req), nil
	}
	return n.request(string(leader), req)
}

// configView returns the newest configuration this node's log holds (committed or
// not) and its index, as one pair: link handshakes judge by it, so a node that has
// just been added (its log lists it) is never told it was removed by a peer whose
// log does not have that entry yet (the peer's index is lower).
//
// A node that has noted no configuration (it caught up from a snapshot that does not
// carry one) answers with raft's own list and index 0, from which nobody concludes
// anything. Call it without n.mu.
func (n *Node) configView() ([]raft.Server, uint64) {
	n.mu.Lock()
	servers, idx, r := n.configServers, n.configIndex, n.raft
	n.mu.Unlock()
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
func (n *Node) noteConfig(index uint64, servers []raft.Server) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if index >= n.configIndex {
		n.configIndex, n.configServers = index, servers
	}
}

// handleLeaderOp runs a membership or apply request on the leader (or forwards it).
func (n *Node) handleLeaderOp(req *request) *response {
	n.mu.Lock()
	r, id, state := n.raft, n.clusterID, n.state
	n.mu.Unlock()
	if r == nil || state != apiv1.StoreMember {
		return errResponse(n.notMember())
	}
	if req.Op == opJoin && req.ClusterID != "" && req.ClusterID != id {
		return errResponse(errorf(apiv1.CodeStaleStore, "the store of %s belongs to cluster %s; this cluster is %s", req.Name, req.ClusterID, id))
	}
	if r.State() != raft.Leader {
		resp, err := n.requestLeader(req)
		if err != nil {
			return errResponse(err)
		}
		return resp
	}
	var err error
	switch req.Op {
	case opJoin:
		if req.Name == "" || req.Addr == "" {
			return errResponse(errorf(apiv1.CodeBadRequest, "join needs a node name and address"))
		}
		// A node already listed (reset, or its volume lost) is added again all the
		// same: raft's leader already found its log empty (a follower rejects entries
		// it lacks the predecessors of) and sent it the whole log; the new entry
		// changes nothing but confirms the join once committed.
		err = r.AddVoter(raft.ServerID(req.Name), raft.ServerAddress(req.Addr), 0, requestTimeout).Error()
		if err == nil {
			n.log.Info("node joined", "node", req.Name, "address", req.Addr)
		}
	case opRemove:
		err = r.RemoveServer(raft.ServerID(req.Node), 0, requestTimeout).Error()
		if err == nil {
			n.log.Info("node removed", "node", req.Node)
		}
	case opApply:
		err = r.Apply(req.Data, requestTimeout).Error()
	}
	if err != nil {
		return errResponse(applyErr(err))
	}
	return &response{ClusterID: id}
}
