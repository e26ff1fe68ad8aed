package server

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"

	"github.com/mqtt-operator/mqtt-operator/broker/session"
	"github.com/mqtt-operator/mqtt-operator/broker/topic"
)

// Watchers: the dashboard's subscribe tool. A watcher is a subscription of this node
// without a session or a connection: it is in the trie under a pseudo-client ID (like
// a peer's routes) and its route reaches the cluster like any local subscription, so
// messages published on any node reach it. route hands it a copy of each matching
// message without blocking: when its buffer is full the message is dropped for it
// (counted), never for anyone else. A message it takes counts as delivered to a
// subscriber (a publisher gets no "no matching subscribers" while only a watcher has
// the topic); one it drops does not.

// watchPrefix marks a watcher's pseudo-client in the trie; MQTT client IDs cannot
// hold U+0000 (MQTT-1.5.4-2), so none collides.
const watchPrefix = "\x00watch:"

// MaxWatchers bounds the watchers of one node.
const MaxWatchers = 16

// ErrTooManyWatchers is a Watch over MaxWatchers.
var ErrTooManyWatchers = errors.New("too many watchers")

// watcher is one watch: its messages, how many it dropped, and how it ends.
type watcher struct {
	ch      chan *session.Message
	dropped atomic.Uint64
	stop    func() uint64
}

// Watch subscribes to filter (no shared subscriptions; no ACL: an administrator's
// tool) and returns the messages that match it, buffered up to buf, and a stop
// function that ends the watch and closes the channel. Messages that do not fit the
// buffer are dropped for this watcher and counted in the third result's count.
func (s *Server) Watch(filter string, buf int) (<-chan *session.Message, func() (dropped uint64), error) {
	if !topic.ValidFilter(filter) || strings.HasPrefix(filter, "$share/") {
		return nil, nil, fmt.Errorf("%w: %q is not a topic filter to watch", ErrBadPublish, filter)
	}
	if s.watchCount.Add(1) > MaxWatchers {
		s.watchCount.Add(-1)
		return nil, nil, fmt.Errorf("%w: this node already has %d watchers", ErrTooManyWatchers, MaxWatchers)
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	id := watchPrefix + hex.EncodeToString(b[:])
	w := &watcher{ch: make(chan *session.Message, buf)}
	var stopped atomic.Bool
	w.stop = func() uint64 {
		if stopped.Swap(true) {
			return w.dropped.Load()
		}
		s.flushRoutes(s.removeSub(id, "", filter))
		s.watchers.Delete(id)
		s.watchCount.Add(-1)
		s.watchMu.Lock() // no route is sending on ch once this is held (deliverWatch reads under it)
		close(w.ch)
		s.watchMu.Unlock()
		return w.dropped.Load()
	}
	// Under Server.mu (read): a shutdown (closing is set under the write lock before
	// stopWatchers) either comes first and is seen here, or finds this watcher stored
	// and subscribed.
	s.mu.RLock()
	if s.closing {
		s.mu.RUnlock()
		s.watchCount.Add(-1)
		return nil, nil, ErrServerClosed
	}
	s.watchers.Store(id, w)
	change := s.addSub(topic.Subscription{ClientID: id, Filter: filter, QoS: 2})
	s.mu.RUnlock()
	s.flushRoutes(change)
	return w.ch, w.stop, nil
}

// stopWatchers ends every watch (the server shuts down): their channels close, so
// the streams that read them end instead of holding up the shutdown.
func (s *Server) stopWatchers() {
	s.watchers.Range(func(_, v any) bool {
		if w, ok := v.(*watcher); ok {
			w.stop()
		}
		return true
	})
}

// deliverWatch hands msg to the watcher id, if it is one: isWatcher says whether id
// is a watcher's, delivered whether the message fit its buffer.
func (s *Server) deliverWatch(id string, msg *session.Message) (isWatcher, delivered bool) {
	if !strings.HasPrefix(id, watchPrefix) {
		return false, false
	}
	s.watchMu.RLock()
	defer s.watchMu.RUnlock()
	v, ok := s.watchers.Load(id)
	if !ok {
		return true, false // stopping
	}
	w, _ := v.(*watcher)
	select {
	case w.ch <- msg:
		return true, true
	default:
		w.dropped.Add(1)
		return true, false
	}
}
