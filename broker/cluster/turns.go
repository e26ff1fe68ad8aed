package cluster

import (
	"log/slog"
	"time"

	"github.com/mqtt-operator/mqtt-operator/broker/internal/lockorder"
)

// turnTTL bounds how long one move of a client ID's session may hold the ID's turn:
// a holder that fails or hangs delays the next move of that ID by at most this long.
// It stays under requestTimeout, so a takeover that waits for a turn is still answered
// in time.
const turnTTL = 5 * time.Second

// turns are the owner's per-client-ID order of session moves: a takeover (a connect
// elsewhere) and an evacuation's move of one ID each hold the ID's turn from their
// kicks until the session is installed at its new node and the old copy released, so
// no second move of the ID starts while a copy is in flight (two moves at once left a
// queue on a copy nobody released). A turn no one gives back expires after turnTTL.
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
// 0). done ends the wait early (the node stops): then it returns 0.
func (t *turns) acquire(id string, done <-chan struct{}) uint64 {
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
