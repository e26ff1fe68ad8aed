package auth

import (
	"strings"
	"testing"

	"github.com/mqtt-operator/mqtt-operator/broker/topic"
)

// universe is every topic of up to four levels over levels.
func universe(levels []string) []string {
	var out []string
	var grow func(prefix []string)
	grow = func(prefix []string) {
		if len(prefix) > 0 {
			out = append(out, strings.Join(prefix, "/"))
		}
		if len(prefix) == 4 {
			return
		}
		for _, l := range levels {
			grow(append(prefix, l))
		}
	}
	grow(nil)
	return out
}

// filters is every valid filter of up to three levels over levels and the wildcards.
func filters(levels []string) []string {
	var out []string
	var grow func(prefix []string)
	grow = func(prefix []string) {
		if len(prefix) > 0 {
			if f := strings.Join(prefix, "/"); topic.ValidFilter(f) {
				out = append(out, f)
			}
		}
		if len(prefix) == 3 {
			return
		}
		for _, l := range levels {
			grow(append(prefix, l))
		}
	}
	grow(nil)
	return out
}

// TestFilterRelationsAgainstMatching checks covers and intersects against their
// definitions, topic by topic, for every pair of small filters: covers(r, s) iff each
// topic s matches is matched by r; intersects(a, b) iff some topic matches both.
// Topics deeper than the universe are covered by the '#' cases of the definitions.
// With empty levels, where the empty topic (which does not exist) makes a few pairs
// degenerate ("/#" against "+"), the relations must still be safe: covers never
// claims more, intersects never less, than the truth.
func TestFilterRelationsAgainstMatching(t *testing.T) {
	for _, tc := range []struct {
		name   string
		levels []string
		exact  bool
	}{
		{"exact", []string{"a", "b", "$s"}, true},
		{"safe with empty levels", []string{"a", "", "$s"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkRelations(t, universe(tc.levels), filters(append(tc.levels, "+", "#")), tc.exact)
		})
	}
}

func checkRelations(t *testing.T, topics, fs []string, exact bool) {
	match := make(map[string][]bool, len(fs))
	for _, f := range fs {
		m := make([]bool, len(topics))
		for i, tp := range topics {
			m[i] = topic.MatchFilter(f, tp)
		}
		match[f] = m
	}
	for _, r := range fs {
		for _, s := range fs {
			wantCovers, wantMeet := true, false
			for i := range topics {
				if match[s][i] && !match[r][i] {
					wantCovers = false
				}
				if match[s][i] && match[r][i] {
					wantMeet = true
				}
			}
			gotCovers, gotMeet := covers(r, s), intersects(r, s)
			if gotCovers && !wantCovers || exact && gotCovers != wantCovers {
				t.Errorf("covers(%q, %q) = %v, want %v", r, s, gotCovers, wantCovers)
			}
			if !gotMeet && wantMeet || exact && gotMeet != wantMeet {
				t.Errorf("intersects(%q, %q) = %v, want %v", r, s, gotMeet, wantMeet)
			}
		}
	}
}
