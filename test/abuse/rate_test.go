package abuse

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/mqtt-operator/mqtt-operator/broker/packet"
)

// TestPublishRateSlowsOnlyTheFlooder: a client publishing as fast as its socket takes,
// far over limits.publish_rate, is read more slowly: it gets through at about its
// rate, nothing is dropped, and another pair of clients sees its latency unchanged
// (p99 within 2x of the figure measured without the flooder, in the same test).
func TestPublishRateSlowsOnlyTheFlooder(t *testing.T) {
	const (
		rate    = 500 // limits.publish_rate, messages/s; the bucket holds one second
		window  = 4 * time.Second
		samples = 400
	)
	b := startBroker(t, "--limits.publish-rate", fmt.Sprint(rate))
	probe := newProbe(t, b)

	// The flooder's messages go to a subscriber that reads them all, so an
	// unthrottled flood would cost the broker its deliveries too. Each attempt's
	// flooder has its own topic: a closed flooder's packets still in the broker's socket
	// buffer keep coming at the publish rate and must not count for the next attempt.
	drain := rawConn(t, b.tcp)
	drain.connect(t, "flood-drain", true)
	drain.send(t, &packet.Packet{Type: packet.Subscribe, PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "flood/#"}}})
	if p := drain.read(t); p.Type != packet.Suback {
		t.Fatalf("got %s, want SUBACK", p.Type)
	}
	var delivered atomic.Int64
	var counted atomic.Pointer[string] // the topic of the attempt being measured
	go func() {
		_ = drain.conn.SetReadDeadline(time.Time{})
		for {
			p, err := packet.Read(drain.br, packet.V311, 0)
			if err != nil {
				return
			}
			if c := counted.Load(); c != nil && p.Topic == *c {
				delivered.Add(1)
			}
		}
	}()

	var unloaded, loaded time.Duration
	var got int64
	for attempt := 1; ; attempt++ {
		unloaded = probe.p99(t, samples)
		flooder := rawConn(t, b.tcp)
		flooder.connect(t, fmt.Sprint("flooder-", attempt), true)
		go func() { _, _ = io.Copy(io.Discard, flooder.conn) }()
		stop := make(chan struct{})
		var wg sync.WaitGroup
		var sent atomic.Int64
		topic := fmt.Sprint("flood/", attempt)
		counted.Store(&topic)
		wg.Go(func() { flood(flooder.conn, topic, stop, &sent) })
		start := delivered.Load()
		began := time.Now()
		loaded = probe.p99(t, samples)
		if rest := window - time.Since(began); rest > 0 {
			timer := time.NewTimer(rest)
			<-timer.C
		}
		elapsed := time.Since(began)
		got = delivered.Load() - start
		close(stop)
		_ = flooder.conn.Close()
		wg.Wait()
		t.Logf("attempt %d: probe p99 %v unloaded, %v with the flooder; the flooder wrote %d messages and got %d through in %v (%.0f/s, limit %d/s + a burst of %d)",
			attempt, unloaded, loaded, sent.Load(), got, elapsed.Round(time.Millisecond), float64(got)/elapsed.Seconds(), rate, rate)
		if most := float64(rate)*elapsed.Seconds()*1.1 + rate; float64(got) > most {
			t.Fatalf("the flooder got %d messages through in %v, over its rate (at most %.0f)", got, elapsed, most)
		}
		// The machine is shared: a p99 spoiled by other processes is measured again,
		// both figures anew, at most three times.
		if loaded <= 2*unloaded || attempt == 3 {
			break
		}
	}
	if loaded > 2*unloaded {
		t.Errorf("probe p99 %v with the flooder, more than twice the %v without", loaded, unloaded)
	}
	if got < rate {
		t.Errorf("the flooder got only %d messages through: throttled, not stopped", got)
	}
	if n := b.metric(`mqttd_limit_throttles_total{limit="publish_rate"}`); n == 0 {
		t.Error("no publish_rate throttle counted")
	}
}

// flood writes QoS 0 PUBLISH packets on topic to conn as fast as it takes them until
// stop.
func flood(conn net.Conn, topic string, stop <-chan struct{}, sent *atomic.Int64) {
	p := packet.Packet{Type: packet.Publish, Topic: topic, Payload: make([]byte, 64)}
	one := p.Encode(nil, packet.V311)
	var batch []byte
	for range 64 {
		batch = append(batch, one...)
	}
	for {
		select {
		case <-stop:
			return
		default:
		}
		_ = conn.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
		n, err := conn.Write(batch)
		sent.Add(int64(n / len(one)))
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue // the broker reads slowly: that is the point
			}
			return
		}
	}
}

// probe is a publisher and a subscriber (paho v5) that measure the broker's latency:
// each message carries its send time.
type probe struct {
	pub, sub *paho.Client
	arrived  chan time.Duration
}

func newProbe(t testing.TB, b *broker) *probe {
	t.Helper()
	p := &probe{arrived: make(chan time.Duration, 1024)}
	p.sub = pahoClient(t, b, "probe-sub", func(pr paho.PublishReceived) (bool, error) {
		sentAt := time.Unix(0, int64(binary.BigEndian.Uint64(pr.Packet.Payload)))
		p.arrived <- time.Since(sentAt)
		return true, nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := p.sub.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "probe", QoS: 0}}}); err != nil {
		t.Fatalf("probe subscribe: %v", err)
	}
	p.pub = pahoClient(t, b, "probe-pub", nil)
	return p
}

// p99 sends n messages, one every 5ms, and returns the 99th percentile latency.
func (p *probe) p99(t testing.TB, n int) time.Duration {
	t.Helper()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	lat := make([]time.Duration, 0, n)
	payload := make([]byte, 8)
	for range n {
		<-tick.C
		binary.BigEndian.PutUint64(payload, uint64(time.Now().UnixNano()))
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := p.pub.Publish(ctx, &paho.Publish{Topic: "probe", Payload: payload})
		cancel()
		if err != nil {
			t.Fatalf("probe publish: %v", err)
		}
		select {
		case d := <-p.arrived:
			lat = append(lat, d)
		case <-time.After(5 * time.Second):
			t.Fatal("probe message not delivered within 5s")
		}
	}
	slices.Sort(lat)
	return lat[len(lat)*99/100]
}

// pahoClient connects a paho v5 client over TCP; it disconnects when the test ends.
func pahoClient(t testing.TB, b *broker, id string, onPublish func(paho.PublishReceived) (bool, error)) *paho.Client {
	t.Helper()
	conn, err := net.DialTimeout("tcp", b.tcp, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	cfg := paho.ClientConfig{Conn: conn}
	if onPublish != nil {
		cfg.OnPublishReceived = []func(paho.PublishReceived) (bool, error){onPublish}
	}
	c := paho.NewClient(cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.Connect(ctx, &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30}); err != nil {
		t.Fatalf("connect %s: %v", id, err)
	}
	t.Cleanup(func() {
		_ = c.Disconnect(&paho.Disconnect{})
		<-c.Done()
	})
	return c
}
