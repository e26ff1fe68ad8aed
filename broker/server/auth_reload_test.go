package server_test

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// reloadEvery is how often the reload test's broker polls its files.
const reloadEvery = 100 * time.Millisecond

// TestAuthReload changes the users file and the ACL while 100 clients are connected:
// nobody is disconnected, a new user gets in and the new rules decide the next
// operations within the reload interval, subscriptions the new ACL refuses are
// revoked, and a broken file keeps the rules in force.
func TestAuthReload(t *testing.T) {
	b, a, files := startAuthBroker(t, false, reloadEvery)
	const n = 100
	clients := make([]*v5Client, n)
	for i := range clients {
		clients[i] = v5Login(t, tcpTransport, b, fmt.Sprintf("alice-%03d", i), "alice")
		clients[i].subscribe(t, 0, sub("alice/#", 1))
	}
	bob := v5Login(t, tcpTransport, b, "bob", "bob")
	if _, code := v5Connect(t, tcpTransport, b, asUser("carol-1", "carol", "carol-pw")); code != 0x86 {
		t.Fatalf("carol before she exists: 0x%02X, want 0x86", code)
	}

	// New users file (carol added, alice's password unchanged) and a new ACL: alice
	// loses alice/secret/#, carol gets carol/#, bob may publish anywhere under alice/.
	passwords := map[string]string{"carol": "carol-pw"}
	for k, v := range testPasswords {
		passwords[k] = v
	}
	newACL := strings.Replace(authACL, "rules:\n", "rules:\n"+
		"  - {username: alice, topic: \"alice/secret/#\", access: all, action: deny}\n"+
		"  - {username: carol, topic: \"carol/#\", access: all, action: allow}\n"+
		"  - {username: bob, topic: \"alice/#\", access: publish, action: allow}\n", 1)
	changedAt := time.Now()
	files.write(t, files.users, usersFile(t, passwords))
	files.write(t, files.acl, newACL)

	var carol *v5Client
	eventually(t, 10*reloadEvery+5*time.Second, "carol let in by the reloaded users file", func() bool {
		carol, _ = v5Connect(t, tcpTransport, b, asUser(fmt.Sprintf("carol-%d", time.Now().UnixNano()), "carol", "carol-pw"))
		return carol != nil
	})
	t.Logf("new rules in force %v after the files changed (reload interval %v)", time.Since(changedAt).Round(time.Millisecond), reloadEvery)
	if got := carol.trySubscribe(t, sub("carol/#", 1), sub("alice/#", 1)); string(got) != string([]byte{1, 0x87}) {
		t.Fatalf("carol's SUBACK = % x, want 01 87", got)
	}
	// The existing alice/# subscriptions read alice/secret/..., which is now refused:
	// revoked, while the connections stay.
	eventually(t, waitFor, "alice's subscriptions revoked", func() bool { return a.Stats().RevokedSubscriptions == n })
	if got := clients[0].trySubscribe(t, sub("alice/secret/x", 1), sub("alice/public", 1)); string(got) != string([]byte{0x87, 1}) {
		t.Fatalf("alice's SUBACK after the reload = % x, want 87 01", got)
	}
	if code := bob.publishCode(t, msg("alice/public", 1, "now allowed")); code != 0 {
		t.Fatalf("bob's publish allowed by the new ACL: PUBACK 0x%02X", code)
	}
	if p := clients[0].next(t); string(p.Payload) != "now allowed" {
		t.Fatalf("alice-000 got %q", p.Payload)
	}
	if got := b.Stats().ClientsConnected; got != n+2 {
		t.Fatalf("%d clients connected after the reload, want %d: a reload disconnected someone", got, n+2)
	}
	for _, c := range clients {
		select {
		case d := <-c.serverDisconnect:
			t.Fatalf("%s got DISCONNECT 0x%02X", c.ClientID(), d.ReasonCode)
		default:
		}
	}

	// A broken ACL file keeps the rules in force.
	errorsBefore := a.Stats().ReloadErrors
	files.write(t, files.acl, "rules: [this is not yaml\n")
	eventually(t, 10*reloadEvery+5*time.Second, "the broken file noticed", func() bool { return a.Stats().ReloadErrors > errorsBefore })
	if got := carol.trySubscribe(t, sub("carol/x", 1)); got[0] != 1 {
		t.Fatalf("after a broken ACL file carol's SUBACK = 0x%02X, want the old rules (granted)", got[0])
	}
	if got := b.Stats().ClientsConnected; got != n+2 {
		t.Fatalf("%d clients connected after a broken file, want %d", got, n+2)
	}
}
