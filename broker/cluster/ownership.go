package cluster

import (
	"hash/fnv"
	"log/slog"
	"time"

	"github.com/mqtt-operator/mqtt-operator/broker/apiv1"

	"github.com/mqtt-operator/mqtt-operator/broker/internal/lockorder"
	"github.com/mqtt-operator/mqtt-operator/broker/server"
	"github.com/mqtt-operator/mqtt-operator/broker/session"
	"github.com/mqtt-operator/mqtt-operator/broker/store"
)

// ownership orders the connects of each client ID across the cluster: it computes
// which member owns an ID (ownerOf), hands out takeover epochs, and, on the owner,
// runs takeovers one at a time per ID (takeover.go). It reads the members and their
// links through ownerPeers and ends or returns sessions through ownerServer.
type ownership struct {
	self  string
	log   *slog.Logger
	srv   ownerServer
	peers ownerPeers
	now   func() time.Time // the epoch clock
	// majority reports whether this node reaches a majority of the voters; a node
	// that does not refuses connects (nil: always).
	majority func() bool

	// The owner's per-client-ID order of session moves (turns.go): held across a
	// takeover's kicks and until the session is installed at its new node.
	turns *turns
	done  <-chan struct{} // closed when the node stops
	// The client IDs connected here while members were out of reach, to kick there
	// once they are back (stalekicks.go).
	stale   staleKicks
	epochMu lockorder.Mutex // guards epoch; a leaf
	epoch   uint64
}

// ownerServer is what takeovers need of the broker.
type ownerServer interface {
	Kick(id string, epoch uint64, want bool, claim server.Claim) (*session.Snapshot, error)
	Release(id string, epoch uint64) []*session.Delivery
	Unmove(snap session.Snapshot, epoch uint64)
	MergeMoved(id string, ds []*session.Delivery)
	MergeStale(id string, other *session.Snapshot) bool
	// Holds reports whether a session of id is here and not moving away.
	Holds(id string) bool
}

// ownerPeers is what takeovers need of the cluster: the members, their links, and
// requests to them.
type ownerPeers interface {
	memberNames() []string
	peerUp(node string) bool
	request(peer string, req *request) (*response, error)
	// requestLate is request with its own wait; an answer that comes after it goes
	// to late.
	requestLate(peer string, req *request, wait time.Duration, late func(*response)) (*response, error)
	barrier()
	drainInbound()
}

// rendezvousScore is node's score for clientID: the highest score wins the ID.
func rendezvousScore(node, clientID string) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(node))
	_, _ = h.Write([]byte{0})
	_, _ = h.Write([]byte(clientID))
	return h.Sum64()
}

// ownerOf picks the node that orders connects for clientID among the candidates (the
// members this node can reach, itself included): rendezvous hashing, so every node
// picks the same one while they agree on membership, whatever the order of the list,
// and only the IDs of a node that comes or goes change owner. Self wins when no
// candidate scores above zero.
func ownerOf(self string, candidates []string, clientID string) string {
	best, bestScore := self, uint64(0)
	for _, name := range candidates {
		if sc := rendezvousScore(name, clientID); sc > bestScore || (sc == bestScore && name < best) {
			best, bestScore = name, sc
		}
	}
	return best
}

// owner picks the owner of clientID among the members this node can reach.
func (o *ownership) owner(clientID string) string {
	var candidates []string
	for _, name := range o.peers.memberNames() {
		if name == o.self || o.peers.peerUp(name) {
			candidates = append(candidates, name)
		}
	}
	return ownerOf(o.self, candidates, clientID)
}

// advanceEpoch returns the epoch after prev: the clock in nanoseconds, kept increasing
// when the clock stands still or goes back.
func advanceEpoch(prev uint64, now time.Time) uint64 {
	return max(prev+1, uint64(now.UnixNano()))
}

// nextEpoch returns a new, larger epoch: the owner's clock in nanoseconds, kept
// increasing.
func (o *ownership) nextEpoch() uint64 {
	o.epochMu.Lock()
	defer o.epochMu.Unlock()
	o.epoch = advanceEpoch(o.epoch, o.now())
	return o.epoch
}

// takeTurn holds client id's turn at its owner for a move this node makes itself (an
// evacuation's) and returns what gives it back, or nil when another move of the ID
// still runs after turnWait or the owner did not answer (the caller tries later). An
// owner of an older version, which knows no turns, lets the move go ahead unordered,
// as before turns existed.
func (o *ownership) takeTurn(id string) (release func()) {
	owner := o.owner(id)
	if owner == o.self {
		token := o.turns.acquire(id, turnWait, o.done)
		if token == 0 {
			return nil
		}
		return func() { o.turns.release(id, token) }
	}
	resp, err := o.peers.request(owner, &request{Op: opTurn, ClientID: id})
	if err == nil {
		err = resp.err()
	}
	switch {
	case CodeOf(err) == apiv1.CodeBadRequest:
		// An owner of an older version (a rolling upgrade) knows no turns.
		o.log.Info("the owner of a client ID runs an older version; moving its session unordered", "client", id, "owner", owner)
		return func() {}
	case err != nil:
		// Busy, or no answer: the owner may even have granted the turn. Try later.
		o.log.Info("no turn for a session move yet; trying on the next round", "client", id, "owner", owner, "error", err)
		return nil
	}
	return func() { o.endTurn(owner, id, resp.Turn) }
}

// endTurn gives back a turn taken at owner. A turn that cannot be given back expires.
func (o *ownership) endTurn(owner, id string, token uint64) {
	if token == 0 {
		return
	}
	if owner == o.self {
		o.turns.release(id, token)
		return
	}
	resp, err := o.peers.request(owner, &request{Op: opTurnDone, ClientID: id, Turn: token})
	if err == nil {
		err = resp.err()
	}
	if err != nil {
		o.log.Warn("ending a session move's turn failed; it expires", "client", id, "owner", owner, "ttl", turnTTL, "error", err)
	}
}

// settle finishes a session's move to this node (the move of epoch: its kicks'): once
// every peer has this node's routes for it, the old node (and every other node whose
// copy was merged into it) releases its copy and sends what arrived meanwhile.
func (o *ownership) settle(id, source string, epoch uint64, also ...string) []*session.Delivery {
	o.peers.barrier()
	var extra []*session.Delivery
	for _, n := range append([]string{source}, also...) {
		extra = append(extra, o.release(id, n, epoch)...)
	}
	return extra
}

// release ends the moving copy of id on node and returns what it queued since it was
// handed over. An answer that comes after the wait is merged into the session here
// then (MergeMoved); one whose link was down is tried again in the background once
// the link is back (moveRetry), so a link that drops for a moment right after a heal
// does not leave the old copy behind.
func (o *ownership) release(id, node string, epoch uint64) []*session.Delivery {
	if node == o.self {
		o.peers.drainInbound() // as the old node does before answering a release
		return o.srv.Release(id, epoch)
	}
	extra, err := o.releaseOn(id, node, epoch)
	if err != nil && CodeOf(err) == apiv1.CodeUnreachable && !o.peers.peerUp(node) && o.awaitLink(node, releaseLinkWait) {
		// The link dropped for a moment (right after a heal): once more before the
		// client's CONNACK, so what the old copy holds comes before newer messages.
		extra, err = o.releaseOn(id, node, epoch)
	}
	if err != nil && CodeOf(err) == apiv1.CodeUnreachable && !o.peers.peerUp(node) {
		o.log.Warn("releasing a moved session failed: its old node is out of reach; trying again once it is back", "client", id, "node", node, "error", err)
		o.moveRetry("release", id, node, func() error {
			if !o.srv.Holds(id) {
				return errGone // the session left this node meanwhile: its copy there waits for its timeout
			}
			extra, err := o.releaseOn(id, node, epoch)
			if err == nil && len(extra) > 0 {
				o.srv.MergeMoved(id, extra)
			}
			return err
		})
		return nil
	}
	if err != nil {
		o.log.Warn("releasing a moved session failed; its old node keeps its copy after the move timeout (two copies until the next takeover merges them)", "client", id, "node", node, "error", err)
		return nil
	}
	return extra
}

// releaseLinkWait bounds how long a release waits for the old node's link to come back
// before the CONNACK (then it goes on in the background: moveRetry).
const releaseLinkWait = 10 * time.Second

// awaitLink waits up to d for node's link to be up; false when it is not.
func (o *ownership) awaitLink(node string, d time.Duration) bool {
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for !o.peers.peerUp(node) {
		select {
		case <-o.done:
			return false
		case <-deadline.C:
			return false
		case <-tick.C:
		}
	}
	return true
}

// errGone ends a background retry whose session left this node.
var errGone = errorf(apiv1.CodeInternal, "the session is no longer on this node")

// releaseOn sends one release of id's move of epoch to node.
func (o *ownership) releaseOn(id, node string, epoch uint64) ([]*session.Delivery, error) {
	late := func(resp *response) {
		if extra, err := decodeSnap(resp.Data); err == nil && extra != nil && len(extra.Queue) > 0 {
			o.log.Warn("a moved session's release was answered late; merging what it sent", "client", id, "node", node, "messages", len(extra.Queue))
			o.srv.MergeMoved(id, extra.Queue)
		}
	}
	resp, err := o.peers.requestLate(node, &request{Op: opRelease, ClientID: id, Epoch: epoch}, requestTimeout+5*time.Second, late)
	if err == nil {
		err = resp.err()
	}
	var extra *session.Snapshot
	if err == nil {
		extra, err = decodeSnap(resp.Data)
	}
	if err != nil || extra == nil {
		return nil, err
	}
	return extra.Queue, nil
}

// moveRetryWindow bounds the background retries of a release or a give-back: below
// the old copy's move timeout (60 s), after which it keeps the session by itself.
const moveRetryWindow = 45 * time.Second

// moveRetry runs attempt in the background each time node's link is up, until it
// succeeds, fails for another reason than the link, the window ends or the node stops.
func (o *ownership) moveRetry(what, id, node string, attempt func() error) {
	go func() {
		deadline := time.NewTimer(moveRetryWindow)
		defer deadline.Stop()
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-o.done:
				return
			case <-deadline.C:
				o.log.Warn("gave up retrying a session move's "+what+"; the old node keeps its copy after the move timeout", "client", id, "node", node)
				return
			case <-tick.C:
			}
			select {
			case <-o.done: // both ready: the node stops first
				return
			default:
			}
			if !o.peers.peerUp(node) {
				continue
			}
			err := attempt()
			switch {
			case err == nil:
				o.log.Info("a session move's "+what+" went through once the node was back", "client", id, "node", node)
				return
			case CodeOf(err) != apiv1.CodeUnreachable:
				o.log.Warn("a session move's "+what+" failed", "client", id, "node", node, "error", err)
				return
			}
		}
	}()
}

// giveBack returns a session that a failed takeover moved out of node source; while
// that node is out of reach it is tried again in the background once it is back
// (moveRetry; past that the source keeps its copy again after the move timeout all
// the same).
func (o *ownership) giveBack(snap *session.Snapshot, source string, epoch uint64) {
	if source == o.self {
		o.srv.Unmove(*snap, epoch)
		return
	}
	b, err := store.EncodeSession(*snap)
	if err != nil {
		o.log.Error("a session to give back could not be encoded; its node keeps it again after the move timeout", "client", snap.ID, "node", source, "error", err)
		return
	}
	unmove := func() error {
		resp, err := o.peers.request(source, &request{Op: opUnmove, Data: b, Epoch: epoch})
		if err == nil {
			err = resp.err()
		}
		return err
	}
	if err = unmove(); err == nil {
		return
	}
	if CodeOf(err) == apiv1.CodeUnreachable {
		o.log.Warn("giving a session back failed: its node is out of reach; trying again once it is back", "client", snap.ID, "node", source, "error", err)
		o.moveRetry("give-back", snap.ID, source, unmove)
		return
	}
	o.log.Error("a session could not be given back after a refused takeover; its node keeps it again after the move timeout", "client", snap.ID, "node", source, "error", err)
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
