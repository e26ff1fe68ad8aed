package server_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mqtt-operator/mqtt-operator/broker/packet"
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

// TestAuthSubscribeRacingReloads: SUBSCRIBEs race with reloads that alternately allow
// and refuse the filter. After every reload to the refusing rules (and the SUBSCRIBE
// in flight at that moment answered), no subscription to the filter survives,
// whichever way the race went: a SUBSCRIBE judged by the old rules either is seen by
// the reload's re-check or judges itself again.
func TestAuthSubscribeRacingReloads(t *testing.T) {
	b, a, files := startAuthBroker(t, false, 0)
	allow := authACL
	refuse := strings.Replace(authACL, "rules:\n", "rules:\n  - {username: alice, topic: \"alice/race\", access: subscribe, action: deny}\n", 1)
	rc := dialRaw(t, b.TCPAddr, packet.V5)
	rc.send(&packet.Packet{Type: packet.Connect, Connect: packet.ConnectFields{ProtocolVersion: packet.V5, CleanStart: true,
		ClientID: "racer", UsernameFlag: true, Username: "alice", PasswordFlag: true, Password: []byte("alice-pw")}})
	if ack := rc.expect(packet.Connack); ack.ReasonCode != 0 {
		t.Fatalf("CONNACK 0x%02X", byte(ack.ReasonCode))
	}
	const transitions = 150
	reloaded := make(chan struct{}) // a reload to the refusing rules is done
	checked := make(chan struct{})  // the subscriber answered its SUBSCRIBE in flight
	stop := make(chan struct{})     // the test ended early: the reloader must not block
	defer close(stop)
	go func() {
		defer close(reloaded)
		for i := range transitions {
			for _, body := range []string{allow, refuse} {
				files.write(t, files.acl, body)
				if _, err := a.Reload(); err != nil {
					t.Errorf("reload %d: %v", i, err)
					return
				}
			}
			select {
			case reloaded <- struct{}{}:
			case <-stop:
				return
			}
			select {
			case <-checked:
			case <-stop:
				return
			}
		}
	}()
	granted, leftovers := 0, 0
	id := uint16(0)
	for {
		select {
		case _, ok := <-reloaded:
			if !ok {
				if t.Failed() {
					return
				}
				t.Logf("%d SUBSCRIBEs granted while %d reloads raced them", granted, 2*transitions)
				if leftovers > 0 {
					t.Fatalf("a subscription the rules in force refuse survived %d of %d reloads", leftovers, transitions)
				}
				return
			}
			// The SUBSCRIBE that raced this reload is answered (the loop below sends
			// one at a time), so the rules' verdict must stand now.
			if b.Stats().Subscriptions != 0 {
				leftovers++
				id++
				rc.send(&packet.Packet{Type: packet.Unsubscribe, PacketID: id, Filters: []string{"alice/race"}})
				rc.expect(packet.Unsuback)
			}
			checked <- struct{}{}
		default:
			id++
			rawSubscribeCode(t, rc, id, "alice/race", &granted)
		}
	}
}

// rawSubscribeCode sends one SUBSCRIBE and counts it in granted when its SUBACK
// grants it.
func rawSubscribeCode(t *testing.T, rc *rawClient, id uint16, filter string, granted *int) {
	t.Helper()
	rc.send(&packet.Packet{Type: packet.Subscribe, PacketID: id, Subscriptions: []packet.Subscription{{Filter: filter, QoS: 1}}})
	ack := rc.expect(packet.Suback)
	if len(ack.ReasonCodes) == 1 && ack.ReasonCodes[0] == 1 {
		*granted++
	}
}
