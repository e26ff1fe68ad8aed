package server

import (
	"cmp"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"testing"

	"github.com/mqtt-operator/mqtt-operator/broker/session"
	"github.com/mqtt-operator/mqtt-operator/broker/topic"
)

// peerLink is a Cluster with one peer that applies this node's routes as the cluster
// link and the peer's SetRemoteRoutes do: a snapshot taken in WithLocalRoutes replaces
// the peer's set, then each delta adds or removes one route. A delta that finds the
// route already in the state it sets means a change reached the peer twice, or one
// before it never did: it is recorded as an error.
type peerLink struct {
	srv *Server

	mu     sync.Mutex
	up     bool
	routes map[Route]bool
	errs   []string
}

func (p *peerLink) RouteAdded(r Route)   { p.apply(r, true) }
func (p *peerLink) RouteRemoved(r Route) { p.apply(r, false) }

func (p *peerLink) apply(r Route, add bool) {
	runtime.Gosched() // let other route changes race this one
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.up {
		return // a down link gets a snapshot on reconnect
	}
	if p.routes[r] == add {
		p.errs = append(p.errs, fmt.Sprintf("delta add=%v for %v found it already so", add, r))
	}
	if add {
		p.routes[r] = true
	} else {
		delete(p.routes, r)
	}
}

// reconnect drops the link (the peer forgets the node's routes) and opens it again:
// snapshot first, deltas from then on.
func (p *peerLink) reconnect() {
	p.mu.Lock()
	p.up, p.routes = false, nil
	p.mu.Unlock()
	p.srv.WithLocalRoutes(func(rs []Route) {
		p.mu.Lock()
		defer p.mu.Unlock()
		p.routes = make(map[Route]bool, len(rs))
		for _, r := range rs {
			p.routes[r] = true
		}
		p.up = true
	})
}

// state returns the peer's view of the node's routes and the errors seen.
func (p *peerLink) state() (map[Route]bool, []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[Route]bool, len(p.routes))
	for r := range p.routes {
		out[r] = true
	}
	return out, slices.Clone(p.errs)
}

func (p *peerLink) Forward(*session.Message, map[string][]Route) func() int { return nil }
func (p *peerLink) PeerUp(string) bool                                      { return false }
func (p *peerLink) Retain(*session.Message) error                           { return nil }
func (p *peerLink) Takeover(string, bool, Claim) (Handover, error)          { return Handover{}, nil }

func newLinkedServer(t *testing.T) (*Server, *peerLink) {
	t.Helper()
	s, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	p := &peerLink{srv: s}
	s.SetCluster(p)
	p.reconnect()
	return s, p
}

// localRoutes is what the peer should hold once the outbox is drained.
func localRoutes(s *Server) map[Route]bool {
	s.routesMu.Lock()
	defer s.routesMu.Unlock()
	out := make(map[Route]bool, len(s.routeRefs))
	for r := range s.routeRefs {
		out[r] = true
	}
	return out
}

// TestRouteChangesReachPeerInRefcountOrder adds and removes the same routes from
// concurrent goroutines, some flushing late, while the link reconnects: the peer must
// never see a change twice or miss one, and ends with exactly the refcounted routes.
func TestRouteChangesReachPeerInRefcountOrder(t *testing.T) {
	s, p := newLinkedServer(t)
	routes := []Route{{Filter: "f/#"}, {Group: "g", Filter: "f/#"}, {Filter: "other"}}
	const clients, rounds = 8, 200
	var wg sync.WaitGroup
	stop := make(chan struct{})
	reconnects := 0
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			p.reconnect()
			reconnects++
		}
	})
	var changers sync.WaitGroup
	for c := range clients {
		changers.Go(func() {
			id := fmt.Sprintf("c%d", c)
			var last uint64 // this client's last route change
			for i := range rounds {
				r := routes[(c+i)%len(routes)]
				last = max(last, s.addSub(topic.Subscription{ClientID: id, Filter: r.Filter, ShareGroup: r.Group}))
				if i%3 != 0 { // sometimes leave the change queued for a later flush or snapshot
					s.flushRoutes(last)
				}
				last = max(last, s.removeSub(id, r.Group, r.Filter))
				if i%2 == 0 {
					s.flushRoutes(last)
				}
			}
			if c%2 == 1 { // odd clients end subscribed
				r := routes[c%len(routes)]
				last = max(last, s.addSub(topic.Subscription{ClientID: id, Filter: r.Filter, ShareGroup: r.Group}))
			}
			s.flushRoutes(last)
		})
	}
	changers.Wait()
	close(stop)
	wg.Wait()
	got, errs := p.state()
	for _, e := range errs {
		t.Error(e)
	}
	want := localRoutes(s)
	if len(want) == 0 {
		t.Fatal("no route left: the test does not check the end state")
	}
	if fmt.Sprint(got) != fmt.Sprint(want) { // fmt sorts map keys
		t.Errorf("peer holds %v, local routes are %v (%d reconnects)", got, want, reconnects)
	}
}

// TestSnapshotExcludesQueuedChanges takes a link's snapshot while changes wait in the
// outbox: they are not in it, and reach the new link as deltas after it.
func TestSnapshotExcludesQueuedChanges(t *testing.T) {
	tests := []struct {
		name         string
		before, then []change // before: flushed; then: queued at the snapshot
		snapshot     []Route
		peer         []Route
	}{
		{name: "queued add", then: []change{{"a", true}}, peer: []Route{{Filter: "a"}}},
		{name: "queued remove", before: []change{{"a", true}}, then: []change{{"a", false}},
			snapshot: []Route{{Filter: "a"}}},
		{name: "queued remove then add", before: []change{{"a", true}}, then: []change{{"a", false}, {"a", true}},
			snapshot: []Route{{Filter: "a"}}, peer: []Route{{Filter: "a"}}},
		{name: "queued add then remove", then: []change{{"a", true}, {"a", false}}},
		{name: "others untouched", before: []change{{"a", true}, {"b", true}}, then: []change{{"b", false}, {"c", true}},
			snapshot: []Route{{Filter: "a"}, {Filter: "b"}}, peer: []Route{{Filter: "a"}, {Filter: "c"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, p := newLinkedServer(t)
			var last uint64
			for _, c := range tt.before {
				last = c.apply(s)
			}
			s.flushRoutes(last)
			p.mu.Lock()
			p.up, p.routes = false, nil // link down
			p.mu.Unlock()
			for _, c := range tt.then {
				last = c.apply(s)
			}
			var snap []Route
			p.srv.WithLocalRoutes(func(rs []Route) {
				snap = sortRoutes(rs)
				p.mu.Lock()
				defer p.mu.Unlock()
				p.routes = make(map[Route]bool)
				for _, r := range rs {
					p.routes[r] = true
				}
				p.up = true
			})
			if !slices.Equal(snap, tt.snapshot) {
				t.Errorf("snapshot %v, want %v", snap, tt.snapshot)
			}
			s.flushRoutes(last)
			got, errs := p.state()
			for _, e := range errs {
				t.Error(e)
			}
			var peer []Route
			for r := range got {
				peer = append(peer, r)
			}
			if peer = sortRoutes(peer); !slices.Equal(peer, tt.peer) {
				t.Errorf("peer holds %v, want %v", peer, tt.peer)
			}
		})
	}
}

// change subscribes or unsubscribes one client per filter.
type change struct {
	filter string
	add    bool
}

// apply returns the number of the route change it queued.
func (c change) apply(s *Server) uint64 {
	if c.add {
		return s.addSub(topic.Subscription{ClientID: "x", Filter: c.filter})
	}
	return s.removeSub("x", "", c.filter)
}

func sortRoutes(rs []Route) []Route {
	slices.SortFunc(rs, func(a, b Route) int {
		return cmp.Or(cmp.Compare(a.Group, b.Group), cmp.Compare(a.Filter, b.Filter))
	})
	return rs
}
