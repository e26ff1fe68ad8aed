package server_test

import (
	"bufio"
	"fmt"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mqtt-operator/mqtt-operator/broker/packet"
	"github.com/mqtt-operator/mqtt-operator/broker/server"
)

// benchSubscriber connects a raw v3.1.1 subscriber that counts PUBLISH packets (and
// acknowledges QoS 1) on its own goroutine.
func benchSubscriber(b *testing.B, addr, id, filter string, qos byte, count *atomic.Int64) {
	b.Helper()
	c := dialRaw(b, addr, packet.V311)
	c.connect(id, true, 0, nil)
	c.send(&packet.Packet{Type: packet.Subscribe, PacketID: 1, Subscriptions: []packet.Subscription{{Filter: filter, QoS: qos}}})
	c.expect(packet.Suback)
	_ = c.conn.SetReadDeadline(time.Time{})
	go func() {
		br := bufio.NewReaderSize(c.conn, 64<<10)
		var ack []byte
		var p packet.Packet
		for {
			if err := packet.ReadInto(br, &p, packet.V311, 0); err != nil {
				return
			}
			if p.Type == packet.Publish {
				count.Add(1)
				if p.QoS == 1 {
					ack = (&packet.Packet{Type: packet.Puback, PacketID: p.PacketID}).Encode(ack[:0], packet.V311)
					if _, err := c.conn.Write(ack); err != nil {
						return
					}
				}
			}
		}
	}()
}

// BenchmarkFanout measures end-to-end throughput through the broker over loopback TCP:
// one publisher, subs subscribers, b.N messages of 64 bytes; it reports delivered
// messages per second.
func BenchmarkFanout(b *testing.B) {
	for _, tc := range []struct {
		subs int
		qos  byte
	}{{1, 0}, {10, 0}, {1, 1}, {10, 1}} {
		b.Run(fmt.Sprintf("subs=%d/qos=%d", tc.subs, tc.qos), func(b *testing.B) {
			br := startBroker(b, server.Options{SysInterval: -1, MaxQueued: 1 << 20})
			var got atomic.Int64
			for i := 0; i < tc.subs; i++ {
				benchSubscriber(b, br.TCPAddr, fmt.Sprintf("s%d", i), "bench/+/data", tc.qos, &got)
			}
			pub, err := net.Dial("tcp", br.TCPAddr)
			if err != nil {
				b.Fatal(err)
			}
			defer func() { _ = pub.Close() }()
			conn := (&packet.Packet{Type: packet.Connect, Connect: packet.ConnectFields{ProtocolVersion: packet.V311, CleanStart: true, ClientID: "pub"}}).Encode(nil, 0)
			if _, err := pub.Write(conn); err != nil {
				b.Fatal(err)
			}
			// Drain CONNACK and PUBACKs so the broker never blocks on us.
			go func() {
				buf := make([]byte, 64<<10)
				for {
					if _, err := pub.Read(buf); err != nil {
						return
					}
				}
			}()
			payload := make([]byte, 64)
			var out []byte
			const batch = 64
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < b.N; i++ {
				p := packet.Packet{Type: packet.Publish, QoS: tc.qos, Topic: "bench/x/data", Payload: payload}
				if tc.qos > 0 {
					p.PacketID = uint16(i%65535 + 1)
				}
				out = p.Encode(out, packet.V311)
				if len(out) > batch*80 || i == b.N-1 {
					if _, err := pub.Write(out); err != nil {
						b.Fatal(err)
					}
					out = out[:0]
				}
			}
			want := int64(b.N * tc.subs)
			deadline := time.Now().Add(60 * time.Second)
			for got.Load() < want {
				if time.Now().After(deadline) {
					b.Fatalf("delivered %d of %d", got.Load(), want)
				}
				time.Sleep(time.Millisecond) // polling interval
			}
			b.StopTimer()
			b.ReportMetric(float64(want)/time.Since(start).Seconds(), "msgs/s")
		})
	}
}
