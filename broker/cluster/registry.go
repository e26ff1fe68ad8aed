package cluster

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"sync"
	"time"

	"github.com/mqtt-operator/mqtt-operator/broker/apiv1"
	"github.com/mqtt-operator/mqtt-operator/broker/server"
	"github.com/mqtt-operator/mqtt-operator/broker/session"
	"github.com/mqtt-operator/mqtt-operator/broker/store"
)

// owner picks the node that orders connects for a client ID: rendezvous hashing over
// the members this node can reach (itself included), so every node picks the same
// one while they agree on membership.
func (n *Node) owner(clientID string) string {
	n.mu.Lock()
	defer n.mu.Unlock()
	best, bestScore := n.cfg.Name, uint64(0)
	for _, s := range n.members {
		name := string(s.ID)
		if name != n.cfg.Name {
			if l := n.links[name]; l == nil || !l.up.Load() {
				continue
			}
		}
		h := fnv.New64a()
		_, _ = h.Write([]byte(name))
		_, _ = h.Write([]byte{0})
		_, _ = h.Write([]byte(clientID))
		if sc := h.Sum64(); sc > bestScore || (sc == bestScore && name < best) {
			best, bestScore = name, sc
		}
	}
	return best
}

// Takeover implements server.Cluster: the client ID's owner orders the connect and
// ends the ID's sessions elsewhere; a persistent one comes back to continue here.
func (n *Node) Takeover(id string, clean bool, claim server.Claim) (server.Handover, error) {
	if !n.isMember() {
		return server.Handover{}, nil
	}
	var (
		snap   *session.Snapshot
		source string
		epoch  uint64
		err    error
	)
	if o := n.owner(id); o == n.cfg.Name {
		if snap, source, epoch, err = n.ownerTakeover(id, clean, n.cfg.Name, claim); err != nil {
			return server.Handover{}, fmt.Errorf("%w (%w)", server.ErrClientIDOwned, err)
		}
	} else {
		var resp *response
		req := &request{Op: opTakeover, ClientID: id, Clean: clean, Owner: claim.Owner, CheckOwner: claim.Check}
		if resp, err = n.request(o, req); err == nil {
			err = resp.err()
		}
		if CodeOf(err) == apiv1.CodeClientIDOwned {
			return server.Handover{}, fmt.Errorf("%w (%w)", server.ErrClientIDOwned, err)
		}
		if err != nil {
			return server.Handover{}, err
		}
		if snap, err = decodeSnap(resp.Data); err != nil {
			return server.Handover{}, err
		}
		source, epoch = resp.Node, resp.Epoch
	}
	ho := server.Handover{Session: snap, Epoch: epoch}
	if snap != nil {
		ho.Finish = func() []*session.Delivery { return n.settle(id, source) }
		ho.GiveBack = func() { n.giveBack(snap, source) }
	}
	return ho, nil
}

// settle finishes a session's move to this node: once every peer has this node's
// routes for it, the old node releases its copy and sends what arrived meanwhile.
func (n *Node) settle(id, source string) []*session.Delivery {
	n.routeBarrier()
	if source == n.cfg.Name {
		return n.srv.Release(id)
	}
	resp, err := n.request(source, &request{Op: opRelease, ClientID: id})
	if err == nil {
		err = resp.err()
	}
	var extra *session.Snapshot
	if err == nil {
		extra, err = decodeSnap(resp.Data)
	}
	if err != nil {
		n.log.Warn("releasing a moved session failed; its old node drops it after a timeout", "client", id, "node", source, "error", err)
		return nil
	}
	if extra == nil {
		return nil
	}
	return extra.Queue
}

// routeBarrier returns once every reachable peer has applied the routes this node
// sent so far (links are ordered: an answered request follows them).
func (n *Node) routeBarrier() {
	n.mu.Lock()
	var peers []string
	for name, l := range n.links {
		if l.up.Load() {
			peers = append(peers, name)
		}
	}
	n.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range peers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := n.request(p, &request{Op: opSync}); err != nil {
				n.log.Debug("route barrier: peer did not answer", "peer", p, "error", err)
			}
		}()
	}
	wg.Wait()
}

func decodeSnap(b []byte) (*session.Snapshot, error) {
	if len(b) == 0 {
		return nil, nil
	}
	s, err := store.DecodeSession(b)
	if err != nil {
		return nil, err
	}
	return &s, nil
}

// nextEpoch returns a new, larger epoch: the owner's clock in nanoseconds, kept
// increasing.
func (n *Node) nextEpoch() uint64 {
	n.epochMu.Lock()
	defer n.epochMu.Unlock()
	n.epoch = max(n.epoch+1, uint64(time.Now().UnixNano()))
	return n.epoch
}

// ownerTakeover runs on the owner of id: connects for one ID go through it one at a
// time; each gets a larger epoch and kicks the ID on every node but the requester.
// It returns the newest persistent session found and the node holding it. A node
// whose session of id belongs to another user than claim's keeps it, and the
// takeover fails with apiv1.CodeClientIDOwned.
func (n *Node) ownerTakeover(id string, clean bool, requester string, claim server.Claim) (*session.Snapshot, string, uint64, error) {
	h := fnv.New32a()
	_, _ = h.Write([]byte(id))
	mu := &n.lockIDs[h.Sum32()%uint32(len(n.lockIDs))]
	mu.Lock()
	defer mu.Unlock()
	epoch := n.nextEpoch()
	n.mu.Lock()
	var peers []string
	for _, s := range n.members {
		if name := string(s.ID); name != requester && name != n.cfg.Name {
			peers = append(peers, name)
		}
	}
	n.mu.Unlock()
	var (
		wg     sync.WaitGroup
		smu    sync.Mutex
		best   *session.Snapshot
		source string
		owned  error
	)
	keep := func(s *session.Snapshot, from string) {
		smu.Lock()
		defer smu.Unlock()
		if s != nil && (best == nil || s.Disconnected.After(best.Disconnected)) {
			best, source = s, from
		}
	}
	if requester != n.cfg.Name {
		s, err := n.srv.Kick(id, epoch, !clean, claim)
		if err != nil {
			owned = ownedError(err)
		}
		keep(s, n.cfg.Name)
	}
	for _, p := range peers {
		if !n.PeerUp(p) {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := n.request(p, &request{Op: opKick, ClientID: id, Epoch: epoch, Clean: clean,
				Owner: claim.Owner, CheckOwner: claim.Check})
			if err == nil {
				err = resp.err()
			}
			if CodeOf(err) == apiv1.CodeClientIDOwned {
				smu.Lock()
				owned = err
				smu.Unlock()
				return
			}
			if err != nil {
				n.log.Warn("takeover could not reach a node", "client", id, "peer", p, "error", err)
				return
			}
			s, err := decodeSnap(resp.Data)
			if err != nil {
				n.log.Error("undecodable session in a takeover", "client", id, "peer", p, "error", err)
				return
			}
			keep(s, p)
		}()
	}
	wg.Wait()
	if owned == nil && best != nil && !claim.Allows(best.Owner) {
		// Every node let the claim through, yet the newest copy is another user's.
		owned = errorf(apiv1.CodeClientIDOwned, "%v", server.ErrClientIDOwned)
	}
	if owned != nil {
		if best != nil && source != requester {
			// Another node already handed its copy over: it keeps it again.
			n.giveBack(best, source)
		}
		return nil, "", epoch, owned
	}
	return best, source, epoch, nil
}

// giveBack returns a session that a failed takeover moved out of node source. A
// request that fails is tried twice more: the source drops a moved session nobody
// releases after a timeout.
func (n *Node) giveBack(snap *session.Snapshot, source string) {
	if source == n.cfg.Name {
		n.srv.Unmove(*snap)
		return
	}
	b, err := store.EncodeSession(*snap)
	for attempt := 0; err == nil && attempt < 3; attempt++ {
		var resp *response
		if resp, err = n.request(source, &request{Op: opUnmove, Data: b}); err == nil {
			if err = resp.err(); err == nil {
				return
			}
		}
		n.log.Warn("giving a session back after a refused takeover failed", "client", snap.ID, "node", source, "attempt", attempt+1, "error", err)
		err = nil
	}
	n.log.Error("a session could not be given back after a refused takeover; its node drops it after a timeout", "client", snap.ID, "node", source, "error", err)
}

// ownedError turns the server's ErrClientIDOwned into the stable code peers match.
func ownedError(err error) error {
	if errors.Is(err, server.ErrClientIDOwned) {
		return errorf(apiv1.CodeClientIDOwned, "%v", err)
	}
	return err
}

// evacuation is the progress of moving this node's clients away.
type evacuation struct {
	started bool
	done    bool
	moved   int
}

// EvacuationStatus is what GET /api/v1/node/evacuation reports.
type EvacuationStatus = apiv1.Evacuation

// Evacuation returns the progress of an evacuation.
func (n *Node) Evacuation() EvacuationStatus {
	n.mu.Lock()
	ev := n.evac
	n.mu.Unlock()
	st := EvacuationStatus{State: "idle", Moved: ev.moved}
	if ev.started {
		st.State = "running"
		if ev.done {
			st.State = "done"
		}
	}
	st.Clients, st.Sessions = n.srv.LocalLoad()
	return st
}

// Evacuate starts moving this node's clients and sessions to the other members:
// readiness goes false, clients are disconnected at rate per second (v5: 0x9C, use
// another server) and persistent sessions are handed to the members that own their
// client IDs. It returns at once; calling it again while it runs or after it is done
// changes nothing, and after a restart it starts over (idempotent and resumable).
func (n *Node) Evacuate(rate int) error {
	if !n.isMember() {
		return n.notMember()
	}
	n.mu.Lock()
	if n.evac.started {
		n.mu.Unlock()
		return nil
	}
	n.evac = evacuation{started: true}
	n.mu.Unlock()
	n.log.Info("evacuation started", "rate", rate)
	n.wg.Add(1)
	go n.evacuate(rate)
	return nil
}

func (n *Node) evacuate(rate int) {
	defer n.wg.Done()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-n.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	for {
		n.srv.DisconnectAll(ctx, rate)
		moved := n.moveSessions(ctx)
		n.mu.Lock()
		n.evac.moved += moved
		n.mu.Unlock()
		clients, sessions := n.srv.LocalLoad()
		if clients == 0 && sessions == 0 {
			break
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(200 * time.Millisecond):
		}
	}
	n.mu.Lock()
	n.evac.done = true
	moved := n.evac.moved
	n.mu.Unlock()
	n.log.Info("evacuation done", "sessionsMoved", moved)
}

// moveSessions hands every detached persistent session to another member.
func (n *Node) moveSessions(ctx context.Context) int {
	moved := 0
	for _, id := range n.srv.DetachedSessions() {
		if ctx.Err() != nil {
			return moved
		}
		target := n.evacuationTarget(id)
		if target == "" {
			return moved
		}
		snap, _ := n.srv.Kick(id, 0, true, server.Claim{}) // the node's own move: no user to check
		if snap == nil {
			continue // it reconnected elsewhere meanwhile, or expired
		}
		b, err := store.EncodeSession(*snap)
		var resp *response
		if err == nil {
			if resp, err = n.request(target, &request{Op: opAdopt, Data: b}); err == nil {
				err = resp.err()
			}
		}
		if err != nil {
			// Keep the session here and try again on the next round.
			n.log.Warn("moving a session failed; keeping it", "client", id, "target", target, "error", err)
			n.srv.Unmove(*snap)
			continue
		}
		if !resp.OK { // the client reconnected there first: its takeover has the state
			n.srv.Release(id)
		}
		moved++
	}
	return moved
}

// evacuationTarget picks the reachable member (not this node) that owns id.
func (n *Node) evacuationTarget(id string) string {
	n.mu.Lock()
	defer n.mu.Unlock()
	best, bestScore := "", uint64(0)
	for _, s := range n.members {
		name := string(s.ID)
		if name == n.cfg.Name {
			continue
		}
		if l := n.links[name]; l == nil || !l.up.Load() {
			continue
		}
		h := fnv.New64a()
		_, _ = h.Write([]byte(name))
		_, _ = h.Write([]byte{0})
		_, _ = h.Write([]byte(id))
		if sc := h.Sum64(); best == "" || sc > bestScore {
			best, bestScore = name, sc
		}
	}
	return best
}
