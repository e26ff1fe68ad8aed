package auth

import (
	"bytes"
	"strings"
	"testing"

	"github.com/mqtt-operator/mqtt-operator/broker/topic"
)

// FuzzParseUsers: any input either fails to parse or yields users whose names are
// valid and whose check of a random password never panics.
func FuzzParseUsers(f *testing.F) {
	f.Add([]byte("alice:$2a$04$abcdefghijklmnopqrstuuN5nmgcTFxuBYjV0HGqn5.5KC1qlKqK2\n"))
	f.Add([]byte("# comment\n\nbob:$2y$10$short\n"))
	f.Add([]byte(":\n"))
	f.Add([]byte("a:b:c\n"))
	f.Add([]byte("$anonymous:$2a$04$x\n"))
	f.Add([]byte(strings.Repeat("u:x\n", 50)))
	f.Fuzz(func(t *testing.T, data []byte) {
		u, err := ParseUsers(bytes.NewReader(data))
		if err != nil {
			return
		}
		for name := range u.hashes {
			if ValidUsername(name) != nil {
				t.Fatalf("parsed an invalid username %q", name)
			}
		}
	})
}

// FuzzACL: for any rule filter and request, the decisions agree with the filter
// relations they rest on, which are checked against matching: a granted
// subscription's filter never matches a topic that a publish-style check on the same
// rule would refuse, and a denied filter really shares a topic with the deny rule.
func FuzzACL(f *testing.F) {
	for _, seed := range [][3]string{
		{"a/+/c", "a/#", "a/b/c"}, {"#", "$SYS/#", "$SYS/x"}, {"a/#", "a", "a"},
		{"+/#", "#", "x"}, {"%u/#", "alice/x", "alice/x"}, {"dev/%c/+", "dev/c1/t", "dev/c1/t"},
		{"/#", "+", "/"}, {"a//b", "a/+/b", "a//b"},
	} {
		f.Add(seed[0], seed[1], seed[2], true)
		f.Add(seed[0], seed[1], seed[2], false)
	}
	f.Fuzz(func(t *testing.T, ruleFilter, sub, pub string, allow bool) {
		if len(ruleFilter)+len(sub)+len(pub) > 512 {
			return // long inputs only slow the YAML parser down; the relations work per level
		}
		acl, err := ParseACL([]byte("default: deny\nrules:\n  - {username: '*', topic: " + quote(ruleFilter) +
			", access: all, action: " + map[bool]string{true: "allow", false: "deny"}[allow] + "}\n"))
		if err != nil {
			return
		}
		p := Principal{Username: "alice", ClientID: "c1"}
		r := acl.Rules[0]
		filter, ok := r.filterFor(p)
		if !ok || filter == "" || !topic.ValidFilter(filter) {
			return
		}
		if topic.ValidFilter(sub) {
			granted := acl.CanSubscribe(p, sub)
			if granted && !allow {
				t.Fatalf("deny-only ACL granted %q", sub)
			}
			if allow && granted && topic.ValidTopicName(pub) && topic.MatchFilter(sub, pub) && !topic.MatchFilter(filter, pub) {
				t.Fatalf("allow %q granted %q, which reads %q outside the rule", filter, sub, pub)
			}
			if !allow && !granted && topic.ValidTopicName(pub) && topic.MatchFilter(sub, pub) && topic.MatchFilter(filter, pub) && !intersects(filter, sub) {
				t.Fatalf("intersects(%q, %q) false but %q matches both", filter, sub, pub)
			}
		}
		if topic.ValidTopicName(pub) {
			if got, want := acl.CanPublish(p, pub), allow && topic.MatchFilter(filter, pub); got != want {
				t.Fatalf("publish %q under %q: got %v, want %v", pub, filter, got, want)
			}
		}
	})
}

// quote makes s a YAML single-quoted scalar.
func quote(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
