package server_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mqtt-operator/mqtt-operator/broker/packet"
	"github.com/mqtt-operator/mqtt-operator/broker/server"
	"github.com/mqtt-operator/mqtt-operator/broker/session"
	"github.com/mqtt-operator/mqtt-operator/broker/store"
	"github.com/mqtt-operator/mqtt-operator/broker/topic"
)

// BenchmarkOfflineQueue measures queueing QoS 1 messages for offline persistent
// sessions on a pebble store (synced, on disk): OFFLINE_SESSIONS sessions (1,000)
// subscribed to one topic, first with empty queues, then with OFFLINE_QUEUED
// (10,000) messages already queued in each; 8 publishers each wait for PUBACK,
// which comes once the message is stored for every session. One op is one publish;
// queued/s counts messages queued into sessions. The store is filled before the
// broker starts (it restores the sessions) and compacted, outside the timing.
func BenchmarkOfflineQueue(b *testing.B) {
	sessions, queued := envInt(b, "OFFLINE_SESSIONS", 1000), envInt(b, "OFFLINE_QUEUED", 10000)
	for _, q := range []int{0, queued} {
		var br *broker
		outer := b
		b.Run(fmt.Sprintf("sessions=%d/queued=%d", sessions, q), func(b *testing.B) {
			if br == nil { // kept across this case's rounds (filling the store is slow): stopped with outer
				br = offlineBroker(outer, sessions, q)
			}
			var next atomic.Int64
			var wg sync.WaitGroup
			pubs := make([]*rawClient, 8)
			for i := range pubs {
				pubs[i] = dialRaw(b, br.TCPAddr, packet.V311)
				pubs[i].connect("offline-pub-"+strconv.Itoa(i), true, 0, nil)
			}
			payload := make([]byte, 64)
			b.ResetTimer()
			start := time.Now()
			for _, c := range pubs {
				wg.Go(func() {
					for next.Add(1) <= int64(b.N) {
						c.send(&packet.Packet{Type: packet.Publish, QoS: 1, PacketID: 1, Topic: "offline/t", Payload: payload})
						c.expect(packet.Puback)
					}
				})
			}
			wg.Wait()
			b.StopTimer()
			b.ReportMetric(float64(b.N*sessions)/time.Since(start).Seconds(), "queued/s")
		})
	}
}

// offlineBroker starts a broker on a pebble store holding sessions offline
// persistent sessions subscribed to offline/t, each with queued messages.
func offlineBroker(b *testing.B, sessions, queued int) *broker {
	b.Helper()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := store.OpenPebble(b.TempDir(), quiet)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = st.Close() }) // after the broker's shutdown, before the directory goes
	msg := &session.Message{Topic: "offline/t", Payload: make([]byte, 64), QoS: 1}
	for i := range sessions {
		id := fmt.Sprintf("offline-%05d", i)
		snap := session.Snapshot{ID: id, Expiry: server.ExpiryNever, Disconnected: time.Now(), Owner: session.OwnerAnonymous,
			Subscriptions: map[string]topic.Subscription{"offline/t": {ClientID: id, Filter: "offline/t", QoS: 1}}}
		for j := range queued {
			snap.Queue = append(snap.Queue, &session.Delivery{Msg: msg, QoS: 1, StoreSeq: uint64(j)})
		}
		if err := store.SaveSession(st, snap); err != nil {
			b.Fatal(err)
		}
	}
	if err := st.Compact(context.Background()); err != nil {
		b.Fatal(err)
	}
	return startBroker(b, server.Options{Store: st, SysInterval: -1, MaxQueued: queued + 1<<20})
}

func envInt(b *testing.B, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		b.Fatalf("%s=%q: want a number", name, v)
	}
	return n
}
