package cluster

import (
	"slices"
	"time"

	"github.com/mqtt-operator/mqtt-operator/broker/apiv1"
	"github.com/mqtt-operator/mqtt-operator/broker/internal/lockorder"
	"github.com/mqtt-operator/mqtt-operator/broker/server"
)

// A connect runs while some members are out of reach (cut off, frozen, restarting):
// their copy of the client ID's session, and a connection there made before the cut,
// are not kicked then. The connecting node remembers the ID for each such member and
// kicks it there once the member's link is back (a stale kick: only a connection older
// than the connect goes; a persistent copy is handed over and merged into the session
// here), so after a heal one connection per client ID remains: the newest.

// staleKick is a connect whose kick a member did not get.
type staleKick struct {
	epoch uint64
	clean bool
	claim server.Claim
}

// staleKicksMax bounds the client IDs remembered per member; past it the newest
// connects are not remembered (logged once per episode).
const staleKicksMax = 100_000

// staleKicks are the stale kicks still to send, per member.
type staleKicks struct {
	mu      lockorder.Mutex // a leaf
	pending map[string]map[string]staleKick
	full    map[string]bool // a member's set was full since it was last taken
	count   int             // stale kicks pending over all members (the gauge)
	// running: a sender works through a member's stale kicks (one at a time per
	// member); rerun: its link came up again meanwhile, so it looks again when done.
	running, rerun map[string]bool
}

// add remembers id's connect for peer, replacing an older one. It reports false when
// the peer's set is full (true once per episode in first).
func (k *staleKicks) add(peer, id string, sk staleKick) (ok, first bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.pending == nil {
		k.pending, k.full = map[string]map[string]staleKick{}, map[string]bool{}
	}
	m := k.pending[peer]
	if m == nil {
		m = map[string]staleKick{}
		k.pending[peer] = m
	}
	if old, ok := m[id]; ok || len(m) < staleKicksMax {
		if !ok {
			k.count++
		}
		if sk.epoch > old.epoch {
			m[id] = sk
		}
		return true, false
	}
	first = !k.full[peer]
	k.full[peer] = true
	return false, first
}

// take returns and forgets peer's stale kicks.
func (k *staleKicks) take(peer string) map[string]staleKick {
	k.mu.Lock()
	defer k.mu.Unlock()
	m := k.pending[peer]
	delete(k.pending, peer)
	delete(k.full, peer)
	k.count -= len(m)
	return m
}

// start marks a sender running for peer; false when one runs already (it is told to
// look again when done).
func (k *staleKicks) start(peer string) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.running == nil {
		k.running, k.rerun = map[string]bool{}, map[string]bool{}
	}
	if k.running[peer] {
		k.rerun[peer] = true
		return false
	}
	k.running[peer] = true
	return true
}

// done ends peer's sender unless its link came up again meanwhile (then it goes on).
func (k *staleKicks) done(peer string) (again bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.rerun[peer] {
		delete(k.rerun, peer)
		return true
	}
	delete(k.running, peer)
	return false
}

// keep puts back stale kicks that could not be sent (the link went down again),
// unless a newer connect of the ID replaced them meanwhile.
func (k *staleKicks) keep(peer string, m map[string]staleKick) {
	for id, sk := range m {
		k.add(peer, id, sk)
	}
}

// forget drops what waits for peer: it left the cluster, its sessions with it.
func (k *staleKicks) forget(peer string) { k.take(peer) }

// size returns how many stale kicks wait, over all members.
func (k *staleKicks) size() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.count
}

// noteUnreachable remembers a connect of id ordered with epoch for every member this
// node cannot reach now and every one the owner did not kick (skipped: the owner's
// view of who is out of reach may differ from this node's). It returns the skipped
// members this node reaches: their senders are started by the caller.
func (o *ownership) noteUnreachable(id string, epoch uint64, clean bool, claim server.Claim, skipped []string) (reachable []string) {
	for _, name := range o.peers.memberNames() {
		if name == o.self || (o.peers.peerUp(name) && !slices.Contains(skipped, name)) {
			continue
		}
		if ok, first := o.stale.add(name, id, staleKick{epoch: epoch, clean: clean, claim: claim}); !ok && first {
			o.log.Error("too many connects while a member is out of reach: the newest are not kicked there when it is back",
				"peer", name, "limit", staleKicksMax)
		}
		if o.peers.peerUp(name) {
			reachable = append(reachable, name)
		}
	}
	return reachable
}

// staleRetries and staleRetryEvery bound how often a sender tries again the stale
// kicks a member could not take yet (its copy still moving, no turn, a timeout)
// while its link stays up; what is left then waits for its next link.
const (
	staleRetries    = 25 // 75 s: past a moving copy's timeout (60 s)
	staleRetryEvery = 3 * time.Second
)

// peerBack sends the stale kicks waiting for peer, whose link is up again. One sender
// runs per member at a time.
func (o *ownership) peerBack(peer string) {
	if !o.stale.start(peer) {
		return
	}
	for {
		o.sendStale(peer)
		if !o.stale.done(peer) {
			return
		}
	}
}

func (o *ownership) sendStale(peer string) {
	pending := o.stale.take(peer)
	if len(pending) == 0 {
		return
	}
	o.log.Info("a member is back: kicking there the client IDs connected here while it was out of reach", "peer", peer, "clients", len(pending))
	for round := 0; len(pending) > 0; round++ {
		again := map[string]staleKick{}
		for id, sk := range pending {
			select {
			case <-o.done:
				return
			default:
			}
			if !o.peers.peerUp(peer) || !o.staleKick(peer, id, sk) {
				again[id] = sk
			}
		}
		pending = again
		if len(pending) == 0 || round+1 == staleRetries || !o.peers.peerUp(peer) {
			break
		}
		select {
		case <-o.done:
			return
		case <-time.After(staleRetryEvery):
		}
	}
	if len(pending) == 0 {
		return
	}
	if !slices.Contains(o.peers.memberNames(), peer) {
		return // it left: its sessions are gone with it
	}
	o.log.Info("stale kicks a member could not take yet wait for its next link", "peer", peer, "clients", len(pending))
	o.stale.keep(peer, pending)
}

// staleKick kicks id's older connection and session on peer. It reports false when it
// should be tried again (peer out of reach, the ID's turn not granted, its copy there
// still moving, no answer).
func (o *ownership) staleKick(peer, id string, sk staleKick) bool {
	if !sk.clean {
		// A persistent copy may come here: the ID's move order holds (turns.go).
		release := o.takeTurn(id)
		if release == nil {
			return false
		}
		defer release()
	}
	req := &request{Op: opKick, ClientID: id, Epoch: sk.epoch, Clean: sk.clean, Owner: sk.claim.Owner, CheckOwner: sk.claim.Check, Stale: true}
	resp, err := o.peers.requestLate(peer, req, kickWait, func(resp *response) { o.staleCopy(peer, id, sk.epoch, resp) })
	if err == nil {
		err = resp.err()
	}
	switch code := CodeOf(err); {
	case err == nil:
	case code == apiv1.CodeClientIDOwned:
		return true // another user's session there: it stays
	case code == apiv1.CodeSessionMoving:
		return false
	case code == apiv1.CodeUnreachable && !o.peers.peerUp(peer):
		return false
	case code == apiv1.CodeUnreachable:
		return true // no answer in time: a late one is taken in (staleCopy)
	default:
		o.log.Warn("a stale kick failed", "client", id, "peer", peer, "error", err)
		return true
	}
	o.staleCopy(peer, id, sk.epoch, resp)
	return true
}

// staleCopy takes in the persistent copy of id that a stale kick made peer hand over:
// merged into the session here (each message once) and, once every member has this
// node's routes, released there; with no session here any more (or another user's),
// given back to peer.
func (o *ownership) staleCopy(peer, id string, epoch uint64, resp *response) {
	if resp.err() != nil {
		return
	}
	snap, err := decodeSnap(resp.Data)
	if err != nil {
		o.log.Error("undecodable session in a stale kick's answer", "client", id, "peer", peer, "error", err)
		return
	}
	if snap == nil {
		return
	}
	if !o.srv.MergeStale(id, snap) {
		o.giveBack(snap, peer, epoch)
		return
	}
	o.peers.barrier()
	o.srv.MergeMoved(id, o.release(id, peer, epoch))
}
