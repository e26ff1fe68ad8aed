package server_test

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/mqtt-operator/mqtt-operator/broker/listener"
	"github.com/mqtt-operator/mqtt-operator/broker/packet"
	"github.com/mqtt-operator/mqtt-operator/broker/server"
)

// Parked connections (park.go): a plain TCP connection idle for ParkAfter gives up its
// reader goroutine and buffers and waits in the server's poller. These tests park
// every connection after 20 ms and check what must still hold across a park.

const testParkAfter = 20 * time.Millisecond

func parkingBroker(t *testing.T) *broker {
	t.Helper()
	return startBroker(t, server.Options{ParkAfter: testParkAfter})
}

func waitParked(t *testing.T, b *broker, n int64) {
	t.Helper()
	eventually(t, 5*time.Second, fmt.Sprintf("%d parked connection(s)", n), func() bool { return b.Stats().ClientsParked == n })
}

// openFiles counts this process's open file descriptors.
func openFiles(t *testing.T) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}

// checkNoFDLeak fails the test when, once it ended (its brokers shut down and its
// sockets closed), more files are open than before it began.
func checkNoFDLeak(t *testing.T) {
	if runtime.GOOS != "linux" {
		// Connections park only on Linux (epoll; park_other.go), and /proc/self/fd is
		// Linux's: elsewhere these tests have nothing to check. CI runs on Linux.
		t.Skip("parking needs Linux")
	}
	before := openFiles(t)
	t.Cleanup(func() {
		// Registered first, so it runs after the broker's and the clients' cleanups.
		eventually(t, 5*time.Second, fmt.Sprintf("no more files open than the %d before the test", before),
			func() bool { return openFiles(t) <= before })
	})
}

// A packet split across a park: its first bytes wake the connection, the rest comes
// later, and it is handled whole; the subscriber, parked too, gets it.
func TestParkedPartialPacket(t *testing.T) {
	checkNoFDLeak(t)
	b := parkingBroker(t)
	sub, _ := connectRaw(t, b, "sub", 60, nil)
	rawSubscribe(t, sub, 1, 0, packet.Subscription{Filter: "park/#", QoS: 1})
	pub, _ := connectRaw(t, b, "pub", 60, nil)
	waitParked(t, b, 2)

	p := packet.Packet{Type: packet.Publish, QoS: 1, PacketID: 7, Topic: "park/split", Payload: bytes.Repeat([]byte("x"), 3000)}
	wire := p.Encode(nil, packet.V5)
	pub.write(wire[:1])
	eventually(t, 5*time.Second, "the publisher awake", func() bool { return b.Stats().ClientsParked == 1 })
	for _, part := range [][]byte{wire[1:3], wire[3:1500], wire[1500:]} {
		// Longer than ParkAfter: a connection in the middle of a packet does not park.
		expectQuiet(t, pub, 5*testParkAfter)
		if n := b.Stats().ClientsParked; n != 1 {
			t.Fatalf("%d parked in the middle of a packet", n)
		}
		pub.write(part)
	}
	ack := pub.expect(packet.Puback)
	if ack.PacketID != 7 {
		t.Fatalf("PUBACK for %d", ack.PacketID)
	}
	got := sub.expect(packet.Publish)
	if got.Topic != "park/split" || !bytes.Equal(got.Payload, p.Payload) {
		t.Fatalf("got %q with %d bytes", got.Topic, len(got.Payload))
	}
	sub.send(&packet.Packet{Type: packet.Puback, PacketID: got.PacketID})
	waitParked(t, b, 2)
}

// A subscriber that does not read while much is sent to it: the writer runs while the
// reader stays parked, blocks on the full socket, and everything arrives in order
// once the client reads.
func TestParkedSlowReader(t *testing.T) {
	checkNoFDLeak(t)
	b := parkingBroker(t)
	sub, _ := connectRaw(t, b, "slow", 60, nil)
	rawSubscribe(t, sub, 1, 0, packet.Subscription{Filter: "flood", QoS: 0})
	pub, _ := connectRaw(t, b, "flooder", 60, nil)
	waitParked(t, b, 2)

	const n = 3000 // 3 MB: well over the loopback socket buffers
	payload := bytes.Repeat([]byte("y"), 1000)
	for i := range n {
		pub.send(&packet.Packet{Type: packet.Publish, Topic: "flood", Payload: append([]byte(fmt.Sprintf("%06d", i)), payload...)})
	}
	for i := range n {
		got := sub.read(10 * time.Second)
		if got.Type != packet.Publish || string(got.Payload[:6]) != fmt.Sprintf("%06d", i) {
			t.Fatalf("message %d: %v %q", i, got.Type, got.Payload[:min(6, len(got.Payload))])
		}
	}
	waitParked(t, b, 2)
	if c := b.Stats().ClientsConnected; c != 2 {
		t.Fatalf("%d clients connected", c)
	}
}

// A client that half-closes its socket while parked (FIN, no DISCONNECT): the
// connection ends and its will goes out.
func TestParkedHalfClose(t *testing.T) {
	checkNoFDLeak(t)
	b := parkingBroker(t)
	watcher, _ := connectRaw(t, b, "watcher", 60, nil)
	rawSubscribe(t, watcher, 1, 0, packet.Subscription{Filter: "wills/#", QoS: 1})

	rc := dialRaw(t, b.TCPAddr, packet.V5)
	rc.send(&packet.Packet{Type: packet.Connect, Connect: packet.ConnectFields{
		ProtocolName: "MQTT", ProtocolVersion: packet.V5, CleanStart: true, KeepAlive: 60, ClientID: "leaver",
		WillFlag: true, WillQoS: 1, WillTopic: "wills/leaver", WillPayload: []byte("gone")}})
	rc.expect(packet.Connack)
	waitParked(t, b, 2)

	if err := rc.conn.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got := watcher.expect(packet.Publish)
	if got.Topic != "wills/leaver" || string(got.Payload) != "gone" {
		t.Fatalf("will: %q %q", got.Topic, got.Payload)
	}
	watcher.send(&packet.Packet{Type: packet.Puback, PacketID: got.PacketID})
	expectClosed(t, rc, 5*time.Second)
	eventually(t, 5*time.Second, "one client left", func() bool { return b.Stats().ClientsConnected == 1 })
}

// A client that disconnects in the middle of a packet after a park: nothing of the
// packet is delivered, the connection ends, nothing is left behind.
func TestParkedDisconnectMidPacket(t *testing.T) {
	checkNoFDLeak(t)
	b := parkingBroker(t)
	watcher, _ := connectRaw(t, b, "watcher", 60, nil)
	rawSubscribe(t, watcher, 1, 0, packet.Subscription{Filter: "mid/#", QoS: 0})
	rc, _ := connectRaw(t, b, "quitter", 60, nil)
	waitParked(t, b, 2)

	p := packet.Packet{Type: packet.Publish, Topic: "mid/x", Payload: bytes.Repeat([]byte("z"), 2000)}
	wire := p.Encode(nil, packet.V5)
	rc.write(wire[:1000])
	eventually(t, 5*time.Second, "the connection awake", func() bool { return b.Stats().ClientsParked == 1 })
	_ = rc.conn.Close()
	eventually(t, 5*time.Second, "the connection ended", func() bool { return b.Stats().ClientsConnected == 1 })
	expectQuiet(t, watcher, 200*time.Millisecond)
	waitParked(t, b, 1)
}

// The keepalive runs out while the connection is parked: the poller's wheel wakes
// it and the server closes it with DISCONNECT 0x8D, within about a second of 1.5
// times the keepalive.
func TestParkedKeepAlive(t *testing.T) {
	checkNoFDLeak(t)
	b := parkingBroker(t)
	rc, _ := connectRaw(t, b, "sleeper", 1, nil)
	waitParked(t, b, 1)
	start := time.Now()
	expectServerDisconnect(t, rc, packet.KeepAliveTimeout, 5*time.Second)
	if d := time.Since(start); d < time.Second {
		t.Fatalf("closed after %v, before 1.5 times the keepalive", d)
	}
	eventually(t, 5*time.Second, "no client left", func() bool { return b.Stats().ClientsConnected == 0 })
}

// A ping keeps a parked connection: each PINGREQ wakes it, is answered, and it parks
// again; the keepalive counts from the last packet.
func TestParkedPing(t *testing.T) {
	checkNoFDLeak(t)
	b := parkingBroker(t)
	rc, _ := connectRaw(t, b, "pinger", 1, nil)
	for range 4 { // 4 x 700 ms: past 1.5 times the keepalive since CONNECT
		waitParked(t, b, 1)
		deadline := time.Now().Add(700 * time.Millisecond)
		for time.Now().Before(deadline) {
			expectQuiet(t, rc, 50*time.Millisecond)
		}
		rc.send(&packet.Packet{Type: packet.Pingreq})
		rc.expect(packet.Pingresp)
	}
}

// Messages to a parked subscriber start a writer that ends again once idle; the
// shutdown reaches parked connections (DISCONNECT 0x8B) and leaves no goroutine and
// no file open (goleak in TestMain, checkNoFDLeak).
func TestParkedShutdown(t *testing.T) {
	checkNoFDLeak(t)
	b := parkingBroker(t)
	var clients []*rawClient
	for i := range 20 {
		rc, _ := connectRaw(t, b, fmt.Sprintf("idle-%d", i), 60, nil)
		rawSubscribe(t, rc, 1, 0, packet.Subscription{Filter: "all", QoS: 0})
		clients = append(clients, rc)
	}
	waitParked(t, b, 20)
	pub := dialRaw(t, b.TCPAddr, packet.V311)
	pub.send(&packet.Packet{Type: packet.Connect, Connect: packet.ConnectFields{ProtocolName: "MQTT", ProtocolVersion: packet.V311, CleanStart: true, ClientID: "pub"}})
	pub.expect(packet.Connack)
	pub.send(&packet.Packet{Type: packet.Publish, Topic: "all", Payload: []byte("hello")})
	for _, rc := range clients {
		if got := rc.expect(packet.Publish); string(got.Payload) != "hello" {
			t.Fatalf("got %q", got.Payload)
		}
	}
	waitParked(t, b, 21)
	go func() { _ = b.Shutdown(t.Context()) }()
	for _, rc := range clients {
		expectServerDisconnect(t, rc, packet.ServerShuttingDown, 5*time.Second)
	}
	eventually(t, 5*time.Second, "no client left", func() bool { return b.Stats().ClientsConnected == 0 })
}

// Connections of the listener package park too, unless the PROXY protocol (or TLS)
// sits between the socket and MQTT: those keep their reader.
func TestParkedThroughListener(t *testing.T) {
	checkNoFDLeak(t)
	b := parkingBroker(t)
	serve := func(o listener.Options) string {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = b.ServeListener(listener.Wrap(l, o), "tcp")
		}()
		t.Cleanup(func() { _ = l.Close(); <-done })
		return l.Addr().String()
	}
	plain := serve(listener.Options{Name: "tcp"})
	proxied := serve(listener.Options{Name: "tcp", ProxyProtocol: true})

	rc := dialRaw(t, plain, packet.V5)
	if ack := rc.connect("plain", true, 60, nil); ack.ReasonCode != packet.Success {
		t.Fatalf("CONNACK 0x%02X", byte(ack.ReasonCode))
	}
	waitParked(t, b, 1)
	rc.send(&packet.Packet{Type: packet.Pingreq})
	rc.expect(packet.Pingresp)
	waitParked(t, b, 1)

	pc := dialRaw(t, proxied, packet.V5)
	pc.write([]byte("PROXY TCP4 192.0.2.7 127.0.0.1 5555 1883\r\n"))
	if ack := pc.connect("proxied", true, 60, nil); ack.ReasonCode != packet.Success {
		t.Fatalf("CONNACK 0x%02X", byte(ack.ReasonCode))
	}
	eventually(t, 5*time.Second, "two clients", func() bool { return b.Stats().ClientsConnected == 2 })
	expectQuiet(t, pc, 10*testParkAfter) // time enough to park, were it allowed
	if n := b.Stats().ClientsParked; n != 1 {
		t.Fatalf("%d parked, want only the plain connection", n)
	}
	pc.send(&packet.Packet{Type: packet.Pingreq})
	pc.expect(packet.Pingresp)
}

// The keepalive counts from when the server is done with a packet: a publisher the
// publish byte rate holds back for longer than 1.5 times its keepalive, whose pings
// wait in the socket meanwhile, is not cut off (with and without parking).
func TestKeepAliveAfterThrottle(t *testing.T) {
	for _, after := range []time.Duration{-1, testParkAfter} {
		t.Run(fmt.Sprint("park after ", after), func(t *testing.T) {
			b := startBroker(t, server.Options{ParkAfter: after, PublishByteRate: 1000})
			rc, _ := connectRaw(t, b, "slowpub", 1, nil)
			rc.send(&packet.Packet{Type: packet.Publish, Topic: "big", Payload: bytes.Repeat([]byte("b"), 4000)})
			deadline := time.Now().Add(3500 * time.Millisecond) // the rate holds the reader about 3 s
			for time.Now().Before(deadline) {
				rc.send(&packet.Packet{Type: packet.Pingreq})
				if p, err := rc.tryRead(500 * time.Millisecond); err == nil && p.Type != packet.Pingresp {
					t.Fatalf("got %v (0x%02X), want PINGRESP or nothing yet", p.Type, byte(p.ReasonCode))
				} else if err != nil && !isTimeout(err) {
					t.Fatalf("connection ended: %v", err)
				}
			}
			rc.send(&packet.Packet{Type: packet.Pingreq})
			for {
				p := rc.read(5 * time.Second)
				if p.Type != packet.Pingresp {
					t.Fatalf("got %v, want PINGRESP", p.Type)
				}
				if b.Stats().ClientsConnected == 1 {
					break
				}
			}
		})
	}
}
