package cluster

import (
	"errors"
	"fmt"
	"sync"

	"github.com/mqtt-operator/mqtt-operator/broker/apiv1"
	"github.com/mqtt-operator/mqtt-operator/broker/internal/lockorder"
	"github.com/mqtt-operator/mqtt-operator/broker/server"
	"github.com/mqtt-operator/mqtt-operator/broker/session"
)

// takeover runs before a client attaches here (the node is a member): the client ID's
// owner orders the connect and ends the ID's sessions elsewhere; a persistent one
// comes back to continue here.
func (o *ownership) takeover(id string, clean bool, claim server.Claim) (server.Handover, error) {
	var (
		snap   *session.Snapshot
		source string
		epoch  uint64
		turn   uint64
		err    error
	)
	if o.majority != nil && !o.majority() {
		return server.Handover{}, server.ErrNoMajority
	}
	owner := o.owner(id)
	if owner == o.self {
		snap, source, epoch, turn, err = o.ownerTakeover(id, clean, o.self, claim)
		if err = takeoverErr(err); err != nil {
			return server.Handover{}, err
		}
	} else {
		var resp *response
		req := &request{Op: opTakeover, ClientID: id, Clean: clean, Owner: claim.Owner, CheckOwner: claim.Check, Turns: true}
		if resp, err = o.peers.request(owner, req); err == nil {
			err = resp.err()
		}
		switch err = takeoverErr(err); {
		case errors.Is(err, server.ErrClientIDOwned), errors.Is(err, server.ErrSessionMoving):
			return server.Handover{}, err
		case err != nil:
			// No answer (a timeout, the link lost): the owner may have moved the session
			// for this connect all the same, so the connect must not start afresh here.
			return server.Handover{}, fmt.Errorf("%w (owner %s: %w)", server.ErrTakeoverUnanswered, owner, err)
		}
		if snap, err = decodeSnap(resp.Data); err != nil {
			o.endTurn(owner, id, resp.Turn)
			return server.Handover{}, err
		}
		source, epoch, turn = resp.Node, resp.Epoch, resp.Turn
	}
	ho := server.Handover{Session: snap, Epoch: epoch}
	if snap != nil {
		ho.Finish = func() []*session.Delivery { return o.settle(id, source) }
		ho.GiveBack = func() { o.giveBack(snap, source) }
		if owner == o.self {
			ho.Done = func() { o.turns.release(id, turn) }
		} else {
			// The CONNACK need not wait for the owner's answer.
			ho.Done = func() { go o.endTurn(owner, id, turn) }
		}
	}
	return ho, nil
}

// ownerTakeover runs on the owner of id: connects for one ID go through it one at a
// time; each gets a larger epoch and kicks the ID on every node but the requester.
// It returns the newest persistent session found, the node holding it and, with a
// session, the ID's turn (turns.go), which the requester gives back once the session
// is installed and its old copy released: no other move of the ID starts meanwhile.
// A node whose session of id belongs to another user than claim's keeps it, and the
// takeover fails with apiv1.CodeClientIDOwned.
func (o *ownership) ownerTakeover(id string, clean bool, requester string, claim server.Claim) (*session.Snapshot, string, uint64, uint64, error) {
	turn := o.turns.acquire(id, turnWait, o.done)
	if turn == 0 {
		return nil, "", 0, 0, errorf(apiv1.CodeSessionMoving, "%v: another move of it is still running", server.ErrSessionMoving)
	}
	moving := false
	defer func() {
		if !moving {
			o.turns.release(id, turn)
		}
	}()
	epoch := o.nextEpoch()
	var peers []string
	for _, name := range o.peers.memberNames() {
		if name != requester && name != o.self {
			peers = append(peers, name)
		}
	}
	var (
		wg     sync.WaitGroup
		smu    lockorder.Mutex
		copies []nodeCopy
		owned  error
	)
	keep := func(s *session.Snapshot, from string) {
		if s != nil {
			smu.Lock()
			copies = append(copies, nodeCopy{s, from})
			smu.Unlock()
		}
	}
	if requester != o.self {
		s, err := o.srv.Kick(id, epoch, !clean, claim)
		if err != nil {
			owned = ownedError(err)
		}
		keep(s, o.self)
	}
	for _, p := range peers {
		if !o.peers.peerUp(p) {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := o.peers.request(p, &request{Op: opKick, ClientID: id, Epoch: epoch, Clean: clean,
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
				o.log.Warn("takeover could not reach a node", "client", id, "peer", p, "error", err)
				return
			}
			s, err := decodeSnap(resp.Data)
			if err != nil {
				o.log.Error("undecodable session in a takeover", "client", id, "peer", p, "error", err)
				return
			}
			keep(s, p)
		}()
	}
	wg.Wait()
	best, source := mergeCopies(copies)
	if owned == nil && best != nil && !claim.Allows(best.Owner) {
		// Every node let the claim through, yet the newest copy is another user's.
		owned = errorf(apiv1.CodeClientIDOwned, "%v", server.ErrClientIDOwned)
	}
	if owned != nil {
		if best != nil && source != requester {
			// Another node already handed its copy over: it keeps it again.
			o.giveBack(best, source)
		}
		return nil, "", epoch, 0, owned
	}
	if best == nil {
		return nil, "", epoch, 0, nil
	}
	moving = true
	return best, source, epoch, turn, nil
}

// nodeCopy is a session copy a kick returned and the node it came from.
type nodeCopy struct {
	snap *session.Snapshot
	from string
}

// mergeCopies picks the copy a takeover continues: the most recently disconnected
// full copy (a partial one, what a copy still moving received since its first
// handover, only when there is no full one). What every other copy holds is queued
// after it, so nothing one of them held is lost: their inflight deliveries go back to
// the queue (the packet IDs are the chosen copy's), except QoS 2 ones the client
// already received (PUBREC), and the new node keeps each message once (MergeMoved).
func mergeCopies(copies []nodeCopy) (*session.Snapshot, string) {
	bestAt := -1
	for i, c := range copies {
		if bestAt < 0 {
			bestAt = i
			continue
		}
		b := copies[bestAt].snap
		if (b.Partial && !c.snap.Partial) || (b.Partial == c.snap.Partial && c.snap.Disconnected.After(b.Disconnected)) {
			bestAt = i
		}
	}
	if bestAt < 0 {
		return nil, ""
	}
	best := copies[bestAt]
	for i, c := range copies {
		if i == bestAt {
			continue
		}
		for _, d := range c.snap.Queue {
			if d.Released {
				continue
			}
			q := *d
			q.PacketID, q.Dup = 0, false
			best.snap.Queue = append(best.snap.Queue, &q)
		}
	}
	best.snap.Partial = false
	return best.snap, best.from
}

// takeoverErr gives the server the errors it acts on: another user's client ID, or a
// move of the session still running.
func takeoverErr(err error) error {
	switch CodeOf(err) {
	case apiv1.CodeClientIDOwned:
		return fmt.Errorf("%w (%w)", server.ErrClientIDOwned, err)
	case apiv1.CodeSessionMoving:
		return fmt.Errorf("%w (%w)", server.ErrSessionMoving, err)
	}
	return err
}

// ownedError turns the server's ErrClientIDOwned into the stable code peers match.
func ownedError(err error) error {
	if errors.Is(err, server.ErrClientIDOwned) {
		return errorf(apiv1.CodeClientIDOwned, "%v", err)
	}
	return err
}
