package server

import (
	"github.com/mqtt-operator/mqtt-operator/broker/topic"
)

// This node's routes (which filters have local subscribers, per share group) and how
// their changes reach the cluster.
//
// A route change is decided under Server.routesMu, often with Server.mu held too
// (attach, Kick, the ACL re-check), but handing it to the cluster can wait on a slow
// peer's link for up to the link's write timeout. So addSub and removeSub only append
// the change to routeOutbox, in the order the refcounts changed, and flushRoutes hands
// the outbox to the cluster once the caller released its locks, as wills are
// published. Each change gets a number; the path that made it passes the largest of
// its numbers to flushRoutes before it returns, so the cluster has it by then: before a
// takeover's Finish (its route barrier asks the peers to confirm they have the routes),
// before the answers of Kick, Release and AdoptSession, before a SUBSCRIBE's SUBACK or an
// UNSUBSCRIBE's UNSUBACK is queued. A path that changed no route never waits for
// another one's slow link.
//
// Ordering. Changes are appended under routesMu, so the outbox holds them in refcount
// order; flushRoutes pops the whole outbox under routesMu (and Server.mu, read, so the
// changes of one Server.mu hold are popped together) and hands the popped changes
// to the cluster while holding routesFlushMu, so drains run one at a time, oldest
// first, and the cluster sees every change once, in refcount order. A flush for change
// n returns once routesHanded >= n: it pops the change itself, or finds that a drain
// before it (which held routesFlushMu) handed it.
//
// Snapshots. A peer applies routes as a set: a full snapshot replaces the node's set,
// then each delta adds or deletes one route (SetRemoteRoutes). A link sends its
// snapshot from WithLocalRoutes, under routesFlushMu, and takes deltas from then on. The
// snapshot is therefore the routes as of the last change handed to the cluster
// (routeRefs with the outbox's changes undone), not routeRefs itself: changes still in
// the outbox are handed after the snapshot and reach the new link as deltas. Every
// change is thus either in the snapshot or a later delta, never both and never
// neither, and for each route the deltas after the snapshot alternate starting from
// its state in the snapshot, so the peer's set equals this node's refcounted routes
// once the outbox is drained (set semantics would also absorb a repeated delta, but
// none happens).

// routeChange is one change of this node's routes: the first local subscription to a
// route (add) or the last one gone.
type routeChange struct {
	r   Route
	add bool
	seq uint64 // position in the order of all changes, from 1
}

// addSub adds a local subscription to the trie and counts its route. A new route is
// queued for the cluster: the result is its change's number for flushRoutes (0: none).
func (s *Server) addSub(sub topic.Subscription) (change uint64) {
	s.routesMu.Lock()
	defer s.routesMu.Unlock()
	if s.trie.Subscribe(sub) {
		return 0 // the same client re-subscribed: options changed, the route did not
	}
	r := Route{Group: sub.ShareGroup, Filter: sub.Filter}
	s.routeRefs[r]++
	if s.routeRefs[r] == 1 {
		return s.queueRouteLocked(r, true)
	}
	return 0
}

// removeSub removes a local subscription from the trie and uncounts its route. A route
// gone is queued for the cluster: the result is its change's number for flushRoutes
// (0: none).
func (s *Server) removeSub(id, group, filter string) (change uint64) {
	s.routesMu.Lock()
	defer s.routesMu.Unlock()
	if !s.trie.Unsubscribe(id, group, filter) {
		return 0
	}
	r := Route{Group: group, Filter: filter}
	s.routeRefs[r]--
	if s.routeRefs[r] <= 0 {
		delete(s.routeRefs, r)
		return s.queueRouteLocked(r, false)
	}
	return 0
}

// queueRouteLocked appends a change to the outbox. routesMu held on entry.
func (s *Server) queueRouteLocked(r Route, add bool) uint64 {
	if s.clusterOf() == nil {
		return 0 // a single node: nobody to tell (a cluster set later takes a snapshot)
	}
	s.routesQueued++
	s.routeOutbox = append(s.routeOutbox, routeChange{r: r, add: add, seq: s.routesQueued})
	return s.routesQueued
}

// flushRoutes returns once the route change numbered upTo (an addSub or removeSub
// result; 0: none) and every change before it were handed to the cluster, handing them
// itself unless another flush is already at it. Call it with no lock of the server
// held: the cluster may wait on a slow link. A caller that changed no route does not
// wait for anyone else's slow link.
func (s *Server) flushRoutes(upTo uint64) {
	if upTo == 0 || s.routesHanded.Load() >= upTo {
		return
	}
	s.routesFlushMu.Lock()
	defer s.routesFlushMu.Unlock()
	if s.routesHanded.Load() >= upTo {
		return // the flush before this one took it
	}
	c := s.clusterOf()
	// Pop under Server.mu (read) as well: changes made under one hold of Server.mu
	// (attach dropping a session that was handed away and installing the moved copy:
	// remove, then add of the same routes) reach the cluster in one drain, back to
	// back, never the remove alone while the add waits behind a slow link.
	s.mu.RLock()
	s.routesMu.Lock()
	out := s.routeOutbox
	s.routeOutbox = nil
	s.routesMu.Unlock()
	s.mu.RUnlock()
	for _, ch := range out {
		switch {
		case c == nil: // the cluster was unset: nobody to tell
		case ch.add:
			c.RouteAdded(ch.r)
		default:
			c.RouteRemoved(ch.r)
		}
		s.routesHanded.Store(ch.seq)
	}
}

// WithLocalRoutes calls fn with the routes the cluster has been told of so far while
// no route change is handed to it: a link that starts taking deltas inside fn sends
// its snapshot first, and every later delta is newer than the snapshot (see the
// comment at the top of this file). Changes made meanwhile wait in the outbox.
func (s *Server) WithLocalRoutes(fn func([]Route)) {
	s.routesFlushMu.Lock()
	defer s.routesFlushMu.Unlock()
	s.routesMu.Lock()
	out := s.handedRoutesLocked()
	s.routesMu.Unlock()
	fn(out)
}

// handedRoutesLocked returns the routes as of the last change handed to the cluster:
// routeRefs with the changes still in the outbox undone. A route's changes alternate
// (add at refcount 0 -> 1, remove at 1 -> 0), so its state before its first queued
// change is the opposite of that change. routesMu and routesFlushMu held on entry.
func (s *Server) handedRoutesLocked() []Route {
	var first map[Route]bool // route -> its oldest queued change is an add
	for _, ch := range s.routeOutbox {
		if first == nil {
			first = make(map[Route]bool)
		}
		if _, seen := first[ch.r]; !seen {
			first[ch.r] = ch.add
		}
	}
	out := make([]Route, 0, len(s.routeRefs))
	for r := range s.routeRefs {
		if add, queued := first[r]; !queued || !add {
			out = append(out, r)
		}
	}
	for r, add := range first {
		if _, now := s.routeRefs[r]; !now && !add {
			out = append(out, r) // removed since, not yet handed over
		}
	}
	return out
}
