package topic

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/mqtt-operator/mqtt-operator/broker/internal/lockorder"
)

// countNodes returns the number of trie nodes below (and excluding) the root.
func countNodes(t *Trie) int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	var rec func(n *node) int
	rec = func(n *node) int {
		c := 0
		n.children.each(func(ch *node) { c += 1 + rec(ch) })
		if n.plus != nil {
			c += 1 + rec(n.plus)
		}
		if n.hash != nil {
			c += 1 + rec(n.hash)
		}
		return c
	}
	return rec(t.root)
}

// matchedIDs returns "client" for plain and "group:client" for shared matches, sorted.
func matchedIDs(m *Matches) []string {
	var out []string
	for _, s := range m.Subs {
		out = append(out, s.ClientID)
	}
	for _, g := range m.Shared {
		for _, s := range g.Members {
			out = append(out, g.Group+":"+s.ClientID)
		}
	}
	sort.Strings(out)
	return out
}

func TestTrieMatchTable(t *testing.T) {
	var m Matches
	for _, tc := range matchTable {
		tr := New()
		tr.Subscribe(Subscription{ClientID: "c", Filter: tc.filter})
		tr.Match(tc.topic, &m)
		got := len(m.Subs) == 1
		if len(m.Subs) > 1 {
			t.Errorf("filter %q topic %q: %d matches", tc.filter, tc.topic, len(m.Subs))
		}
		if got != tc.want {
			t.Errorf("Trie filter %q topic %q = %v, want %v", tc.filter, tc.topic, got, tc.want)
		}
		if got != MatchFilter(tc.filter, tc.topic) {
			t.Errorf("Trie and MatchFilter disagree for filter %q topic %q", tc.filter, tc.topic)
		}
	}

	// The same table with every filter in one trie at once, also as shared subs.
	tr := New()
	for i, tc := range matchTable {
		id := fmt.Sprint(i)
		tr.Subscribe(Subscription{ClientID: id, Filter: tc.filter})
		tr.Subscribe(Subscription{ClientID: id, Filter: tc.filter, ShareGroup: "g"})
	}
	for _, tc := range matchTable {
		tr.Match(tc.topic, &m)
		var want []string
		for i, tc2 := range matchTable {
			if MatchFilter(tc2.filter, tc.topic) {
				want = append(want, fmt.Sprint(i), "g:"+fmt.Sprint(i))
			}
		}
		sort.Strings(want)
		if got := matchedIDs(&m); !slices.Equal(got, want) {
			t.Errorf("topic %q: got %v, want %v", tc.topic, got, want)
		}
	}
}

func TestSubscribeReplaceUnsubscribe(t *testing.T) {
	tr := New()
	if tr.Len() != 0 {
		t.Fatal("new trie not empty")
	}
	if tr.Subscribe(Subscription{ClientID: "c1", Filter: "a/b", QoS: 0}) {
		t.Error("first subscribe reported existed")
	}
	if !tr.Subscribe(Subscription{ClientID: "c1", Filter: "a/b", QoS: 2, Identifier: 7}) {
		t.Error("replace did not report existed")
	}
	if tr.Len() != 1 {
		t.Errorf("Len = %d, want 1", tr.Len())
	}
	var m Matches
	tr.Match("a/b", &m)
	if len(m.Subs) != 1 || m.Subs[0].QoS != 2 || m.Subs[0].Identifier != 7 {
		t.Fatalf("replaced subscription not visible: %+v", m.Subs)
	}

	// Same client, same filter, but shared: a distinct subscription.
	if tr.Subscribe(Subscription{ClientID: "c1", Filter: "a/b", ShareGroup: "g"}) {
		t.Error("shared subscribe reported existed")
	}
	if tr.Len() != 2 {
		t.Errorf("Len = %d, want 2", tr.Len())
	}

	// Invalid input is rejected without changing the trie.
	for _, s := range []Subscription{
		{ClientID: "x", Filter: ""},
		{ClientID: "x", Filter: "a/#/b"},
		{ClientID: "x", Filter: "a+"},
		{ClientID: "x", Filter: "a", ShareGroup: "g/h"},
		{ClientID: "x", Filter: "a", ShareGroup: "g+"},
	} {
		if tr.Subscribe(s) {
			t.Errorf("invalid %+v reported existed", s)
		}
	}
	if tr.Len() != 2 {
		t.Errorf("Len after invalid = %d, want 2", tr.Len())
	}

	// Unsubscribe of things that do not exist.
	for _, u := range [][3]string{
		{"c2", "", "a/b"},
		{"c1", "", "a"},
		{"c1", "", "a/b/c"},
		{"c1", "", "a/+"},
		{"c1", "h", "a/b"},
		{"c2", "g", "a/b"},
		{"c1", "", ""},
	} {
		if tr.Unsubscribe(u[0], u[1], u[2]) {
			t.Errorf("Unsubscribe%v reported existed", u)
		}
	}
	if !tr.Unsubscribe("c1", "", "a/b") {
		t.Error("Unsubscribe c1 a/b failed")
	}
	if tr.Unsubscribe("c1", "", "a/b") {
		t.Error("double Unsubscribe reported existed")
	}
	tr.Match("a/b", &m)
	if len(m.Subs) != 0 || len(m.Shared) != 1 {
		t.Fatalf("after unsubscribe: %+v", m)
	}
	if !tr.Unsubscribe("c1", "g", "a/b") {
		t.Error("Unsubscribe shared failed")
	}
	if tr.Len() != 0 {
		t.Errorf("Len = %d, want 0", tr.Len())
	}
	if n := countNodes(tr); n != 0 {
		t.Errorf("%d nodes left after removing everything", n)
	}
}

func TestPruning(t *testing.T) {
	tr := New()
	filters := []string{"a/b/c", "a/b", "a/+/c", "a/#", "#", "+", "/", "a//b", "x/y/z/#", "$SYS/+/q"}
	for i, f := range filters {
		tr.Subscribe(Subscription{ClientID: "c", Filter: f})
		tr.Subscribe(Subscription{ClientID: fmt.Sprint(i), Filter: f, ShareGroup: "g"})
	}
	if tr.Len() != 2*len(filters) {
		t.Fatalf("Len = %d", tr.Len())
	}
	// Removing a deep filter leaves the shorter one's nodes intact.
	tr.Unsubscribe("c", "", "a/b/c")
	tr.Unsubscribe("0", "g", "a/b/c")
	var m Matches
	tr.Match("a/b", &m)
	if got := matchedIDs(&m); !slices.Equal(got, []string{"c", "c", "c", "g:1", "g:3", "g:4"}) {
		t.Errorf("a/b matched %v", got)
	}
	before := countNodes(tr)
	tr.Unsubscribe("c", "", "x/y/z/#")
	if countNodes(tr) != before {
		t.Error("nodes pruned while a shared member remains")
	}
	tr.Unsubscribe("8", "g", "x/y/z/#")
	if got := before - countNodes(tr); got != 4 {
		t.Errorf("pruned %d nodes for x/y/z/#, want 4", got)
	}
	for i, f := range filters[1:] {
		tr.Unsubscribe("c", "", f)
		tr.Unsubscribe(fmt.Sprint(i+1), "g", f)
	}
	if tr.Len() != 0 || countNodes(tr) != 0 {
		t.Errorf("Len = %d, nodes = %d after removing everything", tr.Len(), countNodes(tr))
	}
	// The trie still works after being emptied.
	tr.Subscribe(Subscription{ClientID: "c", Filter: "a/b"})
	tr.Match("a/b", &m)
	if len(m.Subs) != 1 {
		t.Error("trie unusable after pruning")
	}
}

func TestOverlappingFiltersOneClient(t *testing.T) {
	tr := New()
	filters := []string{"a/b/c", "a/+/c", "a/#", "#", "+/+/+", "a/b/+", "a/b/c/#", "x/#"}
	for i, f := range filters {
		tr.Subscribe(Subscription{ClientID: "c", Filter: f, Identifier: uint32(i + 1)})
	}
	var m Matches
	tr.Match("a/b/c", &m)
	if len(m.Subs) != 7 {
		t.Fatalf("got %d matches, want 7: %+v", len(m.Subs), m.Subs)
	}
	var ids []uint32
	for _, s := range m.Subs {
		if s.ClientID != "c" {
			t.Errorf("unexpected client %q", s.ClientID)
		}
		if filters[s.Identifier-1] != s.Filter {
			t.Errorf("identifier %d belongs to %q, got filter %q", s.Identifier, filters[s.Identifier-1], s.Filter)
		}
		ids = append(ids, s.Identifier)
	}
	slices.Sort(ids)
	if !slices.Equal(ids, []uint32{1, 2, 3, 4, 5, 6, 7}) {
		t.Errorf("identifiers %v", ids)
	}
}

func TestSharedGroups(t *testing.T) {
	tr := New()
	for _, c := range []string{"c1", "c2", "c3"} {
		tr.Subscribe(Subscription{ClientID: c, Filter: "s/+", ShareGroup: "g1", QoS: 1})
	}
	tr.Subscribe(Subscription{ClientID: "c1", Filter: "s/+", ShareGroup: "g2"})
	tr.Subscribe(Subscription{ClientID: "c4", Filter: "s/#", ShareGroup: "g1"})
	tr.Subscribe(Subscription{ClientID: "c5", Filter: "s/x"})
	if tr.Len() != 6 {
		t.Fatalf("Len = %d, want 6", tr.Len())
	}

	var m Matches
	tr.Match("s/x", &m)
	if len(m.Subs) != 1 || m.Subs[0].ClientID != "c5" {
		t.Errorf("plain subs %+v", m.Subs)
	}
	if len(m.Shared) != 3 {
		t.Fatalf("got %d shared groups, want 3", len(m.Shared))
	}
	groups := map[string]*SharedGroup{}
	for _, g := range m.Shared {
		key := g.Group + " " + g.Filter
		if groups[key] != nil {
			t.Errorf("group %q listed twice", key)
		}
		groups[key] = g
	}
	g1 := groups["g1 s/+"]
	if g1 == nil || len(g1.Members) != 3 {
		t.Fatalf("g1 s/+ = %+v", g1)
	}
	for i, c := range []string{"c1", "c2", "c3"} {
		if g1.Members[i].ClientID != c || g1.Members[i].ShareGroup != "g1" || g1.Members[i].Filter != "s/+" {
			t.Errorf("member %d = %+v", i, g1.Members[i])
		}
	}
	if g := groups["g2 s/+"]; g == nil || len(g.Members) != 1 {
		t.Errorf("g2 s/+ = %+v", g)
	}
	if g := groups["g1 s/#"]; g == nil || len(g.Members) != 1 || g.Members[0].ClientID != "c4" {
		t.Errorf("g1 s/# = %+v", g)
	}

	// Replacing a member keeps the group size; the old snapshot is untouched.
	snapshot := slices.Clone(g1.Members)
	if !tr.Subscribe(Subscription{ClientID: "c2", Filter: "s/+", ShareGroup: "g1", QoS: 2}) {
		t.Error("replace member did not report existed")
	}
	if !slices.Equal(g1.Members, snapshot) {
		t.Error("old SharedGroup snapshot was mutated")
	}
	// Removing members.
	if !tr.Unsubscribe("c1", "g1", "s/+") {
		t.Error("unsubscribe c1 from g1 failed")
	}
	if tr.Unsubscribe("c1", "g1", "s/+") {
		t.Error("double unsubscribe reported existed")
	}
	if tr.Unsubscribe("c4", "g1", "s/+") {
		t.Error("unsubscribe of non-member reported existed")
	}
	if !slices.Equal(g1.Members, snapshot) {
		t.Error("old SharedGroup snapshot was mutated")
	}
	tr.Match("s/y", &m)
	if len(m.Subs) != 0 || len(m.Shared) != 3 {
		t.Fatalf("s/y: %+v", m)
	}
	for _, g := range m.Shared {
		if g.Group == "g1" && g.Filter == "s/+" {
			if len(g.Members) != 2 || g.Members[0].ClientID != "c2" || g.Members[0].QoS != 2 || g.Members[1].ClientID != "c3" {
				t.Errorf("g1 after changes: %+v", g.Members)
			}
		}
	}
	tr.Unsubscribe("c2", "g1", "s/+")
	tr.Unsubscribe("c3", "g1", "s/+")
	tr.Match("s/y", &m)
	if len(m.Shared) != 2 {
		t.Errorf("empty group still matched: %d groups", len(m.Shared))
	}
	tr.Unsubscribe("c1", "g2", "s/+")
	tr.Unsubscribe("c4", "g1", "s/#")
	tr.Unsubscribe("c5", "", "s/x")
	if tr.Len() != 0 || countNodes(tr) != 0 {
		t.Errorf("Len = %d, nodes = %d", tr.Len(), countNodes(tr))
	}
}

// TestManySubscribersOneFilter exercises the per-node ClientID index.
func TestManySubscribersOneFilter(t *testing.T) {
	tr := New()
	const n = 100
	for i := range n {
		tr.Subscribe(Subscription{ClientID: fmt.Sprint("c", i), Filter: "a/b"})
	}
	for i := range n {
		if !tr.Subscribe(Subscription{ClientID: fmt.Sprint("c", i), Filter: "a/b", QoS: 1}) {
			t.Fatalf("c%d not found for replace", i)
		}
	}
	var m Matches
	for i := 0; i < n; i += 2 {
		if !tr.Unsubscribe(fmt.Sprint("c", i), "", "a/b") {
			t.Fatalf("unsubscribe c%d failed", i)
		}
	}
	tr.Match("a/b", &m)
	if len(m.Subs) != n/2 {
		t.Fatalf("got %d subs, want %d", len(m.Subs), n/2)
	}
	seen := map[string]bool{}
	for _, s := range m.Subs {
		if seen[s.ClientID] || s.QoS != 1 {
			t.Errorf("bad sub %+v", s)
		}
		seen[s.ClientID] = true
	}
	for i := 1; i < n; i += 2 {
		if !seen[fmt.Sprint("c", i)] {
			t.Errorf("c%d missing", i)
		}
		if !tr.Unsubscribe(fmt.Sprint("c", i), "", "a/b") {
			t.Fatalf("unsubscribe c%d failed", i)
		}
	}
	if tr.Len() != 0 || countNodes(tr) != 0 {
		t.Errorf("Len = %d, nodes = %d", tr.Len(), countNodes(tr))
	}
}

var randLevels = []string{"a", "b", "c", "", "$SYS", "$x", "long-level-name"}

func randFilter(r *rand.Rand) string {
	n := 1 + r.IntN(4)
	parts := make([]string, n)
	for i := range parts {
		switch x := r.IntN(10); {
		case x < 2:
			parts[i] = "+"
		case x == 2 && i == n-1:
			parts[i] = "#"
		default:
			parts[i] = randLevels[r.IntN(len(randLevels))]
		}
	}
	if f := strings.Join(parts, "/"); f != "" {
		return f
	}
	return randFilter(r)
}

func randTopic(r *rand.Rand) string {
	n := 1 + r.IntN(5)
	parts := make([]string, n)
	for i := range parts {
		parts[i] = randLevels[r.IntN(len(randLevels))]
	}
	if t := strings.Join(parts, "/"); t != "" {
		return t
	}
	return randTopic(r)
}

func TestRandomAgainstMatchFilter(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	type key struct{ client, group, filter string }
	live := map[key]bool{}
	tr := New()
	for i := range 1500 {
		k := key{client: fmt.Sprint("c", r.IntN(50)), filter: randFilter(r)}
		if r.IntN(4) == 0 {
			k.group = fmt.Sprint("g", r.IntN(3))
		}
		existed := tr.Subscribe(Subscription{ClientID: k.client, ShareGroup: k.group, Filter: k.filter, Identifier: uint32(i)})
		if existed != live[k] {
			t.Fatalf("Subscribe(%+v) existed = %v, want %v", k, existed, live[k])
		}
		live[k] = true
	}
	check := func() {
		t.Helper()
		if tr.Len() != len(live) {
			t.Fatalf("Len = %d, want %d", tr.Len(), len(live))
		}
		var m Matches
		for range 400 {
			topic := randTopic(r)
			tr.Match(topic, &m)
			var got, want []string
			for _, s := range m.Subs {
				got = append(got, s.ClientID+"|"+s.Filter)
			}
			for _, g := range m.Shared {
				for _, s := range g.Members {
					if s.ShareGroup != g.Group || s.Filter != g.Filter {
						t.Fatalf("member %+v in group %q %q", s, g.Group, g.Filter)
					}
					got = append(got, s.ClientID+"|"+g.Group+"|"+s.Filter)
				}
			}
			for k := range live {
				if MatchFilter(k.filter, topic) {
					if k.group == "" {
						want = append(want, k.client+"|"+k.filter)
					} else {
						want = append(want, k.client+"|"+k.group+"|"+k.filter)
					}
				}
			}
			sort.Strings(got)
			sort.Strings(want)
			if !slices.Equal(got, want) {
				t.Fatalf("topic %q:\n got %v\nwant %v", topic, got, want)
			}
		}
	}
	check()
	// Remove about half and check again (exercises pruning paths).
	for k := range live {
		if r.IntN(2) == 0 {
			if !tr.Unsubscribe(k.client, k.group, k.filter) {
				t.Fatalf("Unsubscribe(%+v) failed", k)
			}
			delete(live, k)
		}
	}
	check()
	for k := range live {
		tr.Unsubscribe(k.client, k.group, k.filter)
		delete(live, k)
	}
	check()
	if n := countNodes(tr); n != 0 {
		t.Errorf("%d nodes left", n)
	}
}

func TestConcurrent(t *testing.T) {
	tr := New()
	filters := []string{"a/b", "a/+", "a/#", "#", "+/b", "$SYS/#", "a/b/c"}
	topics := []string{"a/b", "a/b/c", "x", "$SYS/up"}
	const workers, iters = 4, 500
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(2)
		go func() { // writer
			defer wg.Done()
			for i := range iters {
				f := filters[(i+w)%len(filters)]
				id := fmt.Sprint("w", w, "-", i%10)
				group := ""
				if i%3 == 0 {
					group = "g"
				}
				tr.Subscribe(Subscription{ClientID: id, Filter: f, ShareGroup: group})
				if i%2 == 0 {
					tr.Unsubscribe(id, group, f)
				}
			}
		}()
		go func() { // reader
			defer wg.Done()
			var m Matches
			for i := range iters {
				tr.Match(topics[(i+w)%len(topics)], &m)
				for _, s := range m.Subs {
					_ = s.ClientID
				}
				for _, g := range m.Shared {
					for _, s := range g.Members {
						_ = s.ClientID
					}
				}
				_ = tr.Len()
			}
		}()
	}
	wg.Wait()

	// Final state must agree with brute force.
	var m Matches
	for _, topic := range topics {
		tr.Match(topic, &m)
		n := len(m.Subs)
		for _, g := range m.Shared {
			n += len(g.Members)
		}
		if n > tr.Len() {
			t.Errorf("topic %q: %d matches > Len %d", topic, n, tr.Len())
		}
	}
}

func TestMatchZeroAllocs(t *testing.T) {
	if lockorder.Enabled {
		t.Skip("the lock-order checker's mutexes allocate on every lock")
	}
	tr := New()
	for i := range 200 {
		tr.Subscribe(Subscription{ClientID: fmt.Sprint("c", i), Filter: "sensors/+/temp"})
		tr.Subscribe(Subscription{ClientID: fmt.Sprint("d", i), Filter: fmt.Sprint("sensors/", i, "/#")})
		tr.Subscribe(Subscription{ClientID: fmt.Sprint("s", i), Filter: "sensors/#", ShareGroup: fmt.Sprint("g", i%5)})
	}
	tr.Subscribe(Subscription{ClientID: "all", Filter: "#"})
	var m Matches
	topics := []string{"sensors/7/temp", "sensors/150/temp/x", "other", "$SYS/x", "sensors//temp"}
	for _, topic := range topics {
		tr.Match(topic, &m) // warm the buffer
	}
	for _, topic := range topics {
		allocs := testing.AllocsPerRun(100, func() { tr.Match(topic, &m) })
		if allocs != 0 {
			t.Errorf("Match(%q) allocates %v times per run", topic, allocs)
		}
	}
	tr.Match("sensors/7/temp", &m)
	if len(m.Subs) != 202 || len(m.Shared) != 5 {
		t.Errorf("got %d subs %d groups, want 202 and 5", len(m.Subs), len(m.Shared))
	}
	m.Reset()
	if len(m.Subs) != 0 || len(m.Shared) != 0 || cap(m.Subs) == 0 {
		t.Error("Reset did not empty the buffer while keeping capacity")
	}
	tr.Match("", &m)
	if len(m.Subs) != 0 {
		t.Error("empty topic matched")
	}
}
