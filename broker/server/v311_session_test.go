package server_test

import (
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/mqtt-operator/mqtt-operator/broker/packet"
	"github.com/mqtt-operator/mqtt-operator/broker/server"
)

// TestV311Will checks that the will is published, with its QoS and retain flag, when
// the connection ends abruptly or by keepalive timeout, and not after DISCONNECT.
func TestV311Will(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		qos       byte
		retain    bool
		keepAlive uint16
		end       func(t testing.TB, c *rawClient)
		wantWill  bool
	}{
		{"abrupt close qos 1 retained", 1, true, 0, func(_ testing.TB, c *rawClient) { _ = c.conn.Close() }, true},
		{"abrupt close qos 0", 0, false, 0, func(_ testing.TB, c *rawClient) { _ = c.conn.Close() }, true},
		{"keepalive timeout qos 2", 2, false, 1, func(t testing.TB, c *rawClient) { expectClosed(t, c, 3*time.Second) }, true},
		{"keepalive timeout qos 1 retained", 1, true, 1, func(t testing.TB, c *rawClient) { expectClosed(t, c, 3*time.Second) }, true},
		{"clean disconnect", 1, true, 0, func(t testing.TB, c *rawClient) {
			c.send(&packet.Packet{Type: packet.Disconnect})
			expectClosed(t, c, v3Wait)
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := startBroker(t, server.Options{})
			watcher := v3Dial(t, "tcp://"+b.TCPAddr, "will-watcher", true, nil)
			watcher.sub("will/#", 2)

			c := dialRaw(t, b.TCPAddr, packet.V311)
			c.send(&packet.Packet{Type: packet.Connect, Connect: packet.ConnectFields{
				ProtocolVersion: packet.V311, CleanStart: true, KeepAlive: tc.keepAlive, ClientID: "will-client",
				WillFlag: true, WillQoS: tc.qos, WillRetain: tc.retain, WillTopic: "will/client", WillPayload: []byte("gone")}})
			if ack := c.expect(packet.Connack); ack.ReasonCode != 0 {
				t.Fatalf("CONNACK 0x%02X", byte(ack.ReasonCode))
			}
			v3WaitConnected(t, b, 2)
			tc.end(t, c)
			v3WaitConnected(t, b, 1)
			watcher.pub("will/end", 0, false, "end")

			got := watcher.until("will/end")
			retained := v3Retained(t, b, "will-late", "will/#", 2)
			if !tc.wantWill {
				if len(got) != 0 || len(retained) != 0 {
					t.Fatalf("will published after DISCONNECT: %d live, %d retained", len(got), len(retained))
				}
				return
			}
			if len(got) != 1 {
				t.Fatalf("watcher received %d wills, want 1", len(got))
			}
			m := got[0]
			if m.Topic() != "will/client" || string(m.Payload()) != "gone" || m.Qos() != tc.qos || m.Retained() {
				t.Fatalf("will: %s %q qos %d retain %v, want will/client \"gone\" qos %d retain false (live)",
					m.Topic(), m.Payload(), m.Qos(), m.Retained(), tc.qos)
			}
			switch {
			case tc.retain && len(retained) != 1:
				t.Fatalf("retained will: a later subscriber got %d messages, want 1", len(retained))
			case tc.retain && (string(retained[0].Payload()) != "gone" || !retained[0].Retained() || retained[0].Qos() != tc.qos):
				t.Fatalf("retained will: %q retain %v qos %d", retained[0].Payload(), retained[0].Retained(), retained[0].Qos())
			case !tc.retain && len(retained) != 0:
				t.Fatalf("will without retain flag was retained")
			}
		})
	}
}

// TestV311Takeover checks that a second connection with the same client ID closes the
// first one and gets its session.
func TestV311Takeover(t *testing.T) {
	t.Parallel()
	t.Run("paho persistent tcp to ws", func(t *testing.T) {
		t.Parallel()
		b := startBroker(t, server.Options{})
		first := v3Dial(t, "tcp://"+b.TCPAddr, "taken", false, nil)
		first.sub("take/t", 1)
		second := v3Dial(t, b.WSURL, "taken", false, nil)
		if !second.sessionPresent {
			t.Error("takeover with clean session false: session present is false")
		}
		select {
		case err := <-first.lost:
			t.Logf("first connection lost: %v", err)
		case <-time.After(v3Wait):
			t.Fatal("first connection was not closed by the broker")
		}
		// The subscription came with the session: the second connection gets messages
		// without subscribing.
		pub := v3Dial(t, "tcp://"+b.TCPAddr, "take-pub", true, nil)
		pub.pub("take/t", 1, false, "to the new owner")
		if m := second.next(); string(m.Payload()) != "to the new owner" {
			t.Fatalf("second connection got %q", m.Payload())
		}
		if len(first.msgs) != 0 {
			t.Fatal("first connection still received messages")
		}
	})
	t.Run("raw clean session", func(t *testing.T) {
		t.Parallel()
		b := startBroker(t, server.Options{})
		first := v3RawConnect(t, b, "taken", true, 0, false)
		second := v3RawConnect(t, b, "taken", true, 0, false)
		if got := expectClosed(t, first, v3Wait); len(got) != 0 {
			t.Fatalf("first connection got %d packets before the close, want none (3.1.1 has no server DISCONNECT)", len(got))
		}
		second.send(&packet.Packet{Type: packet.Pingreq})
		second.expect(packet.Pingresp)
		v3WaitConnected(t, b, 1)
	})
}

// TestV311WildcardMatching routes publications through the broker for a table of
// filters and topics. Broker-owned $SYS topics come from its own $SYS publications.
func TestV311WildcardMatching(t *testing.T) {
	t.Parallel()
	const sysSentinel = "$SYS/broker/messages/received" // published after uptime every interval
	for _, tc := range []struct {
		filter, topic string
		match         bool
	}{
		{"sport/tennis/player1/#", "sport/tennis/player1", true},
		{"sport/tennis/player1/#", "sport/tennis/player1/ranking", true},
		{"sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", true},
		{"sport/#", "sport", true},
		{"sport/+", "sport/a/b", false},
		{"sport/+", "sport", false},
		{"sport/+", "sport/", true},
		{"sport/+/player1", "sport/tennis/player1", true},
		{"sport/tennis", "Sport/tennis", false},
		{"+/+", "/finance", true},
		{"/+", "/finance", true},
		{"+", "/finance", false},
		{"+", "finance", true},
		{"+/+", "a/b/c", false},
		{"a/+/c", "a//c", true},
		{"a//c", "a//c", true},
		{"a//c", "a/b/c", false},
		{"#", "/", true},
		{"#", "$foo/bar", false},
		{"+/bar", "$foo/bar", false},
		{"$foo/+", "$foo/bar", true},
		{"#", "$SYS/broker/uptime", false},
		{"+/broker/uptime", "$SYS/broker/uptime", false},
		{"$SYS/#", "$SYS/broker/uptime", true},
		{"$SYS/broker/+", "$SYS/broker/uptime", true},
	} {
		t.Run(tc.filter+" "+tc.topic, func(t *testing.T) {
			t.Parallel()
			sys := strings.HasPrefix(tc.topic, "$SYS/")
			b := startBroker(t, server.Options{SysInterval: 100 * time.Millisecond})
			sub := v3Dial(t, "tcp://"+b.TCPAddr, "wild-sub", true, nil)
			sub.sub(tc.filter, 1)
			matched := false
			if sys {
				// The broker publishes uptime, then messages/received, every interval:
				// a live messages/received of the second cycle comes after an uptime the
				// filter would have matched (the first may end the cycle whose uptime
				// came before the subscription; a filter that also matches the sentinel
				// gets each one twice, so three are two cycles).
				sub.sub(sysSentinel, 0)
				sentinels := 0
				for deadline := time.Now().Add(v3Wait); !matched && time.Now().Before(deadline); {
					m := sub.next()
					matched = m.Topic() == tc.topic
					if m.Topic() == sysSentinel && !m.Retained() {
						if sentinels++; sentinels == 3 {
							break
						}
					}
				}
			} else {
				sub.sub("wild-end", 0)
				pub := v3Dial(t, "tcp://"+b.TCPAddr, "wild-pub", true, nil)
				pub.pub(tc.topic, 1, false, "x")
				pub.pub("wild-end", 1, false, "end")
				for _, m := range sub.until("wild-end") {
					matched = matched || m.Topic() == tc.topic
				}
			}
			if matched != tc.match {
				t.Fatalf("filter %q topic %q: delivered %v, want %v", tc.filter, tc.topic, matched, tc.match)
			}
		})
	}
}

// TestV311Retained checks retained messages: stored per topic, replaced by newer ones,
// cleared by an empty payload, sent with RETAIN=1 to new subscriptions (wildcards too)
// and RETAIN=0 to existing ones, at min(message QoS, subscription QoS).
func TestV311Retained(t *testing.T) {
	t.Parallel()
	b := startBroker(t, server.Options{})
	url := "tcp://" + b.TCPAddr
	pub := v3Dial(t, url, "ret-pub", true, nil)
	live := v3Dial(t, url, "ret-live", true, nil)
	live.sub("ret/a", 2)

	type msg struct {
		topic, payload string
		qos            byte
	}
	check := func(t *testing.T, step string, got []mqtt.Message, want []msg) {
		t.Helper()
		var have []msg
		for _, m := range got {
			if !m.Retained() {
				t.Errorf("%s: retained message %s delivered with RETAIN=0 (MQTT-3.3.1-8)", step, m.Topic())
			}
			have = append(have, msg{m.Topic(), string(m.Payload()), m.Qos()})
		}
		slices.SortFunc(have, func(a, b msg) int { return strings.Compare(a.topic, b.topic) })
		if !slices.Equal(have, want) {
			t.Fatalf("%s: a new subscriber got %v, want %v", step, have, want)
		}
	}
	liveGets := func(t *testing.T, payload string) {
		t.Helper()
		m := live.next()
		if string(m.Payload()) != payload || m.Retained() {
			t.Fatalf("existing subscriber got %q retain %v, want %q retain false (MQTT-3.3.1-9)", m.Payload(), m.Retained(), payload)
		}
	}

	pub.pub("ret/a", 1, true, "v1")
	liveGets(t, "v1")
	check(t, "first", v3Retained(t, b, "late-1", "ret/a", 2), []msg{{"ret/a", "v1", 1}})

	pub.pub("ret/a", 1, true, "v2")
	liveGets(t, "v2")
	check(t, "replaced", v3Retained(t, b, "late-2", "ret/a", 2), []msg{{"ret/a", "v2", 1}})

	pub.pub("ret/a", 1, true, "")
	liveGets(t, "")
	check(t, "cleared", v3Retained(t, b, "late-3", "ret/a", 2), nil)

	pub.pub("ret/w/1", 1, true, "w1")
	pub.pub("ret/w/2", 1, true, "w2")
	pub.pub("ret/x/3", 1, true, "x3")
	pub.pub("ret/w/4", 1, false, "not retained")
	check(t, "plus wildcard", v3Retained(t, b, "late-4", "ret/w/+", 1), []msg{{"ret/w/1", "w1", 1}, {"ret/w/2", "w2", 1}})
	check(t, "hash wildcard", v3Retained(t, b, "late-5", "ret/#", 1),
		[]msg{{"ret/w/1", "w1", 1}, {"ret/w/2", "w2", 1}, {"ret/x/3", "x3", 1}})

	pub.pub("ret/q/0", 0, true, "q0")
	pub.pub("ret/q/1", 1, true, "q1")
	pub.pub("ret/q/2", 2, true, "q2")
	for subQoS := byte(0); subQoS <= 2; subQoS++ {
		var want []msg
		for q := byte(0); q <= 2; q++ {
			want = append(want, msg{fmt.Sprintf("ret/q/%d", q), fmt.Sprintf("q%d", q), min(q, subQoS)})
		}
		check(t, fmt.Sprintf("qos %d subscription", subQoS),
			v3Retained(t, b, fmt.Sprintf("late-q%d", subQoS), "ret/q/+", subQoS), want)
	}
}

// TestV311KeepAlive checks the keepalive: a silent client is closed after one and a
// half keepalive periods (MQTT-3.1.2-24), a pinging client stays connected.
func TestV311KeepAlive(t *testing.T) {
	t.Parallel()
	b := startBroker(t, server.Options{})
	t.Run("silent client is closed after 1.5 s", func(t *testing.T) {
		t.Parallel()
		c := v3RawConnect(t, b, "ka-silent", true, 1, false)
		start := time.Now()
		if p, err := c.tryRead(time.Second); err == nil {
			t.Fatalf("unexpected %s", p.Type)
		} else if !isTimeout(err) {
			t.Fatalf("connection closed after %v, before 1 s (keepalive 1 s): %v", time.Since(start), err)
		}
		if got := expectClosed(t, c, 2*time.Second); len(got) != 0 {
			t.Fatalf("got %d packets before the close, want none", len(got))
		}
		if d := time.Since(start); d < time.Second || d > 3*time.Second {
			t.Fatalf("closed after %v, want about 1.5 s", d)
		}
	})
	t.Run("pinging client stays connected", func(t *testing.T) {
		t.Parallel()
		c := v3RawConnect(t, b, "ka-pinging", true, 1, false)
		start := time.Now()
		tick := time.NewTicker(500 * time.Millisecond) // the client's ping schedule
		defer tick.Stop()
		for time.Since(start) < 3200*time.Millisecond {
			<-tick.C
			c.send(&packet.Packet{Type: packet.Pingreq})
			if p := c.read(time.Second); p.Type != packet.Pingresp {
				t.Fatalf("got %s, want PINGRESP", p.Type)
			}
		}
	})
}

// TestV311ConnectVersions checks CONNECT handling per protocol level: MQTT 3.1
// ("MQIsdp", level 3) is accepted, empty client IDs follow the version's rules and an
// unsupported level gets return code 0x01 and is closed.
func TestV311ConnectVersions(t *testing.T) {
	t.Parallel()
	b := startBroker(t, server.Options{})
	for _, tc := range []struct {
		name     string
		protocol string
		level    byte
		clientID string
		clean    bool
		wantCode byte
	}{
		{"3.1", "MQIsdp", packet.V31, "client-31", true, packet.ConnackV3Accepted},
		{"3.1 empty client id", "MQIsdp", packet.V31, "", true, packet.ConnackV3IdentifierRejected},
		{"3.1.1", "MQTT", packet.V311, "client-311", false, packet.ConnackV3Accepted},
		{"3.1.1 empty client id clean", "MQTT", packet.V311, "", true, packet.ConnackV3Accepted},
		{"3.1.1 empty client id persistent", "MQTT", packet.V311, "", false, packet.ConnackV3IdentifierRejected},
		{"level 6", "MQTT", 6, "client-6", true, packet.ConnackV3BadProtocolVersion},
		{"level 3 named MQTT", "MQTT", packet.V31, "client-3-mqtt", true, packet.ConnackV3BadProtocolVersion},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := dialRaw(t, b.TCPAddr, tc.level)
			c.send(&packet.Packet{Type: packet.Connect, Connect: packet.ConnectFields{
				ProtocolName: tc.protocol, ProtocolVersion: tc.level, CleanStart: tc.clean, ClientID: tc.clientID}})
			ack := c.expect(packet.Connack)
			if byte(ack.ReasonCode) != tc.wantCode || ack.SessionPresent {
				t.Fatalf("CONNACK return code 0x%02X session present %v, want 0x%02X false",
					byte(ack.ReasonCode), ack.SessionPresent, tc.wantCode)
			}
			if tc.wantCode != packet.ConnackV3Accepted {
				expectClosed(t, c, v3Wait) // MQTT-3.2.2-5
				return
			}
			c.send(&packet.Packet{Type: packet.Pingreq})
			c.expect(packet.Pingresp)
		})
	}
}

// TestV31PubSub runs a publish/subscribe exchange between an MQTT 3.1 raw client, a
// Paho MQTT 3.1 client and a Paho MQTT 3.1.1 client.
func TestV31PubSub(t *testing.T) {
	t.Parallel()
	b := startBroker(t, server.Options{})
	raw := dialRaw(t, b.TCPAddr, packet.V31)
	if ack := raw.connect("raw-31", true, 0, nil); ack.ReasonCode != 0 {
		t.Fatalf("3.1 CONNACK 0x%02X", byte(ack.ReasonCode))
	}
	v3RawSubscribe(t, raw, "v31/#", 1)
	paho31 := v3Dial(t, "tcp://"+b.TCPAddr, "paho-31", true, func(o *mqtt.ClientOptions) { o.SetProtocolVersion(3) })
	paho31.sub("v31/#", 2)
	paho311 := v3Dial(t, b.WSURL, "paho-311", true, nil)

	paho311.pub("v31/from-311", 2, false, "hello from 3.1.1")
	raw.send(&packet.Packet{Type: packet.Publish, QoS: 1, PacketID: 1, Topic: "v31/from-31", Payload: []byte("hello from 3.1")})
	// The raw client gets its own message too; PUBACK and the deliveries may interleave.
	var got []string
	for len(got) < 3 {
		p := raw.read(v3Wait)
		switch p.Type {
		case packet.Puback:
			got = append(got, "PUBACK")
		case packet.Publish:
			got = append(got, fmt.Sprintf("%s %s qos %d", p.Topic, p.Payload, p.QoS))
			raw.send(&packet.Packet{Type: packet.Puback, PacketID: p.PacketID})
		default:
			t.Fatalf("unexpected %s", p.Type)
		}
	}
	slices.Sort(got)
	if want := []string{"PUBACK", "v31/from-31 hello from 3.1 qos 1", "v31/from-311 hello from 3.1.1 qos 1"}; !slices.Equal(got, want) {
		t.Fatalf("3.1 raw client got %q, want %q", got, want)
	}
	for _, want := range []string{"v31/from-311 hello from 3.1.1 qos 2", "v31/from-31 hello from 3.1 qos 1"} {
		m := paho31.next()
		if got := fmt.Sprintf("%s %s qos %d", m.Topic(), m.Payload(), m.Qos()); got != want {
			t.Fatalf("Paho 3.1 client got %q, want %q", got, want)
		}
	}
}

// TestV311SysTopics checks the $SYS statistics a v3.1.1 client sees under $SYS/broker/#.
func TestV311SysTopics(t *testing.T) {
	t.Parallel()
	b := startBroker(t, server.Options{SysInterval: 100 * time.Millisecond, Version: "1.2.3-test"})
	c := v3Dial(t, "tcp://"+b.TCPAddr, "sys-watcher", true, nil)
	for i := range 3 {
		c.pub("sys/t", 1, false, strconv.Itoa(i))
	}
	// The $SYS values are retained once the broker has published them a first time:
	// another client waits for that, so the subscription below must get them retained.
	first := v3Dial(t, "tcp://"+b.TCPAddr, "sys-first", true, nil)
	first.sub("$SYS/broker/version", 0)
	first.next()
	c.sub("$SYS/broker/#", 0)

	number := func(v string) int64 {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return -1
		}
		return n
	}
	checks := map[string]func(string) bool{
		"$SYS/broker/version":           func(v string) bool { return v == "mqttd 1.2.3-test" },
		"$SYS/broker/uptime":            regexp.MustCompile(`^[0-9]+ seconds$`).MatchString,
		"$SYS/broker/clients/connected": func(v string) bool { return number(v) >= 1 },
		"$SYS/broker/messages/received": func(v string) bool { return number(v) >= 3 },
	}
	last := map[string]string{}
	sawRetained := false
	deadline := time.Now().Add(v3Wait)
	for len(checks) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("$SYS values not as expected: remaining checks %v, last values %q", slices.Sorted(maps.Keys(checks)), last)
		}
		m := c.next()
		if !strings.HasPrefix(m.Topic(), "$SYS/broker/") {
			t.Fatalf("unexpected topic %s", m.Topic())
		}
		sawRetained = sawRetained || m.Retained()
		last[m.Topic()] = string(m.Payload())
		if ok := checks[m.Topic()]; ok != nil && ok(string(m.Payload())) {
			delete(checks, m.Topic())
		}
	}
	if !sawRetained {
		t.Error("no $SYS message came as retained to the new subscription")
	}
}

// TestV311SharedSubscription checks $share/{group}/{filter} with v3.1.1 clients: each
// message goes to exactly one member of each group.
func TestV311SharedSubscription(t *testing.T) {
	t.Parallel()
	b := startBroker(t, server.Options{})
	members := map[string]*v3Client{
		"g1": v3Dial(t, "tcp://"+b.TCPAddr, "share-g1", true, nil),
		"g2": v3Dial(t, b.WSURL, "share-g2", true, nil),
		"h1": v3Dial(t, "tcp://"+b.TCPAddr, "share-h1", true, nil),
	}
	for name, c := range members {
		c.sub("$share/"+name[:1]+"/share/t", 1)
		c.sub("share-end/"+name, 0)
	}
	pub := v3Dial(t, "tcp://"+b.TCPAddr, "share-pub", true, nil)
	const n = 20
	for i := range n {
		pub.pub("share/t", 1, false, fmt.Sprintf("m%02d", i))
	}
	received := map[string][]string{}
	for name, c := range members {
		pub.pub("share-end/"+name, 1, false, "end")
		for _, m := range c.until("share-end/" + name) {
			received[name] = append(received[name], string(m.Payload()))
		}
	}
	var all []string
	for i := range n {
		all = append(all, fmt.Sprintf("m%02d", i))
	}
	if !slices.Equal(received["h1"], all) {
		t.Errorf("single member of group h got %q, want all %d in order", received["h1"], n)
	}
	if len(received["g1"]) == 0 || len(received["g2"]) == 0 {
		t.Errorf("group g not balanced: g1 got %d, g2 got %d", len(received["g1"]), len(received["g2"]))
	}
	g := slices.Concat(received["g1"], received["g2"])
	slices.Sort(g)
	if !slices.Equal(g, all) {
		t.Errorf("group g received %q, want each of the %d messages exactly once", g, n)
	}
}
