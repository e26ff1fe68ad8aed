package abuse

import (
	"context"
	"errors"
	"net"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// TestIdleConnectionsClosedAtConnectTimeout: 2,000 connections that never send
// CONNECT are each closed by the broker once limits.connect_timeout has passed, not
// before; meanwhile a real client still gets in, and the broker's memory is measured.
func TestIdleConnectionsClosedAtConnectTimeout(t *testing.T) {
	const (
		idle    = 2000
		timeout = 3 * time.Second
		margin  = 5 * time.Second // late closes allowed: 2 shared cores, race detector
	)
	// No connection rate limit here: every connection is accepted at once, so its
	// timeout runs from its dial (the rate limit has its own tests).
	b := startBroker(t, "--limits.connect-timeout", timeout.String(), "--limits.connection-rate", "0")
	before := b.rss()

	type result struct {
		dialed, closed time.Time
		err            error
	}
	results := make([]result, idle)
	var wg sync.WaitGroup
	conns := make([]net.Conn, 0, idle)
	t.Cleanup(func() {
		for _, c := range conns {
			_ = c.Close()
		}
		wg.Wait()
	})
	for i := range idle {
		c, err := net.DialTimeout("tcp", b.tcp, 5*time.Second)
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		conns = append(conns, c)
		results[i].dialed = time.Now()
		wg.Go(func() {
			_ = c.SetReadDeadline(time.Now().Add(timeout + margin + 10*time.Second))
			var buf [1]byte
			_, err := c.Read(buf[:]) // the broker sends nothing: this returns when it closes
			results[i].closed, results[i].err = time.Now(), err
		})
	}
	dialedAll := time.Now()

	// While they wait, a well-behaved client connects.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := net.DialTimeout("tcp", b.tcp, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	pc := paho.NewClient(paho.ClientConfig{Conn: conn})
	if _, err := pc.Connect(ctx, &paho.Connect{ClientID: "well-behaved", CleanStart: true, KeepAlive: 30}); err != nil {
		t.Fatalf("a real client could not connect during the idle flood: %v", err)
	}
	during := b.rss()
	wg.Wait()
	_ = pc.Disconnect(&paho.Disconnect{})

	var after []time.Duration
	for i, r := range results {
		if nerr := net.Error(nil); errors.As(r.err, &nerr) && nerr.Timeout() {
			t.Fatalf("connection %d still open %v after its dial", i, r.closed.Sub(r.dialed))
		}
		after = append(after, r.closed.Sub(r.dialed))
	}
	sort.Slice(after, func(i, j int) bool { return after[i] < after[j] })
	first, median, last := after[0], after[len(after)/2], after[len(after)-1]
	t.Logf("%d idle connections dialed in %v; closed after %v (first) / %v (median) / %v (last); RSS %s before, %s with them open",
		idle, dialedAll.Sub(results[0].dialed).Round(time.Millisecond), first.Round(time.Millisecond),
		median.Round(time.Millisecond), last.Round(time.Millisecond), mib(before), mib(during))
	if first < timeout-50*time.Millisecond {
		t.Errorf("a connection was closed %v after its dial, before the %v connect timeout", first, timeout)
	}
	if last > timeout+margin {
		t.Errorf("a connection was closed only %v after its dial (timeout %v, margin %v)", last, timeout, margin)
	}
	eventually(t, 5*time.Second, "no client connected", func() bool { return b.metric("mqttd_clients_connected") == 0 })
}
