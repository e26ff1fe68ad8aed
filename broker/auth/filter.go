package auth

import "strings"

// The ACL decides a SUBSCRIBE by comparing two filters: the rule's and the client's.
// Both relations follow the MQTT matching rules, including that a filter starting with
// a wildcard matches no topic starting with '$' (MQTT-4.7.2-1) and that "a/#" also
// matches "a" (MQTT-4.7.1-2).

// covers reports whether every topic that sub matches is matched by rule.
func covers(rule, sub string) bool {
	r, s := strings.Split(rule, "/"), strings.Split(sub, "/")
	for i := 0; ; i++ {
		if i < len(r) && r[i] == "#" {
			return i != 0 || i == len(s) || !isDollar(s[i])
		}
		if i == len(s) || i == len(r) {
			return i == len(s) && i == len(r)
		}
		switch {
		case s[i] == "#":
			// sub also matches its parent level, which a rule of more levels misses;
			// at level 0 that parent is the empty topic, which does not exist, so
			// "+/#" covers "#".
			return i == 0 && r[i] == "+" && len(r) == 2 && r[1] == "#"
		case r[i] == "+":
			if i == 0 && isDollar(s[i]) {
				return false
			}
		case s[i] == "+" || r[i] != s[i]:
			return false
		}
	}
}

// intersects reports whether some topic is matched by both filters.
func intersects(a, b string) bool {
	x, y := strings.Split(a, "/"), strings.Split(b, "/")
	for i := 0; ; i++ {
		switch {
		case i == len(x) && i == len(y):
			return true
		case i == len(x):
			return y[i] == "#" // "b/#" also matches the parent level that a ends at
		case i == len(y):
			return x[i] == "#"
		}
		p, q := x[i], y[i]
		if p == "#" || q == "#" {
			// The '#' side matches any continuation; the other side's remaining
			// levels match some topic. Only '$' at level 0 can make them disjoint.
			return i != 0 || (!isWild(p) || !isDollar(q)) && (!isWild(q) || !isDollar(p))
		}
		switch {
		case p == "+" && q == "+":
		case p == "+":
			if i == 0 && isDollar(q) {
				return false
			}
		case q == "+":
			if i == 0 && isDollar(p) {
				return false
			}
		case p != q:
			return false
		}
	}
}

func isWild(level string) bool   { return level == "+" || level == "#" }
func isDollar(level string) bool { return strings.HasPrefix(level, "$") }
