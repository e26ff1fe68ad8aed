package topic

import (
	"fmt"
	"testing"
)

// benchSubs is the number of subscriptions in the benchmark trie.
const benchSubs = 10000

// benchTrie builds a trie of benchSubs subscriptions with a realistic mix of exact,
// '+' and '#' filters over a sensors/{building}/{floor}/{room}/{metric} tree.
func benchTrie() *Trie {
	tr := New()
	metrics := []string{"temperature", "humidity", "co2", "occupancy"}
	for i := range benchSubs {
		// Coordinates are drawn independently of the filter kind so that a
		// given topic is matched by a mix of exact and wildcard filters.
		b, f, r, mt := i%20, (i/20)%10, (i/200)%5, metrics[(i/7)%len(metrics)]
		var filter string
		switch (i / 3) % 10 {
		case 0, 1, 2, 3, 4, 5: // exact
			filter = fmt.Sprintf("sensors/b%d/f%d/r%d/%s", b, f, r, mt)
		case 6: // single-level wildcards
			filter = fmt.Sprintf("sensors/b%d/+/r%d/%s", b, r, mt)
		case 7:
			filter = fmt.Sprintf("sensors/+/f%d/+/%s", f, mt)
		case 8: // multi-level wildcards
			filter = fmt.Sprintf("sensors/b%d/f%d/#", b, f)
		case 9: // other trees
			filter = fmt.Sprintf("devices/d%d/status", i)
		}
		s := Subscription{ClientID: fmt.Sprint("client-", i), Filter: filter, QoS: byte(i % 3)}
		if i%50 == 0 {
			s.ShareGroup = fmt.Sprint("workers", i%3)
		}
		tr.Subscribe(s)
	}
	tr.Subscribe(Subscription{ClientID: "monitor", Filter: "#"})
	tr.Subscribe(Subscription{ClientID: "sys", Filter: "$SYS/#"})
	return tr
}

const benchTopic = "sensors/b3/f5/r2/temperature"

func BenchmarkMatch(b *testing.B) {
	tr := benchTrie()
	var m Matches
	tr.Match(benchTopic, &m)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		tr.Match(benchTopic, &m)
	}
	b.ReportMetric(float64(len(m.Subs)+len(m.Shared)), "matches/op")
}

func BenchmarkMatchParallel(b *testing.B) {
	tr := benchTrie()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		var m Matches
		tr.Match(benchTopic, &m)
		for pb.Next() {
			tr.Match(benchTopic, &m)
		}
	})
}

func BenchmarkMatchFilter(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		MatchFilter("sensors/+/f5/#", benchTopic)
	}
}

func BenchmarkSubscribe(b *testing.B) {
	tr := benchTrie()
	subs := make([]Subscription, 4096)
	for i := range subs {
		subs[i] = Subscription{ClientID: fmt.Sprint("bench-", i), Filter: fmt.Sprintf("sensors/b%d/+/r%d/humidity", i%20, i%64)}
	}
	b.ReportAllocs()
	b.ResetTimer()
	i := 0
	for b.Loop() {
		tr.Subscribe(subs[i%len(subs)])
		i++
	}
}

func BenchmarkSubscribeUnsubscribe(b *testing.B) {
	tr := benchTrie()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		tr.Subscribe(Subscription{ClientID: "x", Filter: "sensors/new/level/#"})
		tr.Unsubscribe("x", "", "sensors/new/level/#")
	}
}
