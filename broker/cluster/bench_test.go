package cluster_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mqtt-operator/mqtt-operator/broker/cluster"
	"github.com/mqtt-operator/mqtt-operator/broker/packet"
	"github.com/mqtt-operator/mqtt-operator/broker/server"
	"github.com/mqtt-operator/mqtt-operator/broker/store"
)

// benchNode is one in-process node: a broker with its pebble store and cluster node,
// listening on loopback.
type benchNode struct {
	srv        *server.Server
	node       *cluster.Node
	mqttAddr   string
	clusterAdr string
}

func startBenchNode(b *testing.B, name string) *benchNode {
	b.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	dir := b.TempDir()
	st, err := store.OpenPebble(filepath.Join(dir, "store"), log)
	if err != nil {
		b.Fatal(err)
	}
	srv, err := server.New(server.Options{Store: st, Logger: log, SysInterval: -1, MaxQueued: 1 << 20})
	if err != nil {
		b.Fatal(err)
	}
	cl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	auth, err := cluster.NewAuthenticator(name, []byte("bench-cookie-0123456789"), 5*time.Second)
	if err != nil {
		b.Fatal(err)
	}
	node, err := cluster.NewNode(cluster.Config{Name: name, Advertise: cl.Addr().String(), Store: st,
		SnapshotDir: filepath.Join(dir, "snapshots"), Auth: auth, Server: srv, Logger: log})
	if err != nil {
		b.Fatal(err)
	}
	srv.SetCluster(node)
	go func() { _ = node.Serve(cl) }()
	ml, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go func() { _ = srv.Serve(ml) }()
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		node.Close()
		_ = st.Close()
	})
	return &benchNode{srv: srv, node: node, mqttAddr: ml.Addr().String(), clusterAdr: cl.Addr().String()}
}

// waitUntil checks cond every interval until it holds, failing after timeout.
func waitUntil(b *testing.B, timeout, interval time.Duration, what string, cond func() bool) {
	b.Helper()
	deadline := time.After(timeout)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline:
			b.Fatalf("waited %s for %s", timeout, what)
		case <-tick.C:
		}
	}
}

// rawConn is a v3.1.1 connection that writes packets and reads them back.
type rawConn struct {
	c  net.Conn
	br *bufio.Reader
}

func dialBench(b *testing.B, addr, id string) *rawConn {
	b.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = c.Close() })
	r := &rawConn{c: c, br: bufio.NewReaderSize(c, 64<<10)}
	r.write(b, &packet.Packet{Type: packet.Connect, Connect: packet.ConnectFields{ProtocolVersion: packet.V311, CleanStart: true, ClientID: id}})
	if p := r.read(b); p.Type != packet.Connack {
		b.Fatalf("got %v, want CONNACK", p.Type)
	}
	return r
}

func (r *rawConn) write(b *testing.B, p *packet.Packet) {
	b.Helper()
	if _, err := r.c.Write(p.Encode(nil, packet.V311)); err != nil {
		b.Fatal(err)
	}
}

func (r *rawConn) read(b *testing.B) *packet.Packet {
	b.Helper()
	_ = r.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	p, err := packet.Read(r.br, packet.V311, 0)
	if err != nil {
		b.Fatal(err)
	}
	_ = r.c.SetReadDeadline(time.Time{})
	return p
}

// countPublishes counts the PUBLISH packets r receives into got, acknowledging QoS 1
// ones, until the connection ends.
func (r *rawConn) countPublishes(got *atomic.Int64) {
	var p packet.Packet
	for {
		if err := packet.ReadInto(r.br, &p, packet.V311, 0); err != nil {
			return
		}
		if p.Type == packet.Publish {
			got.Add(1)
			if p.QoS == 1 {
				_, _ = r.c.Write((&packet.Packet{Type: packet.Puback, PacketID: p.PacketID}).Encode(nil, packet.V311))
			}
		}
	}
}

// BenchmarkClusterForward measures messages crossing nodes: a publisher on node A, one
// subscriber on node B, 64-byte payloads. For QoS 1 the publisher keeps a window of 64
// messages in flight; every PUBACK means node B queued the message.
func BenchmarkClusterForward(b *testing.B) {
	for _, qos := range []byte{0, 1} {
		b.Run(fmt.Sprintf("qos=%d", qos), func(b *testing.B) {
			a, bb := startBenchNode(b, "a"), startBenchNode(b, "b")
			if err := a.node.Bootstrap(); err != nil {
				b.Fatal(err)
			}
			if err := bb.node.Join(context.Background(), a.clusterAdr); err != nil {
				b.Fatal(err)
			}
			sub := dialBench(b, bb.mqttAddr, "sub")
			sub.write(b, &packet.Packet{Type: packet.Subscribe, PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "bench/#", QoS: qos}}})
			if p := sub.read(b); p.Type != packet.Suback {
				b.Fatalf("got %v, want SUBACK", p.Type)
			}
			var got atomic.Int64
			go sub.countPublishes(&got)
			pub := dialBench(b, a.mqttAddr, "pub")
			// The subscription reaches node A asynchronously: probe until one arrives.
			waitUntil(b, 10*time.Second, 10*time.Millisecond, "the route to reach node a", func() bool {
				if got.Load() > 0 {
					return true
				}
				pub.write(b, &packet.Packet{Type: packet.Publish, Topic: "bench/probe", Payload: []byte("probe")})
				return false
			})
			base := got.Load()
			acks := make(chan struct{}, 1<<16)
			go func() {
				var p packet.Packet
				for {
					if err := packet.ReadInto(pub.br, &p, packet.V311, 0); err != nil {
						return
					}
					if p.Type == packet.Puback {
						acks <- struct{}{}
					}
				}
			}()
			payload := make([]byte, 64)
			const window = 64
			inflight := 0
			var out []byte
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < b.N; i++ {
				p := packet.Packet{Type: packet.Publish, QoS: qos, Topic: "bench/x", Payload: payload}
				if qos > 0 {
					p.PacketID = uint16(i%65535 + 1)
					for inflight >= window {
						<-acks
						inflight--
					}
					inflight++
				}
				out = p.Encode(out[:0], packet.V311)
				if _, err := pub.c.Write(out); err != nil {
					b.Fatal(err)
				}
			}
			want := base + int64(b.N)
			waitUntil(b, 60*time.Second, time.Millisecond, "every message to arrive", func() bool { return got.Load() >= want })
			b.StopTimer()
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
		})
	}
}

// BenchmarkClusterFanIn measures many publishers into one subscriber: three QoS 0
// publishers, on one node (nodes=1, a cluster of one) or one on each node of three
// (nodes=3: two of every three messages cross to the subscriber's node), 64-byte
// payloads, one subscriber on the first node. msgs/s counts messages the subscriber
// received.
func BenchmarkClusterFanIn(b *testing.B) {
	for _, nodes := range []int{1, 3} {
		b.Run(fmt.Sprintf("nodes=%d", nodes), func(b *testing.B) {
			ns := []*benchNode{startBenchNode(b, "a")}
			if err := ns[0].node.Bootstrap(); err != nil {
				b.Fatal(err)
			}
			for i := 1; i < nodes; i++ {
				n := startBenchNode(b, fmt.Sprintf("n%d", i))
				if err := n.node.Join(context.Background(), ns[0].clusterAdr); err != nil {
					b.Fatal(err)
				}
				ns = append(ns, n)
			}
			sub := dialBench(b, ns[0].mqttAddr, "sub")
			sub.write(b, &packet.Packet{Type: packet.Subscribe, PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "bench/#"}}})
			if p := sub.read(b); p.Type != packet.Suback {
				b.Fatalf("got %v, want SUBACK", p.Type)
			}
			var got atomic.Int64
			go sub.countPublishes(&got)
			pubs := make([]*rawConn, 3)
			for i := range pubs {
				pubs[i] = dialBench(b, ns[i%nodes].mqttAddr, fmt.Sprintf("pub-%d", i))
				// The subscription reaches the publisher's node asynchronously.
				before := got.Load()
				waitUntil(b, 10*time.Second, 10*time.Millisecond, "the route to reach the publisher's node", func() bool {
					if got.Load() > before {
						return true
					}
					pubs[i].write(b, &packet.Packet{Type: packet.Publish, Topic: "bench/probe", Payload: []byte("probe")})
					return false
				})
			}
			base := got.Load() // a probe still on its way counts as one of b.N: noise
			payload := make([]byte, 64)
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			done := make(chan error, len(pubs))
			for i, pub := range pubs {
				go func() {
					var out []byte
					for j := i; j < b.N; j += len(pubs) {
						p := packet.Packet{Type: packet.Publish, Topic: "bench/x", Payload: payload}
						out = p.Encode(out, packet.V311)
						if len(out) >= 16<<10 || j+len(pubs) >= b.N {
							if _, err := pub.c.Write(out); err != nil {
								done <- err
								return
							}
							out = out[:0]
						}
					}
					done <- nil
				}()
			}
			for range pubs {
				if err := <-done; err != nil {
					b.Fatal(err)
				}
			}
			want := base + int64(b.N)
			waitUntil(b, 60*time.Second, time.Millisecond, "every message to arrive", func() bool { return got.Load() >= want })
			b.StopTimer()
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
		})
	}
}
