package auth

import (
	"strings"
	"testing"
)

const testACL = `
default: deny
rules:
  - {username: admin, topic: "#", access: all, action: allow}
  - {username: admin, topic: "$SYS/#", access: subscribe, action: allow}
  - {username: "*", topic: "secret/#", access: all, action: deny}
  - {username: "*", topic: "users/%u/#", access: all, action: allow}
  - {username: "*", clientid: sensor-1, topic: "sensors/1", access: publish, action: allow}
  - {username: "*", topic: "devices/%c/state", access: publish, action: allow}
  - {username: "$anonymous", topic: "public/#", access: subscribe, action: allow}
  - {username: alice, topic: "a/b", access: subscribe, action: deny}
  - {username: alice, topic: "a/+", access: subscribe, action: allow}
  - {username: alice, topic: "news/#", access: subscribe, action: allow}
  - {username: alice, topic: "news/#", access: publish, action: deny}
`

func TestACLDecisions(t *testing.T) {
	acl, err := ParseACL([]byte(testACL))
	if err != nil {
		t.Fatal(err)
	}
	alice := Principal{Username: "alice", ClientID: "c1"}
	bob := Principal{Username: "bob", ClientID: "sensor-1"}
	anon := Principal{Anonymous: true, ClientID: "anon-1"}
	admin := Principal{Username: "admin", ClientID: "x"}
	cases := []struct {
		name   string
		p      Principal
		access Access
		topic  string
		want   bool
	}{
		{"admin publishes anywhere", admin, Publish, "secret/x", true},
		{"admin reads $SYS", admin, Subscribe, "$SYS/broker/uptime", true},
		{"admin's # does not grant $SYS publish", admin, Publish, "$SYS/x", false},
		{"deny secret for users", alice, Publish, "secret/x", false},
		{"deny secret subscription through a wider filter", alice, Subscribe, "users/alice/#", true},
		{"own user tree", alice, Publish, "users/alice/x", true},
		{"another user's tree", alice, Publish, "users/bob/x", false},
		{"anonymous has no user tree", anon, Publish, "users//x", false},
		{"client ID rule", bob, Publish, "sensors/1", true},
		{"client ID rule for another client", alice, Publish, "sensors/1", false},
		{"%c rule", bob, Publish, "devices/sensor-1/state", true},
		{"%c rule for another client", bob, Publish, "devices/sensor-2/state", false},
		{"anonymous reads public", anon, Subscribe, "public/#", true},
		{"anonymous may not publish public", anon, Publish, "public/x", false},
		{"users are not anonymous", alice, Subscribe, "public/x", false},
		{"deny a/b then allow a/+: a/c granted", alice, Subscribe, "a/c", true},
		{"deny a/b then allow a/+: a/b refused", alice, Subscribe, "a/b", false},
		{"deny a/b then allow a/+: a/+ refused (it reads a/b)", alice, Subscribe, "a/+", false},
		{"a/# refused: it reads a/b", alice, Subscribe, "a/#", false},
		{"allow news/# covers news/+", alice, Subscribe, "news/+", true},
		{"# is wider than news/#: refused by default", alice, Subscribe, "#", false},
		{"subscribe-only rule does not grant publish", alice, Publish, "news/x", false},
		{"default deny", bob, Subscribe, "other", false},
		{"secret refused even in a wildcard subscription", bob, Subscribe, "+/x", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var got bool
			if tc.access == Publish {
				got = acl.CanPublish(tc.p, tc.topic)
			} else {
				got = acl.CanSubscribe(tc.p, tc.topic)
			}
			if got != tc.want {
				t.Errorf("%s %s %q = %v, want %v", tc.p.Username, tc.access, tc.topic, got, tc.want)
			}
		})
	}
}

func TestACLDefaultNeverGrantsDollarTopics(t *testing.T) {
	acl, err := ParseACL([]byte("default: allow\n"))
	if err != nil {
		t.Fatal(err)
	}
	p := Principal{Username: "u", ClientID: "c"}
	if acl.CanSubscribe(p, "$SYS/#") || acl.CanSubscribe(p, "$SYS/broker/uptime") {
		t.Error("the default granted $SYS")
	}
	if !acl.CanSubscribe(p, "#") || !acl.CanPublish(p, "x/y") {
		t.Error("the default allow did not grant ordinary topics")
	}
	if !AllowAll.CanSubscribe(p, "$SYS/#") {
		t.Error("a broker without ACL file must let clients read $SYS")
	}
}

// TestACLPlaceholderValues: a client ID or username that would change a filter's
// shape never widens an allow rule and makes a deny rule refuse everything.
func TestACLPlaceholderValues(t *testing.T) {
	acl, err := ParseACL([]byte(`
rules:
  - {username: "*", topic: "devices/%c/#", access: all, action: allow}
  - {username: "*", topic: "private/%c/#", access: all, action: deny}
default: deny
`))
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"#", "+", "a/b", "x\x00"} {
		p := Principal{Username: "u", ClientID: id}
		if acl.CanSubscribe(p, "devices/#") || acl.CanPublish(p, "devices/a/b") || acl.CanPublish(p, "devices/x") {
			t.Errorf("client ID %q widened an allow rule", id)
		}
	}
	ok := Principal{Username: "u", ClientID: "dev1"}
	if !acl.CanPublish(ok, "devices/dev1/t") || acl.CanPublish(ok, "private/dev1/t") {
		t.Error("plain client ID not substituted")
	}
}

func TestParseACLErrors(t *testing.T) {
	cases := map[string]string{
		"bad default":     "default: maybe\n",
		"bad access":      "rules:\n  - {username: u, topic: a, access: read, action: allow}\n",
		"bad action":      "rules:\n  - {username: u, topic: a, access: all, action: permit}\n",
		"bad filter":      "rules:\n  - {username: u, topic: 'a/#/b', access: all, action: allow}\n",
		"empty filter":    "rules:\n  - {username: u, topic: '', access: all, action: allow}\n",
		"shared filter":   "rules:\n  - {username: u, topic: '$share/g/a', access: all, action: allow}\n",
		"unknown key":     "rules:\n  - {username: u, topic: a, access: all, action: allow, qos: 1}\n",
		"reserved user":   "rules:\n  - {username: '$admin', topic: a, access: all, action: allow}\n",
		"empty user":      "rules:\n  - {username: '', topic: a, access: all, action: allow}\n",
		"not yaml":        "rules: [\n",
		"top-level typo":  "rulez: []\n",
		"rules not list":  "rules: {}\n",
		"placeholder mid": "rules:\n  - {username: u, topic: 'a%u/#/x', access: all, action: allow}\n",
	}
	for name, body := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := ParseACL([]byte(body)); err == nil {
				t.Errorf("ParseACL(%q) accepted it", body)
			}
		})
	}
	if _, err := ParseACL([]byte(strings.Repeat("#", maxACLFile+1))); err == nil {
		t.Error("oversized ACL file accepted")
	}
}

// TestACLDollarValues: a client ID or username starting with '$' never opens '$'
// topics through a placeholder, and a broker without ACL file allows every topic.
func TestACLDollarValues(t *testing.T) {
	acl, err := ParseACL([]byte("rules:\n  - {username: \"*\", topic: \"%c/#\", access: all, action: allow}\ndefault: deny\n"))
	if err != nil {
		t.Fatal(err)
	}
	p := Principal{Username: "u", ClientID: "$SYS"}
	if acl.CanSubscribe(p, "$SYS/#") || acl.CanPublish(p, "$SYS/broker/version") {
		t.Error("client ID $SYS opened $SYS through the client ID placeholder")
	}
	anon := Principal{Anonymous: true, ClientID: "c"}
	for _, tp := range []string{"$aws/things/x", "$SYS/broker/uptime", "a/b"} {
		if !AllowAll.CanPublish(anon, tp) || !AllowAll.CanSubscribe(anon, tp) {
			t.Errorf("without an ACL file %q is refused", tp)
		}
	}
}
