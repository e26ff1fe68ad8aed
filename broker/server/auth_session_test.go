package server_test

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/mqtt-operator/mqtt-operator/broker/packet"
	"github.com/mqtt-operator/mqtt-operator/broker/server"
	"github.com/mqtt-operator/mqtt-operator/broker/session"
	"github.com/mqtt-operator/mqtt-operator/broker/topic"
)

// Sessions that change hands or move keep only what their user may read, and a
// moving session is still its owner's.

func persistentCP(id, user, password string) *paho.Connect {
	cp := asUser(id, user, password)
	cp.CleanStart = false
	cp.Properties = &paho.ConnectProperties{SessionExpiryInterval: ptr(uint32(3600))}
	return cp
}

// TestAuthClaimedSessionIsRechecked: a user who claims an anonymous client's session
// gets neither its subscriptions nor its queued messages that the ACL does not let
// that user read.
func TestAuthClaimedSessionIsRechecked(t *testing.T) {
	b, _, _ := startAuthBroker(t, true, 0)
	anon, code := v5Connect(t, tcpTransport, b, persistentCP("dev", "", ""))
	if anon == nil {
		t.Fatalf("anonymous refused: 0x%02X", code)
	}
	anon.subscribe(t, 0, sub("anon/#", 1))
	_ = anon.Disconnect(&paho.Disconnect{})
	eventually(t, waitFor, "the session offline", func() bool { return b.Stats().ClientsConnected == 0 })
	pub, _ := v5Connect(t, tcpTransport, b, asUser("anon-pub", "", ""))
	pub.publish(t, msg("anon/queued", 1, "for the anonymous device"))

	bob, code := v5Connect(t, tcpTransport, b, persistentCP("dev", "bob", "bob-pw"))
	if bob == nil || !bob.Connack.SessionPresent {
		t.Fatalf("bob could not claim the anonymous session: 0x%02X", code)
	}
	bob.subscribe(t, 0, sub("bob/#", 1))
	pub.publish(t, msg("anon/live", 1, "after the claim"))
	bob.publish(t, msg("bob/sentinel", 1, "sentinel"))
	if got := bob.untilSentinel(t, "sentinel"); len(got) != 1 {
		t.Fatalf("bob received %v: the anonymous session's subscription or queue came with it", got)
	}
}

// TestAuthMovingSessionKeepsItsOwner: a session handed to another node (moving) is
// still its owner's: a kick on behalf of another user is refused and leaves it.
func TestAuthMovingSessionKeepsItsOwner(t *testing.T) {
	b, _, _ := startAuthBroker(t, false, 0)
	alice, _ := v5Connect(t, tcpTransport, b, persistentCP("meter", "alice", "alice-pw"))
	alice.subscribe(t, 0, sub("alice/#", 1))
	_ = alice.Disconnect(&paho.Disconnect{})
	eventually(t, waitFor, "alice offline", func() bool { return b.Stats().ClientsConnected == 0 })

	snap, err := b.Kick("meter", 1, true, server.Claim{Owner: "alice", Check: true}) // alice connects elsewhere
	if err != nil || snap == nil || snap.Owner != "alice" {
		t.Fatalf("alice's own kick: %+v, %v", snap, err)
	}
	if _, err := b.Kick("meter", 2, true, server.Claim{Owner: "bob", Check: true}); !errors.Is(err, server.ErrClientIDOwned) {
		t.Fatalf("bob's kick of alice's moving session: %v, want ErrClientIDOwned", err)
	}
	if _, code := v5Connect(t, tcpTransport, b, persistentCP("meter", "bob", "bob-pw")); code != 0x87 {
		t.Fatalf("bob's connect while alice's session moves: 0x%02X, want 0x87", code)
	}
	b.Unmove(*snap, 0) // alice's move failed: the session is hers here again
	back, _ := v5Connect(t, tcpTransport, b, persistentCP("meter", "alice", "alice-pw"))
	if back == nil || !back.Connack.SessionPresent {
		t.Fatal("alice lost her session")
	}
}

// TestAuthAdoptedSessionIsRechecked: a session moved here (evacuation) is judged by
// this node's rules: a subscription they refuse its owner is not installed.
func TestAuthAdoptedSessionIsRechecked(t *testing.T) {
	b, _, _ := startAuthBroker(t, false, 0)
	snap := session.Snapshot{ID: "moved", Owner: "alice", Expiry: 3600, Disconnected: time.Now(),
		Subscriptions: map[string]topic.Subscription{
			"alice/#": {ClientID: "moved", Filter: "alice/#", QoS: 1},
			"bob/#":   {ClientID: "moved", Filter: "bob/#", QoS: 1},
		}}
	if !b.AdoptSession(snap) {
		t.Fatal("session not adopted")
	}
	c, _ := v5Connect(t, tcpTransport, b, persistentCP("moved", "alice", "alice-pw"))
	if c == nil || !c.Connack.SessionPresent {
		t.Fatal("alice did not find her moved session")
	}
	bob := v5Login(t, tcpTransport, b, "bob-1", "bob")
	bob.publish(t, msg("bob/x", 1, "not for alice"))
	c.publish(t, msg("alice/sentinel", 1, "sentinel"))
	if got := c.untilSentinel(t, "sentinel"); len(got) != 1 {
		t.Fatalf("alice received %v: a refused subscription came with the moved session", got)
	}
}

// TestAuthDelayedWillJudgedWhenDue: a delayed will whose topic the rules refuse by the
// time it is due is dropped; $SYS never takes a will.
func TestAuthDelayedWillJudgedWhenDue(t *testing.T) {
	b, a, files := startAuthBroker(t, false, 0)
	watcher := v5Login(t, tcpTransport, b, "watcher", "alice")
	watcher.subscribe(t, 0, sub("alice/#", 1))
	rc := dialRaw(t, b.TCPAddr, packet.V5)
	cf := packet.ConnectFields{ProtocolVersion: packet.V5, ClientID: "dying", UsernameFlag: true, Username: "alice",
		PasswordFlag: true, Password: []byte("alice-pw"), WillFlag: true, WillQoS: 1, WillTopic: "alice/will",
		WillPayload: []byte("late will")}
	cf.WillProperties.WillDelay = 1
	cf.WillProperties.Set(packet.PropWillDelay)
	conn := &packet.Packet{Type: packet.Connect, Connect: cf}
	conn.Properties.SessionExpiry = 60
	conn.Properties.Set(packet.PropSessionExpiry)
	rc.send(conn)
	if ack := rc.expect(packet.Connack); ack.ReasonCode != 0 {
		t.Fatalf("CONNACK 0x%02X", byte(ack.ReasonCode))
	}
	// The rules change while the will waits: alice may no longer publish there.
	files.write(t, files.acl, strings.Replace(authACL, "rules:\n",
		"rules:\n  - {username: alice, topic: \"alice/will\", access: publish, action: deny}\n", 1))
	if _, err := a.Reload(); err != nil {
		t.Fatal(err)
	}
	_ = rc.conn.Close() // no DISCONNECT: the will is due after its delay
	eventually(t, waitFor, "the delayed will judged", func() bool { return a.Stats().Denied["will"] == 1 })
	watcher.publish(t, msg("alice/sentinel", 1, "sentinel"))
	if got := watcher.untilSentinel(t, "sentinel"); len(got) != 1 {
		t.Fatalf("watcher received %v: a will the rules refuse was published", got)
	}

	sys := asUser("sys-will", "alice", "alice-pw")
	sys.WillMessage = &paho.WillMessage{Topic: "$SYS/broker/version", Payload: []byte("spoofed")}
	if _, code := v5Connect(t, tcpTransport, b, sys); code != 0x87 {
		t.Fatalf("a will to $SYS: CONNACK 0x%02X, want 0x87", code)
	}
}

// TestAuthMergedCopyIsFiltered: what another copy of a session held (a copy on a node
// that was out of reach, taken in by a stale kick) is judged by the ACL of the
// session's user before it is queued: alice's session takes in a copy holding one
// message she may read and one she may not, and gets only the first. Before, the
// merged messages were queued unchecked.
func TestAuthMergedCopyIsFiltered(t *testing.T) {
	b, _, _ := startAuthBroker(t, false, 0)
	alice, _ := v5Connect(t, tcpTransport, b, persistentCP("meter-2", "alice", "alice-pw"))
	alice.subscribe(t, 0, sub("alice/#", 1))
	_ = alice.Disconnect(&paho.Disconnect{})
	eventually(t, waitFor, "alice offline", func() bool { return b.Stats().ClientsConnected == 0 })

	d := func(topic string, seq uint64) *session.Delivery {
		return &session.Delivery{QoS: 1, Msg: &session.Message{Topic: topic, QoS: 1, Payload: []byte(topic),
			ID: session.MessageID{Origin: 5, Seq: seq}}}
	}
	other := &session.Snapshot{ID: "meter-2", Owner: "alice", Queue: []*session.Delivery{d("bob/secret", 1), d("alice/readable", 2)}}
	if !b.MergeStale("meter-2", other) {
		t.Fatal("alice's session did not take in her other copy")
	}
	if b.MergeStale("meter-2", &session.Snapshot{ID: "meter-2", Owner: "bob", Queue: []*session.Delivery{d("alice/from-bob", 3)}}) {
		t.Fatal("alice's session took in bob's copy")
	}
	back, _ := v5Connect(t, tcpTransport, b, persistentCP("meter-2", "alice", "alice-pw"))
	if back == nil || !back.Connack.SessionPresent {
		t.Fatal("alice lost her session")
	}
	back.publish(t, msg("alice/sentinel", 1, "sentinel"))
	if got := back.untilSentinel(t, "sentinel"); !slices.Equal(got, []string{"alice/readable=alice/readable", "alice/sentinel=sentinel"}) {
		t.Fatalf("alice received %v, want only the merged message she may read, then the sentinel", got)
	}
}
