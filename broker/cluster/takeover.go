package cluster

import (
	"errors"
	"fmt"
	"sync"
	"time"

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
		snap    *session.Snapshot
		source  string
		also    []string
		skipped []string
		epoch   uint64
		turn    uint64
		err     error
	)
	if o.majority != nil && !o.majority() {
		return server.Handover{}, server.ErrNoMajority
	}
	owner := o.owner(id)
	if owner == o.self {
		var res ownerResult
		res, err = o.ownerTakeover(id, clean, o.self, claim)
		if err = takeoverErr(err); err != nil {
			return server.Handover{}, err
		}
		snap, source, also, epoch, turn, skipped = res.snap, res.source, res.also, res.epoch, res.turn, res.skipped
	} else {
		var resp *response
		req := &request{Op: opTakeover, ClientID: id, Clean: clean, Owner: claim.Owner, CheckOwner: claim.Check, Turns: true}
		late := func(resp *response) { o.takeoverTooLate(owner, id, resp) }
		if resp, err = o.peers.requestLate(owner, req, requestTimeout+5*time.Second, late); err == nil {
			err = resp.err()
		}
		switch err = takeoverErr(err); {
		case errors.Is(err, server.ErrClientIDOwned), errors.Is(err, server.ErrSessionMoving):
			return server.Handover{}, err
		case err != nil:
			// No answer (a timeout, the link lost): the owner may have moved the session
			// for this connect all the same, so the connect must not start afresh here.
			// An answer that still comes gives the session back (takeoverTooLate).
			return server.Handover{}, fmt.Errorf("%w (owner %s: %w)", server.ErrTakeoverUnanswered, owner, err)
		}
		if snap, err = decodeSnap(resp.Data); err != nil {
			o.endTurn(owner, id, resp.Turn)
			return server.Handover{}, err
		}
		source, epoch, turn = resp.Node, resp.Epoch, resp.Turn
		also, skipped = resp.Also, resp.Skipped
	}
	reachable := o.noteUnreachable(id, epoch, clean, claim, skipped)
	ho := server.Handover{Session: snap, Epoch: epoch}
	if snap != nil {
		ho.Finish = func() []*session.Delivery { return o.settle(id, source, epoch, also...) }
		ho.GiveBack = func() { o.giveBack(snap, source, epoch) }
		if owner == o.self {
			ho.Done = func() { o.turns.release(id, turn) }
		} else {
			// The CONNACK need not wait for the owner's answer.
			ho.Done = func() { go o.endTurn(owner, id, turn) }
		}
	}
	if len(reachable) > 0 {
		// Members the owner skipped that this node reaches: no link of ours comes up
		// to send their stale kicks, so their senders start once the session is in
		// place here (a copy they hand over needs it to merge into).
		done := ho.Done
		ho.Done = func() {
			if done != nil {
				done()
			}
			for _, name := range reachable {
				go o.peerBack(name)
			}
		}
	}
	return ho, nil
}

// ownerTakeover runs on the owner of id: connects for one ID go through it one at a
// time; each gets a larger epoch and kicks the ID on every node but the requester.
// It returns the newest persistent session found, the node holding it, the other
// nodes whose copies were merged into it (all of them release their copies once it is
// installed) and, with a session, the ID's turn (turns.go), which the requester gives
// back once the session is installed and its old copies released: no other move of
// the ID starts meanwhile. A node whose session of id belongs to another user than
// claim's keeps it, and the takeover fails with apiv1.CodeClientIDOwned. A reachable
// node that does not answer its kick in time fails it with apiv1.CodeSessionMoving
// (the client tries again): going on without its copy would split the session.
func (o *ownership) ownerTakeover(id string, clean bool, requester string, claim server.Claim) (ownerResult, error) {
	turn := o.turns.acquire(id, turnWait, o.done)
	if turn == 0 {
		return ownerResult{}, errorf(apiv1.CodeSessionMoving, "%v: another move of it is still running", server.ErrSessionMoving)
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
		wg      sync.WaitGroup
		smu     lockorder.Mutex
		copies  []nodeCopy
		failed  error
		skipped []string // guarded by smu
	)
	keep := func(s *session.Snapshot, from string) {
		if s != nil {
			smu.Lock()
			copies = append(copies, nodeCopy{s, from})
			smu.Unlock()
		}
	}
	fail := func(err error) {
		smu.Lock()
		if failed == nil || CodeOf(err) == apiv1.CodeClientIDOwned { // the refusal says more
			failed = err
		}
		smu.Unlock()
	}
	if requester != o.self {
		s, err := o.srv.Kick(id, epoch, !clean, claim)
		if err != nil {
			fail(kickError(err))
		}
		keep(s, o.self)
	}
	for _, p := range peers {
		if !o.peers.peerUp(p) {
			smu.Lock() // kicks started before may be adding too
			skipped = append(skipped, p)
			smu.Unlock()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			req := &request{Op: opKick, ClientID: id, Epoch: epoch, Clean: clean, Owner: claim.Owner, CheckOwner: claim.Check}
			resp, err := o.peers.requestLate(p, req, kickWait, func(resp *response) { o.kickTooLate(id, p, epoch, resp) })
			if err == nil {
				err = resp.err()
			}
			switch {
			case CodeOf(err) == apiv1.CodeClientIDOwned:
				fail(err)
				return
			case CodeOf(err) == apiv1.CodeSessionMoving:
				// Its copy is still moving from an earlier takeover whose answer was
				// late or lost: that move ends first.
				fail(err)
				return
			case CodeOf(err) == apiv1.CodeUnreachable && o.peers.peerUp(p):
				// Reachable but slow (a backlog after a heal): its copy may be on its
				// way. Nothing goes ahead without it; a late answer gives it back.
				o.log.Warn("takeover refused: a reachable node did not answer its kick", "client", id, "peer", p, "error", err)
				fail(errorf(apiv1.CodeSessionMoving, "%v: node %s did not answer in time", server.ErrSessionMoving, p))
				return
			case err != nil:
				// Cut off meanwhile: the connect goes on without it (a copy it handed
				// over all the same goes back to it after its move timeout).
				o.log.Warn("takeover could not reach a node", "client", id, "peer", p, "error", err)
				smu.Lock()
				skipped = append(skipped, p)
				smu.Unlock()
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
	if failed == nil {
		if b := bestCopy(copies); b >= 0 && !claim.Allows(copies[b].snap.Owner) {
			// Every node let the claim through, yet the newest copy is another user's.
			failed = errorf(apiv1.CodeClientIDOwned, "%v", server.ErrClientIDOwned)
		}
	}
	if failed != nil {
		for _, c := range copies { // each node that handed its copy over keeps it again
			if c.from != requester {
				o.giveBack(c.snap, c.from, epoch)
			}
		}
		return ownerResult{epoch: epoch}, failed
	}
	best, source, also := mergeCopies(copies)
	if best == nil {
		return ownerResult{epoch: epoch, skipped: skipped}, nil
	}
	moving = true
	return ownerResult{snap: best, source: source, also: also, epoch: epoch, turn: turn, skipped: skipped}, nil
}

// ownerResult is what a takeover at the owner found: the session copy to continue
// (none: snap nil), the node it came from, the other nodes whose copies were merged
// into it, the connect's epoch, the ID's turn (with a session) and the members it did
// not kick (out of reach; the connecting node kicks them once they are back).
type ownerResult struct {
	snap        *session.Snapshot
	source      string
	also        []string
	epoch, turn uint64
	skipped     []string
}

// kickWait bounds the wait for one node's answer to a takeover's kick: with the wait
// for the ID's turn (turnWait) it stays below the requester's wait for the owner.
const kickWait = requestTimeout - 2*time.Second

// kickTooLate handles a kick's answer that came after the takeover gave up on it: the
// session that node handed over goes back to it.
func (o *ownership) kickTooLate(id, peer string, epoch uint64, resp *response) {
	if resp.err() != nil || len(resp.Data) == 0 {
		return
	}
	snap, err := decodeSnap(resp.Data)
	if err != nil {
		o.log.Error("undecodable session in a late kick answer", "client", id, "peer", peer, "error", err)
		return
	}
	o.log.Warn("a kick was answered after its takeover gave up: the session goes back", "client", id, "peer", peer)
	o.giveBack(snap, peer, epoch)
}

// takeoverTooLate handles the owner's takeover answer that came after this node gave
// up on it (the connect was refused): the session goes back to the nodes it came
// from, and the turn to the owner.
func (o *ownership) takeoverTooLate(owner, id string, resp *response) {
	if resp.err() != nil {
		return
	}
	defer o.endTurn(owner, id, resp.Turn)
	snap, err := decodeSnap(resp.Data)
	if err != nil || snap == nil {
		return
	}
	o.log.Warn("a takeover was answered after this node gave up on it: the session goes back", "client", id, "owner", owner, "node", resp.Node)
	// The copies merged into snap (resp.Also) are not released: if the give-back
	// failed they would be gone with it. They keep their copy after their move
	// timeout: what snap holds of them twice is delivered twice, not lost.
	o.giveBack(snap, resp.Node, resp.Epoch)
}

// nodeCopy is a session copy a kick returned and the node it came from.
type nodeCopy struct {
	snap *session.Snapshot
	from string
}

// bestCopy returns the index of the copy a takeover continues, -1 with none: the most
// recently disconnected full copy (a partial one, what a copy still moving received
// since its first handover, only when there is no full one).
func bestCopy(copies []nodeCopy) int {
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
	return bestAt
}

// mergeCopies returns the copy a takeover continues (bestCopy), the node it came from
// and the other nodes whose copies it took in. What every other copy holds is queued
// after it, so nothing one of them held is lost: their inflight deliveries go back to
// the queue (the packet IDs are the chosen copy's), except QoS 2 ones the client
// already received (PUBREC), and the new node keeps each message once (MergeMoved).
func mergeCopies(copies []nodeCopy) (*session.Snapshot, string, []string) {
	bestAt := bestCopy(copies)
	if bestAt < 0 {
		return nil, "", nil
	}
	best := copies[bestAt]
	var also []string
	for i, c := range copies {
		if i == bestAt {
			continue
		}
		also = append(also, c.from)
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
	return best.snap, best.from, also
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

// kickError turns the server's ErrClientIDOwned and ErrSessionMoving into the stable
// codes peers match.
func kickError(err error) error {
	switch {
	case errors.Is(err, server.ErrClientIDOwned):
		return errorf(apiv1.CodeClientIDOwned, "%v", err)
	case errors.Is(err, server.ErrSessionMoving):
		return errorf(apiv1.CodeSessionMoving, "%v", err)
	}
	return err
}
