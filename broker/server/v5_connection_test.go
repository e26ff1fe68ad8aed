package server_test

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/mqtt-operator/mqtt-operator/broker/packet"
	"github.com/mqtt-operator/mqtt-operator/broker/server"
)

// --- 10. Assigned client identifier ---

func TestV5AssignedClientID(t *testing.T) {
	t.Parallel()
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			t.Parallel()
			b := startBroker(t, server.Options{})
			persistent := &paho.ConnectProperties{SessionExpiryInterval: ptr[uint32](30)}
			c := tr.connect(t, b, &paho.Connect{CleanStart: true, Properties: persistent})
			id := c.Connack.Properties.AssignedClientID
			if id == "" {
				t.Fatal("CONNACK for an empty client ID carries no Assigned Client Identifier")
			}
			other := tr.connect(t, b, &paho.Connect{CleanStart: true})
			if oid := other.Connack.Properties.AssignedClientID; oid == "" || oid == id {
				t.Fatalf("second assigned ID %q, want a different non-empty one than %q", oid, id)
			}

			c.subscribe(t, 0, sub("aid/t", 1))
			// QoS 0, so that no acknowledgement is pending when the client disconnects.
			c.publish(t, msg("aid/t", 0, "hello"))
			if p := c.nextPayload(t); p != "hello" {
				t.Fatalf("got %q", p)
			}
			if err := c.Disconnect(&paho.Disconnect{}); err != nil {
				t.Fatal(err)
			}
			// The assigned ID names the session: reconnecting with it resumes it.
			again := tr.connect(t, b, &paho.Connect{ClientID: id, CleanStart: false, Properties: persistent})
			if !again.Connack.SessionPresent {
				t.Fatalf("no session present for assigned ID %q", id)
			}
			other.publish(t, msg("aid/t", 1, "resumed"))
			if p := again.nextPayload(t); p != "resumed" {
				t.Fatalf("got %q, want resumed", p)
			}
		})
	}
}

// --- 11. Keepalive ---

func TestV5ServerKeepAlive(t *testing.T) {
	t.Parallel()
	cases := []struct {
		asked uint16
		want  *uint16 // nil: the client's value stands (absent, or equal to asked)
	}{
		{60, ptr[uint16](2)},
		{0, ptr[uint16](2)},
		{1, nil},
	}
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			t.Parallel()
			b := startBroker(t, server.Options{MaxKeepAlive: 2})
			for _, tc := range cases {
				c := tr.connect(t, b, &paho.Connect{ClientID: "ka-" + strconv.Itoa(int(tc.asked)), CleanStart: true, KeepAlive: tc.asked})
				got := c.Connack.Properties.ServerKeepAlive
				switch {
				case tc.want != nil && (got == nil || *got != *tc.want):
					t.Errorf("asked %d: Server Keep Alive %v, want %d", tc.asked, got, *tc.want)
				case tc.want == nil && got != nil && *got != tc.asked:
					t.Errorf("asked %d (within the maximum): Server Keep Alive %d", tc.asked, *got)
				}
			}
		})
	}
}

func TestV5KeepAliveTimeout(t *testing.T) {
	t.Parallel()
	t.Run("silent client is disconnected", func(t *testing.T) {
		t.Parallel()
		b := startBroker(t, server.Options{MaxKeepAlive: 2})
		rc, _ := connectRaw(t, b, "ka-silent", 1, nil)
		start := time.Now()
		expectServerDisconnect(t, rc, packet.KeepAliveTimeout, 3*time.Second)
		if d := time.Since(start); d < 1400*time.Millisecond {
			t.Fatalf("disconnected after %v, before 1.5 times the keepalive", d)
		}
	})
	t.Run("pinging client stays connected", func(t *testing.T) {
		t.Parallel()
		b := startBroker(t, server.Options{MaxKeepAlive: 2})
		rc, _ := connectRaw(t, b, "ka-ping", 1, nil)
		start := time.Now()
		for time.Since(start) < 2500*time.Millisecond { // well past 1.5 times the keepalive
			expectQuiet(t, rc, 500*time.Millisecond)
			rc.send(&packet.Packet{Type: packet.Pingreq})
			rc.expect(packet.Pingresp)
		}
	})
}

// --- 12. Maximum packet size ---

func TestV5MaximumPacketSizeServer(t *testing.T) {
	t.Parallel()
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			t.Parallel()
			b := startBroker(t, server.Options{MaxPacketSize: 1024})
			c := tr.connect(t, b, &paho.Connect{ClientID: "mps", CleanStart: true})
			if got := c.Connack.Properties.MaximumPacketSize; got == nil || *got != 1024 {
				t.Fatalf("CONNACK Maximum Packet Size %v, want 1024", got)
			}
		})
	}
	cases := []struct {
		size      int
		tooLarge  bool
		wantAckRC packet.Code
	}{
		{1024, false, packet.NoMatchingSubscribers},
		{1025, true, 0},
		{2000, true, 0},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprintf("publish of %d bytes", tc.size), func(t *testing.T) {
			t.Parallel()
			b := startBroker(t, server.Options{MaxPacketSize: 1024})
			rc, ack := connectRaw(t, b, "mps-raw", 0, nil)
			if ack.Properties.MaximumPacketSize != 1024 {
				t.Fatalf("CONNACK Maximum Packet Size %d, want 1024", ack.Properties.MaximumPacketSize)
			}
			p := &packet.Packet{Type: packet.Publish, QoS: 1, PacketID: 1, Topic: "big"}
			p.Payload = make([]byte, tc.size-p.Size(packet.V5))
			for p.Size(packet.V5) > tc.size { // the remaining length grew a byte
				p.Payload = p.Payload[1:]
			}
			if p.Size(packet.V5) != tc.size {
				t.Fatalf("built a %d-byte packet, want %d", p.Size(packet.V5), tc.size)
			}
			rc.send(p)
			if tc.tooLarge {
				expectServerDisconnect(t, rc, packet.PacketTooLarge, waitFor)
				return
			}
			if got := rc.expect(packet.Puback); got.ReasonCode != tc.wantAckRC {
				t.Fatalf("PUBACK 0x%02X, want 0x%02X", byte(got.ReasonCode), byte(tc.wantAckRC))
			}
		})
	}
}

func TestV5MaximumPacketSizeClient(t *testing.T) {
	t.Parallel()
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			t.Parallel()
			b := startBroker(t, server.Options{})
			small := tr.connect(t, b, &paho.Connect{ClientID: "mps-client", CleanStart: true,
				Properties: &paho.ConnectProperties{MaximumPacketSize: ptr[uint32](200)}})
			small.subscribe(t, 0, sub("mpc/t", 1))
			publisher := tr.connect(t, b, &paho.Connect{ClientID: "mpc-pub", CleanStart: true})
			publisher.publish(t, msg("mpc/t", 1, string(make([]byte, 500))))
			publisher.publish(t, msg("mpc/t", 1, "small"))
			got := small.next(t)
			if string(got.Payload) != "small" {
				t.Fatalf("client with Maximum Packet Size 200 got a %d-byte payload", len(got.Payload))
			}
			if d := b.Stats().MessagesDropped; d != 1 {
				t.Fatalf("MessagesDropped %d, want 1", d)
			}
		})
	}
}

// --- 13. Will with will delay ---

// connectWithWill opens a raw connection whose will goes to topic after willDelay,
// with the given session expiry.
func connectWithWill(t testing.TB, b *broker, clientID, topic string, willDelay, sessionExpiry uint32) *rawClient {
	t.Helper()
	rc := dialRaw(t, b.TCPAddr, packet.V5)
	p := &packet.Packet{Type: packet.Connect, Connect: packet.ConnectFields{ProtocolVersion: packet.V5,
		CleanStart: true, ClientID: clientID, WillFlag: true, WillQoS: 1, WillTopic: topic, WillPayload: []byte("gone: " + clientID)}}
	p.Connect.WillProperties.WillDelay = willDelay
	p.Connect.WillProperties.Set(packet.PropWillDelay)
	p.Properties.SessionExpiry = sessionExpiry
	p.Properties.Set(packet.PropSessionExpiry)
	rc.send(p)
	if ack := rc.expect(packet.Connack); ack.ReasonCode != packet.Success {
		t.Fatalf("CONNACK 0x%02X", byte(ack.ReasonCode))
	}
	return rc
}

func TestV5Will(t *testing.T) {
	t.Parallel()
	setup := func(t *testing.T) (*broker, *v5Client) {
		b := startBroker(t, server.Options{})
		watcher := tcpTransport.connect(t, b, &paho.Connect{ClientID: "watcher", CleanStart: true})
		watcher.subscribe(t, 0, sub("will/#", 1))
		return b, watcher
	}
	onlyWatcherLeft := func(t *testing.T, b *broker) {
		t.Helper()
		eventually(t, waitFor, "the will owner's disconnect to be handled", func() bool { return b.Stats().ClientsConnected == 1 })
	}

	t.Run("abrupt close sends the will after the delay", func(t *testing.T) {
		t.Parallel()
		b, watcher := setup(t)
		owner := connectWithWill(t, b, "delayed", "will/delayed", 1, 10)
		closed := time.Now()
		_ = owner.conn.Close()
		got := watcher.next(t)
		elapsed := time.Since(closed)
		if got.Topic != "will/delayed" || string(got.Payload) != "gone: delayed" {
			t.Fatalf("got %q on %q, want the will", got.Payload, got.Topic)
		}
		if elapsed < time.Second || elapsed > 3*time.Second {
			t.Fatalf("will arrived %v after the close, want after the 1s will delay (with slack)", elapsed)
		}
	})

	t.Run("reconnecting within the delay cancels the will", func(t *testing.T) {
		t.Parallel()
		b, watcher := setup(t)
		owner := connectWithWill(t, b, "returning", "will/returning", 1, 10)
		_ = owner.conn.Close()
		onlyWatcherLeft(t, b) // the delayed will is armed now
		back := dialRaw(t, b.TCPAddr, packet.V5)
		props := &packet.Properties{SessionExpiry: 10}
		props.Set(packet.PropSessionExpiry)
		if ack := back.connect("returning", false, 0, props); ack.ReasonCode != packet.Success || !ack.SessionPresent {
			t.Fatalf("reconnect: CONNACK 0x%02X session present %v", byte(ack.ReasonCode), ack.SessionPresent)
		}
		watcher.expectNone(t, 2*time.Second) // twice the will delay
		watcher.publish(t, msg("will/returning", 1, "sentinel"))
		if p := watcher.nextPayload(t); p != "sentinel" {
			t.Fatalf("got %q, want sentinel", p)
		}
	})

	t.Run("DISCONNECT 0x04 sends the will", func(t *testing.T) {
		t.Parallel()
		b, watcher := setup(t)
		owner := connectWithWill(t, b, "with-will", "will/0x04", 0, 0)
		owner.send(&packet.Packet{Type: packet.Disconnect, ReasonCode: packet.DisconnectWithWillMessage})
		got := watcher.next(t)
		if got.Topic != "will/0x04" || string(got.Payload) != "gone: with-will" {
			t.Fatalf("got %q on %q, want the will", got.Payload, got.Topic)
		}
	})

	t.Run("normal DISCONNECT discards the will", func(t *testing.T) {
		t.Parallel()
		b, watcher := setup(t)
		owner := connectWithWill(t, b, "polite", "will/polite", 0, 0)
		owner.send(&packet.Packet{Type: packet.Disconnect, ReasonCode: packet.NormalDisconnection})
		onlyWatcherLeft(t, b) // a will would be queued for the watcher by now
		watcher.publish(t, msg("will/polite", 1, "sentinel"))
		if p := watcher.nextPayload(t); p != "sentinel" {
			t.Fatalf("got %q, want sentinel: the will was sent after a normal DISCONNECT", p)
		}
	})
}

// --- 14. Session takeover ---

func TestV5SessionTakeover(t *testing.T) {
	t.Parallel()
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			t.Parallel()
			b := startBroker(t, server.Options{})
			props := &packet.Properties{SessionExpiry: 3600} // a session that outlives its connection
			props.Set(packet.PropSessionExpiry)
			first, _ := connectRaw(t, b, "twin", 0, props)
			rawSubscribe(t, first, 1, 0, packet.Subscription{Filter: "twin/t", QoS: 1})

			second := tr.connect(t, b, &paho.Connect{ClientID: "twin", CleanStart: false})
			expectServerDisconnect(t, first, packet.SessionTakenOver, waitFor)
			if !second.Connack.SessionPresent {
				t.Fatal("taking over a live session: session present is false")
			}
			// The taken-over session's subscription now delivers to the new connection.
			second.publish(t, msg("twin/t", 1, "to the new connection"))
			if p := second.nextPayload(t); p != "to the new connection" {
				t.Fatalf("got %q", p)
			}
		})
	}
}

// TestV5TakeoverEndsExpiryZeroSession: a session with Session Expiry 0 ends when its
// network connection closes, which a takeover does: the new connection never resumes
// it, even with Clean Start 0 (and the old subscription delivers nothing more).
func TestV5TakeoverEndsExpiryZeroSession(t *testing.T) {
	t.Parallel()
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			t.Parallel()
			b := startBroker(t, server.Options{})
			first, _ := connectRaw(t, b, "brief", 0, nil) // Clean Start, Session Expiry 0
			rawSubscribe(t, first, 1, 0, packet.Subscription{Filter: "brief/t", QoS: 1})

			second := tr.connect(t, b, &paho.Connect{ClientID: "brief", CleanStart: false})
			expectServerDisconnect(t, first, packet.SessionTakenOver, waitFor)
			if second.Connack.SessionPresent {
				t.Fatal("a taken-over session with expiry 0 was resumed")
			}
			second.subscribe(t, 0, paho.SubscribeOptions{Topic: "sentinel/t", QoS: 1})
			second.publish(t, msg("brief/t", 1, "to the old subscription"))
			second.publish(t, msg("sentinel/t", 1, "sentinel"))
			if p := second.nextPayload(t); p != "sentinel" {
				t.Fatalf("got %q: the ended session's subscription still delivers", p)
			}
		})
	}
}

// --- 15. Graceful shutdown ---

func TestV5GracefulShutdown(t *testing.T) {
	t.Parallel()
	b := startBroker(t, server.Options{})
	rc, _ := connectRaw(t, b, "shutdown-raw", 0, nil)
	var clients []*v5Client
	for _, tr := range transports {
		clients = append(clients, tr.connect(t, b, &paho.Connect{ClientID: "shutdown-" + tr.name, CleanStart: true}))
	}

	var wg sync.WaitGroup
	var shutdownErr error
	wg.Go(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		defer cancel()
		shutdownErr = b.Shutdown(ctx)
	})
	expectServerDisconnect(t, rc, packet.ServerShuttingDown, waitFor)
	for i, c := range clients {
		select {
		case d := <-c.serverDisconnect:
			if d.ReasonCode != byte(packet.ServerShuttingDown) {
				t.Errorf("%s: DISCONNECT 0x%02X, want 0x8B", transports[i].name, d.ReasonCode)
			}
		case <-time.After(waitFor):
			t.Errorf("%s: no DISCONNECT from the server", transports[i].name)
		}
	}
	wg.Wait()
	if shutdownErr != nil {
		t.Fatalf("Shutdown: %v", shutdownErr)
	}
}

// --- 16. Reason codes on acknowledgements ---

func TestV5AckReasonCodes(t *testing.T) {
	t.Parallel()
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			t.Parallel()
			b := startBroker(t, server.Options{})
			c := tr.connect(t, b, &paho.Connect{ClientID: "codes", CleanStart: true})
			ctx, cancel := context.WithTimeout(context.Background(), waitFor)
			defer cancel()

			for _, tc := range []struct {
				topic string
				want  packet.Code
			}{
				{"nobody/listens", packet.NoMatchingSubscribers},
				{"$SYS/x", packet.NotAuthorized},
			} {
				resp, err := c.tryPublish(msg(tc.topic, 1, "x"))
				if resp == nil {
					t.Fatalf("publish to %q: no PUBACK (%v)", tc.topic, err)
				}
				if resp.ReasonCode != byte(tc.want) {
					t.Errorf("PUBACK for %q: 0x%02X, want 0x%02X", tc.topic, resp.ReasonCode, byte(tc.want))
				}
			}

			ua, err := c.Unsubscribe(ctx, &paho.Unsubscribe{Topics: []string{"never/subscribed"}})
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(ua.Reasons, []byte{byte(packet.NoSubscriptionExisted)}) {
				t.Errorf("UNSUBACK reasons %v, want [0x11]", ua.Reasons)
			}

			sa, _ := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{sub("a/#/b", 1), sub("ok/+", 1)}})
			if sa == nil || !slices.Equal(sa.Reasons, []byte{byte(packet.TopicFilterInvalid), 1}) {
				t.Fatalf("SUBACK %+v, want reasons [0x8F 0x01]", sa)
			}
			// The valid filter of the same SUBSCRIBE works.
			c.publish(t, msg("ok/x", 1, "granted"))
			if p := c.nextPayload(t); p != "granted" {
				t.Fatalf("got %q", p)
			}
		})
	}
}

// --- 17. Reason strings ---

// TestV5ReasonStrings checks that refusals carry a Reason String, that a client
// asking for no problem information (Request Problem Information 0) gets one only on
// CONNACK and DISCONNECT (MQTT-3.1.2-29), and that it is left out when it would push a
// packet over the client's Maximum Packet Size (MQTT-3.1.2-25).
func TestV5ReasonStrings(t *testing.T) {
	t.Parallel()
	b := startBroker(t, server.Options{MaxConnections: 3})
	sysPublish := &packet.Packet{Type: packet.Publish, QoS: 1, PacketID: 1, Topic: "$SYS/x", Payload: []byte("x")}
	secondConnect := &packet.Packet{Type: packet.Connect, Connect: packet.ConnectFields{
		ProtocolVersion: packet.V5, CleanStart: true, ClientID: "reasons"}}

	for _, tc := range []struct {
		name          string
		noProblemInfo bool
		maxPacket     uint32
		wantOnAcks    bool // PUBACK, SUBACK, PUBCOMP carry one
		wantOnClose   bool // the DISCONNECT carries one
	}{
		{"default", false, 0, true, true},
		{"request problem information 0", true, 0, false, true},
		{"small maximum packet size", false, 16, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var props packet.Properties
			if tc.noProblemInfo {
				props.RequestProblemInfo = 0
				props.Set(packet.PropRequestProblemInfo)
			}
			if tc.maxPacket != 0 {
				props.MaximumPacketSize = tc.maxPacket
				props.Set(packet.PropMaximumPacketSize)
			}
			rc, _ := connectRaw(t, b, "reasons", 0, &props)

			rc.send(sysPublish)
			ack := rc.expect(packet.Puback)
			rc.send(&packet.Packet{Type: packet.Subscribe, PacketID: 2,
				Subscriptions: []packet.Subscription{{Filter: "a/#/b", QoS: 1}}})
			suback := rc.expect(packet.Suback)
			rc.send(&packet.Packet{Type: packet.Pubrel, PacketID: 3})
			pubcomp := rc.expect(packet.Pubcomp)
			for _, p := range []*packet.Packet{ack, suback, pubcomp} {
				code := p.ReasonCode
				if p.Type == packet.Suback {
					code = p.ReasonCodes[0]
				}
				if !code.IsError() {
					t.Fatalf("%s: reason 0x%02X, want an error code", p.Type, byte(code))
				}
				if got := p.Properties.Has(packet.PropReasonString); got != tc.wantOnAcks {
					t.Errorf("%s has a reason string: %v (%q), want %v", p.Type, got, p.Properties.ReasonString, tc.wantOnAcks)
				}
			}
			if tc.wantOnAcks && !strings.Contains(suback.Properties.ReasonString, "a/#/b") {
				t.Errorf("SUBACK reason string %q does not name the invalid filter", suback.Properties.ReasonString)
			}

			rc.send(secondConnect) // a protocol error (MQTT-3.1.0-2)
			got := expectClosed(t, rc, waitFor)
			if len(got) != 1 || got[0].Type != packet.Disconnect || got[0].ReasonCode != packet.ProtocolError {
				t.Fatalf("got %s, want DISCONNECT 0x82", describe(got))
			}
			d := got[0]
			if has := d.Properties.Has(packet.PropReasonString); has != tc.wantOnClose {
				t.Fatalf("DISCONNECT has a reason string: %v (%q), want %v", has, d.Properties.ReasonString, tc.wantOnClose)
			}
			if tc.wantOnClose && !strings.Contains(d.Properties.ReasonString, "CONNECT") {
				t.Errorf("DISCONNECT reason string %q does not explain the violation", d.Properties.ReasonString)
			}
			if tc.maxPacket != 0 && d.Size(packet.V5) > int(tc.maxPacket) {
				t.Errorf("DISCONNECT of %d bytes exceeds the client's maximum %d", d.Size(packet.V5), tc.maxPacket)
			}
		})
	}

	// A refused CONNECT explains itself in CONNACK. The connections stay open until
	// the test ends (dialRaw closes them).
	eventually(t, waitFor, "the closed connections to be gone", func() bool { return b.Stats().ClientsConnected == 0 })
	for i := range 3 {
		connectRaw(t, b, fmt.Sprint("hold-", i), 0, nil)
	}
	rc := dialRaw(t, b.TCPAddr, packet.V5)
	ack := rc.connect("one-too-many", true, 0, nil)
	if ack.ReasonCode != packet.QuotaExceeded || !strings.Contains(ack.Properties.ReasonString, "limit") {
		t.Fatalf("CONNACK 0x%02X %q, want 0x97 with a reason string", byte(ack.ReasonCode), ack.Properties.ReasonString)
	}
}
