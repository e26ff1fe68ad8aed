package cluster

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/mqtt-operator/mqtt-operator/broker/apiv1"
	"github.com/mqtt-operator/mqtt-operator/broker/internal/lockorder"
	"github.com/mqtt-operator/mqtt-operator/broker/server"
	"github.com/mqtt-operator/mqtt-operator/broker/session"
	"github.com/mqtt-operator/mqtt-operator/broker/store"
)

// evacuator moves this node's clients and sessions to the other members: it
// disconnects clients at a rate and hands each detached persistent session to the
// reachable member that owns its client ID (evacuationTarget).
type evacuator struct {
	self  string
	log   *slog.Logger
	srv   evacServer
	peers ownerPeers

	done <-chan struct{}
	wg   *sync.WaitGroup
	// takeTurn holds a client ID's turn at its owner while its session moves, so the
	// move never overlaps the client's own takeover elsewhere (ownership.takeTurn);
	// nil: another move of the ID still runs.
	takeTurn func(id string) (release func())

	mu lockorder.Mutex // guards st; a leaf
	st evacuation
}

// evacServer is what an evacuation needs of the broker.
type evacServer interface {
	DisconnectAll(ctx context.Context, rate int)
	LocalLoad() (clients, sessions int)
	DetachedSessions() []string
	Kick(id string, epoch uint64, want bool, claim server.Claim) (*session.Snapshot, error)
	Unmove(snap session.Snapshot, epoch uint64)
	Release(id string, epoch uint64) []*session.Delivery
}

// evacuation is the progress of moving this node's clients away.
type evacuation struct {
	started bool
	done    bool
	moved   int
}

// EvacuationStatus is what GET /api/v1/node/evacuation reports.
type EvacuationStatus = apiv1.Evacuation

// evacuationTarget picks the member (not self) that owns clientID among the
// candidates (the members this node can reach): rendezvous hashing like ownerOf, the
// first of equal scores winning; "" when there is none.
func evacuationTarget(self string, candidates []string, clientID string) string {
	best, bestScore := "", uint64(0)
	for _, name := range candidates {
		if name == self {
			continue
		}
		if sc := rendezvousScore(name, clientID); best == "" || sc > bestScore {
			best, bestScore = name, sc
		}
	}
	return best
}

// running reports whether an evacuation has started (done or not).
func (e *evacuator) running() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.st.started
}

// reset forgets the evacuation (the store was wiped).
func (e *evacuator) reset() {
	e.mu.Lock()
	e.st = evacuation{}
	e.mu.Unlock()
}

// status returns the progress of an evacuation.
func (e *evacuator) status() EvacuationStatus {
	e.mu.Lock()
	ev := e.st
	e.mu.Unlock()
	st := EvacuationStatus{State: "idle", Moved: ev.moved}
	if ev.started {
		st.State = "running"
		if ev.done {
			st.State = "done"
		}
	}
	st.Clients, st.Sessions = e.srv.LocalLoad()
	return st
}

// start begins an evacuation unless one has started already.
func (e *evacuator) start(rate int) {
	e.mu.Lock()
	if e.st.started {
		e.mu.Unlock()
		return
	}
	e.st = evacuation{started: true}
	e.mu.Unlock()
	e.log.Info("evacuation started", "rate", rate)
	e.wg.Add(1)
	go e.run(rate)
}

func (e *evacuator) run(rate int) {
	defer e.wg.Done()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-e.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	for {
		e.srv.DisconnectAll(ctx, rate)
		moved := e.moveSessions(ctx)
		e.mu.Lock()
		e.st.moved += moved
		e.mu.Unlock()
		clients, sessions := e.srv.LocalLoad()
		if clients == 0 && sessions == 0 {
			break
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(200 * time.Millisecond):
		}
	}
	e.mu.Lock()
	e.st.done = true
	moved := e.st.moved
	e.mu.Unlock()
	e.log.Info("evacuation done", "sessionsMoved", moved)
}

// moveSessions hands every detached persistent session to another member.
func (e *evacuator) moveSessions(ctx context.Context) int {
	moved := 0
	for _, id := range e.srv.DetachedSessions() {
		if ctx.Err() != nil {
			return moved
		}
		target := e.target(id)
		if target == "" {
			return moved
		}
		if e.moveSession(id, target) {
			moved++
		}
	}
	return moved
}

// moveSession hands one detached session to target, holding the ID's turn: a client
// that reconnects elsewhere meanwhile takes it over before or after, never during.
func (e *evacuator) moveSession(id, target string) bool {
	release := e.takeTurn(id)
	if release == nil {
		return false // another move of it runs: the next round tries again
	}
	defer release()
	snap, _ := e.srv.Kick(id, 0, true, server.Claim{}) // the node's own move: no user to check
	if snap == nil {
		return false // it reconnected elsewhere meanwhile, or expired
	}
	b, err := store.EncodeSession(*snap)
	var resp *response
	if err == nil {
		if resp, err = e.peers.request(target, &request{Op: opAdopt, Data: b}); err == nil {
			err = resp.err()
		}
	}
	if err != nil {
		// Keep the session here and try again on the next round.
		e.log.Warn("moving a session failed; keeping it", "client", id, "target", target, "error", err)
		e.srv.Unmove(*snap, 0)
		return false
	}
	if !resp.OK { // a session of this ID was there already: its takeover has the state
		e.srv.Release(id, 0)
	}
	return true
}

// target picks the reachable member (not this node) that owns id.
func (e *evacuator) target(id string) string {
	var candidates []string
	for _, name := range e.peers.memberNames() {
		if name != e.self && e.peers.peerUp(name) {
			candidates = append(candidates, name)
		}
	}
	return evacuationTarget(e.self, candidates, id)
}
