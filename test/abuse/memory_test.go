package abuse

import (
	"bufio"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mqtt-operator/mqtt-operator/broker/packet"
)

// TestSlowSubscriberKeepsMemoryBounded: a subscriber that never reads its socket while
// a publisher floods it costs the broker at most its queue limits. The subscriber's
// session holds up to max_queued_bytes of queued payload plus max_inflight QoS 1
// deliveries, and its writer one batch of them, blocked in write; the rest of the
// flood is dropped and counted. RSS must stay under the level before the flood plus
// a bound computed from those limits, while the flood is many times that bound.
func TestSlowSubscriberKeepsMemoryBounded(t *testing.T) {
	const (
		payloadSize = 4 << 10
		queuedBytes = 4 << 20          // limits.max_queued_bytes
		inflight    = 256              // limits.max_inflight
		floodFor    = 90 * time.Second // at most; it ends once it is 4x the bound
	)
	b := startBroker(t,
		"--limits.max-queued-bytes", "4194304",
		"--limits.max-queued-messages", "1000000", // the byte limit is the one that binds
		"--limits.max-inflight", "256",
		"--limits.publish-rate", "0", "--limits.publish-byte-rate", "0") // flood unthrottled

	// What the subscriber can pin: the queue, the inflight window and one encoded
	// batch of both in the writer's buffer. The Go heap may grow to twice what is live
	// before a collection (GOGC=100); the race detector's shadow memory adds a
	// multiple of the heap on top.
	held := int64(queuedBytes + inflight*payloadSize)
	factor := int64(4)
	if raceEnabled {
		factor = 12
	}
	bound := factor*2*held + 32<<20

	sub := rawConn(t, b.tcp)
	if tc, ok := sub.conn.(*net.TCPConn); ok {
		_ = tc.SetReadBuffer(4096) // fill up fast
	}
	sub.connect(t, "slow-subscriber", false)
	sub.send(t, &packet.Packet{Type: packet.Subscribe, PacketID: 1,
		Subscriptions: []packet.Subscription{{Filter: "flood/#", QoS: 1}}})
	if p := sub.read(t); p.Type != packet.Suback {
		t.Fatalf("got %s, want SUBACK", p.Type)
	}
	// From now on the subscriber never reads.

	pub := rawConn(t, b.tcp)
	pub.connect(t, "publisher", true)
	go func() { _, _ = io.Copy(io.Discard, pub.conn) }() // PUBACKs

	baseline := b.rss()
	var published atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		w := bufio.NewWriterSize(pub.conn, 64<<10)
		payload := make([]byte, payloadSize)
		var buf []byte
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			p := packet.Packet{Type: packet.Publish, QoS: byte(i % 2), Topic: "flood/data", Payload: payload}
			if p.QoS == 1 {
				p.PacketID = uint16(i%60000 + 1)
			}
			buf = p.Encode(buf[:0], packet.V311)
			_ = pub.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
			if _, err := w.Write(buf); err != nil {
				return
			}
			if i%16 == 15 {
				if err := w.Flush(); err != nil {
					return
				}
			}
			published.Add(payloadSize)
		}
	})

	// The flood goes on until it is four times the bound (so the bound means
	// something), however long a loaded machine takes, up to floodFor.
	peak := baseline
	tick := time.NewTicker(50 * time.Millisecond)
	start := time.Now()
	end := time.After(floodFor)
sample:
	for {
		select {
		case <-tick.C:
			peak = max(peak, b.rss())
			if published.Load() >= 4*bound {
				break sample
			}
		case <-end:
			break sample
		}
	}
	flood := time.Since(start).Round(time.Millisecond)
	tick.Stop()
	close(stop)
	_ = pub.conn.Close()
	wg.Wait()

	dropped := b.metric(`mqttd_limit_refusals_total{limit="queued_bytes"}`)
	t.Logf("flooded %s in %v to a subscriber that never reads; RSS %s before, peak %s (+%s); bound +%s (%dx2x %s held + 32 MiB); %0.f messages dropped by max_queued_bytes",
		mib(published.Load()), flood, mib(baseline), mib(peak), mib(peak-baseline), mib(bound), factor, mib(held), dropped)
	if published.Load() < 4*bound {
		t.Fatalf("the flood (%s) was not large enough to show a bound of %s", mib(published.Load()), mib(bound))
	}
	if peak-baseline > bound {
		t.Errorf("RSS grew by %s, more than the bound %s", mib(peak-baseline), mib(bound))
	}
	if dropped == 0 {
		t.Error("no message was dropped by max_queued_bytes")
	}
}
