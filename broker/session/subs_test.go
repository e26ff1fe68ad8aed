package session

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/mqtt-operator/mqtt-operator/broker/topic"
)

// subSet against a map, through adds, replaces and removes that cross the size where
// the index is built and dropped.
func TestSubSetMatchesMap(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var set subSet
	want := map[string]topic.Subscription{}
	for step := range 20000 {
		key := fmt.Sprintf("f/%d", r.IntN(40))
		switch r.IntN(3) {
		case 0, 1:
			sub := topic.Subscription{Filter: key, QoS: byte(r.IntN(3)), Identifier: uint32(step)}
			_, existed := want[key]
			if got := set.put(key, sub); got != existed {
				t.Fatalf("step %d: put %s reported %v, want %v", step, key, got, existed)
			}
			want[key] = sub
		case 2:
			w, existed := want[key]
			got, ok := set.remove(key)
			if ok != existed || got != w {
				t.Fatalf("step %d: remove %s = %+v %v, want %+v %v", step, key, got, ok, w, existed)
			}
			delete(want, key)
		}
		if set.len() != len(want) {
			t.Fatalf("step %d: %d subscriptions, want %d", step, set.len(), len(want))
		}
		if set.index == nil && set.len() > subIndexAt {
			t.Fatalf("step %d: %d subscriptions without an index", step, set.len())
		}
		for k, w := range want {
			if got, ok := set.get(k); !ok || got != w {
				t.Fatalf("step %d: get %s = %+v %v, want %+v", step, k, got, ok, w)
			}
		}
	}
}
