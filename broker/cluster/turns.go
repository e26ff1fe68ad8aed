package cluster

import (
	"log/slog"
	"time"

	"github.com/mqtt-operator/mqtt-operator/broker/internal/lockorder"
)

// turnTTL bounds how long one move of a client ID's session may hold the ID's turn:
// a holder that died mid-move keeps the next move of that ID waiting at most this
// long. A move still unfinished past it is protected all the same: a node whose copy
// is still moving refuses further kicks until that move ends (server.Kick).
const turnTTL = 30 * time.Second

// turnWait bounds how long a move waits for the ID's turn before it gives up (a
// connect is then refused and the client tries again; an evacuation tries on its next
// round): well under the requester's wait for the owner's answer, which also covers
// the kicks that follow.
const turnWait = 4 * time.Second

// turns are the owner's per-client-ID order of session moves: a takeover (a connect
// elsewhere) and an evacuation's move of one ID each hold the ID's turn from their
// kicks until the session is installed at its new node and the old copy released, so
// no second move of the ID starts while a copy is in flight (two moves at once left a
// queue on a copy nobody released). A move that cannot get the turn within turnWait
// does not start; a turn no one gives back expires after turnTTL.
type turns struct {
	log *slog.Logger
	ttl time.Duration

	mu   lockorder.Mutex // guards held and next; a leaf
	held map[string]*turn
	next uint64 // the last token; starts at the clock so a restarted owner's tokens are new
}

// turn is one move's hold on a client ID.
type turn struct {
	token uint64
	free  chan struct{} // closed when the turn ends
	timer *time.Timer   // ends it after the TTL
}

func newTurns(log *slog.Logger, ttl time.Duration) *turns {
	return &turns{log: log, ttl: ttl, held: make(map[string]*turn), next: uint64(time.Now().UnixNano())}
}

// acquire waits until no move holds id's turn, takes it and returns its token (never
// 0). It returns 0 when the turn is still held after wait, or done is closed (the node
// stops).
func (t *turns) acquire(id string, wait time.Duration, done <-chan struct{}) uint64 {
	timeout := time.NewTimer(wait)
	defer timeout.Stop()
	for {
		t.mu.Lock()
		cur := t.held[id]
		if cur == nil {
			t.next++
			token := t.next
			tn := &turn{token: token, free: make(chan struct{})}
			tn.timer = time.AfterFunc(t.ttl, func() {
				if t.end(id, token) {
					t.log.Warn("a session move did not finish in time; the next move of its client ID goes ahead", "client", id, "ttl", t.ttl)
				}
			})
			t.held[id] = tn
			t.mu.Unlock()
			return token
		}
		free := cur.free
		t.mu.Unlock()
		select {
		case <-free:
		case <-timeout.C:
			return 0
		case <-done:
			return 0
		}
	}
}

// release ends the turn token of id (a no-op when it has ended already).
func (t *turns) release(id string, token uint64) { t.end(id, token) }

func (t *turns) end(id string, token uint64) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	cur := t.held[id]
	if cur == nil || cur.token != token {
		return false
	}
	delete(t.held, id)
	cur.timer.Stop()
	close(cur.free)
	return true
}
