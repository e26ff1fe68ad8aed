package auth

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/mqtt-operator/mqtt-operator/broker/topic"
)

// Access is what a rule is about.
type Access uint8

// Kinds of access.
const (
	Publish Access = 1 << iota
	Subscribe
	All = Publish | Subscribe
)

func (a Access) String() string {
	switch a {
	case Publish:
		return "publish"
	case Subscribe:
		return "subscribe"
	}
	return "all"
}

// Rule is one ACL rule.
type Rule struct {
	// Username: a user, "*" for every client, or "$anonymous" for clients without a
	// username.
	Username string
	// ClientID, when set, limits the rule to that client ID.
	ClientID string
	// Topic is a topic filter; "%u" and "%c" stand for the username and client ID.
	Topic  string
	Access Access
	Allow  bool
}

// ACL is an ordered list of rules: the first rule that matches decides; Default
// decides when none does, except that it never grants a topic starting with '$'
// ($SYS is readable only where a rule says so).
type ACL struct {
	Default bool
	Rules   []Rule
	open    bool // AllowAll: every request is allowed
}

// AllowAll is the ACL of a broker without an ACL file: everything is allowed, $SYS
// and other '$' topics included (the server still refuses PUBLISH to $SYS).
var AllowAll = &ACL{Default: true, open: true}

// Anonymous is the username ACL rules use for clients that sent none.
const Anonymous = "$anonymous"

// aclFile is the YAML form of an ACL file.
type aclFile struct {
	Default string    `yaml:"default"`
	Rules   []aclRule `yaml:"rules"`
}

type aclRule struct {
	Username string `yaml:"username"`
	ClientID string `yaml:"clientid"`
	Topic    string `yaml:"topic"`
	Access   string `yaml:"access"`
	Action   string `yaml:"action"`
}

// maxACLFile bounds what ParseACL reads.
const maxACLFile = 4 << 20

// ParseACL reads an ACL file (YAML):
//
//	default: deny          # allow or deny (default: allow)
//	rules:
//	  - username: "*"      # a user, "*" or "$anonymous"
//	    clientid: ""       # optional
//	    topic: "devices/%c/#"
//	    access: all        # publish, subscribe or all
//	    action: allow      # allow or deny
//
// Unknown keys and invalid rules make the whole file invalid.
func ParseACL(data []byte) (*ACL, error) {
	if len(data) > maxACLFile {
		return nil, fmt.Errorf("ACL file larger than %d bytes", maxACLFile)
	}
	var f aclFile
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	acl := &ACL{Default: true}
	switch f.Default {
	case "", "allow":
	case "deny":
		acl.Default = false
	default:
		return nil, fmt.Errorf("default: %q is not allow or deny", f.Default)
	}
	for i, r := range f.Rules {
		rule, err := r.rule()
		if err != nil {
			return nil, fmt.Errorf("rule %d: %w", i+1, err)
		}
		acl.Rules = append(acl.Rules, rule)
	}
	return acl, nil
}

func (r aclRule) rule() (Rule, error) {
	out := Rule{Username: r.Username, ClientID: r.ClientID, Topic: r.Topic}
	if r.Username != "*" && r.Username != Anonymous {
		if err := ValidUsername(r.Username); err != nil {
			return Rule{}, err
		}
	}
	// Placeholders are replaced by a level's worth of text, so the filter is checked
	// with a plain level in their place.
	probe := strings.NewReplacer("%u", "u", "%c", "c").Replace(r.Topic)
	if !topic.ValidFilter(probe) || strings.HasPrefix(r.Topic, "$share/") {
		return Rule{}, fmt.Errorf("topic %q is not a valid topic filter", r.Topic)
	}
	switch r.Access {
	case "publish":
		out.Access = Publish
	case "subscribe":
		out.Access = Subscribe
	case "all":
		out.Access = All
	default:
		return Rule{}, fmt.Errorf("access %q is not publish, subscribe or all", r.Access)
	}
	switch r.Action {
	case "allow":
		out.Allow = true
	case "deny":
	default:
		return Rule{}, fmt.Errorf("action %q is not allow or deny", r.Action)
	}
	return out, nil
}

// Principal is who a client is, as the ACL sees it.
type Principal struct {
	Username  string // "" when Anonymous
	Anonymous bool
	ClientID  string
}

// CanPublish decides a PUBLISH of p to topic name t.
func (a *ACL) CanPublish(p Principal, t string) bool {
	return a.decide(p, Publish, t)
}

// CanSubscribe decides a subscription of p to filter f (a shared subscription's filter
// without "$share/group/"). An allow rule decides only when its filter covers all of
// f; a deny rule as soon as the two share a topic. So a granted subscription never
// receives a message the ACL would refuse p to read: a SUBSCRIBE to "a/#" is refused
// when an earlier rule denies "a/secret", and a rule allowing "a/+" does not grant
// "a/#".
func (a *ACL) CanSubscribe(p Principal, f string) bool {
	return a.decide(p, Subscribe, f)
}

func (a *ACL) decide(p Principal, access Access, name string) bool {
	if a.open {
		return true
	}
	for i := range a.Rules {
		r := &a.Rules[i]
		if r.Access&access == 0 || !r.appliesTo(p) {
			continue
		}
		filter, ok := r.filterFor(p)
		if !ok {
			// A placeholder whose value would change the filter's shape grants
			// nothing, and denies everything: what it would cover is unknown.
			if r.Allow {
				continue
			}
			return false
		}
		if filter == "" {
			continue // %u for an anonymous client: the rule is about users' own topics
		}
		var match bool
		switch {
		case access == Publish:
			match = topic.MatchFilter(filter, name)
		case r.Allow:
			match = covers(filter, name)
		default:
			match = intersects(filter, name)
		}
		if match {
			return r.Allow
		}
	}
	return a.Default && !strings.HasPrefix(name, "$")
}

func (r *Rule) appliesTo(p Principal) bool {
	if r.ClientID != "" && r.ClientID != p.ClientID {
		return false
	}
	switch r.Username {
	case "*":
		return true
	case Anonymous:
		return p.Anonymous
	}
	return !p.Anonymous && r.Username == p.Username
}

// filterFor fills in %u and %c. A value that is empty, starts with '$' or holds '/',
// '+', '#' or NUL would change the filter's shape (a client ID "#" must not match
// everything, "$SYS" must not open $SYS): then it reports false. A rule with %u has no filter ("", true) for an anonymous client.
func (r *Rule) filterFor(p Principal) (string, bool) {
	if !strings.Contains(r.Topic, "%") {
		return r.Topic, true
	}
	// A leading '$' would let a rule such as "%c/#" reach $SYS.
	safe := func(v string) bool { return v != "" && v[0] != '$' && !strings.ContainsAny(v, "/+#\x00") }
	if strings.Contains(r.Topic, "%u") {
		if p.Anonymous {
			return "", true
		}
		if !safe(p.Username) {
			return "", false
		}
	}
	if strings.Contains(r.Topic, "%c") && !safe(p.ClientID) {
		return "", false
	}
	return strings.NewReplacer("%u", p.Username, "%c", p.ClientID).Replace(r.Topic), true
}
