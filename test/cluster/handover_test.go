package cluster

import (
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
)

// Handover workload: one QoS 2 publisher, a roaming QoS 2 subscriber moved this
// many times between two nodes while the messages flow.
const handoverMoves = 12

// TestClusterQoS2Handover: a persistent QoS 2 subscriber moves back and forth between
// two nodes (half of the moves a takeover of its live connection, half a reconnect
// after it left) while a publisher on the third node sends numbered QoS 2 messages.
// Every node also has another subscriber to the same topics, so every node has routes
// for them all along and a message can reach both the old and the new node of a move.
// Each message arrives exactly once (a resend with DUP of a delivery its connection
// ended on aside), none is lost, and they arrive in the order they were published.
func TestClusterQoS2Handover(t *testing.T) {
	nodes := formCluster(t, 3)
	a, b, c := nodes[0], nodes[1], nodes[2]
	const topic = "handover/roamer"
	for _, n := range nodes {
		w := connectV5(t, n, "watch-"+n.name(), v5Options{cleanStart: true})
		w.subscribe(t, 2, "handover/#")
	}
	rec := &recorder{}
	roamer := connectV5(t, b, "roamer", v5Options{cleanStart: true, expiry: sessionExpiry, rec: rec})
	roamer.subscribe(t, 2, topic)
	pub := connectV5(t, a, "handover-pub", v5Options{cleanStart: true})
	awaitRoute(t, pub, topic, rec)

	var (
		published atomic.Int64
		stop      = make(chan struct{})
		wg        sync.WaitGroup
		pubErr    error
	)
	wg.Go(func() {
		for n := 0; ; n++ {
			select {
			case <-stop:
				return
			default:
			}
			if err := pub.tryPublish(topic, 2, false, strconv.Itoa(n)); err != nil {
				pubErr = err
				return
			}
			published.Store(int64(n + 1))
		}
	})
	at, other := b, c
	for move := range handoverMoves {
		// Let some messages flow on the current node first.
		floor := published.Load() + 50
		eventually(t, clusterTimeout, fmt.Sprintf("move %d: traffic on %s", move, at.name()), func() error {
			if published.Load() < floor {
				return fmt.Errorf("%d of %d published", published.Load(), floor)
			}
			return nil
		})
		if move%2 == 1 {
			roamer.close() // the session waits, detached, and collects on the old node
		}
		next, err := dialV5(other.mqttAddress(), "roamer", v5Options{cleanStart: false, expiry: sessionExpiry, rec: rec})
		if err != nil {
			t.Fatalf("move %d to %s: %v", move, other.name(), err)
		}
		t.Cleanup(next.close)
		if !next.connack.SessionPresent {
			t.Fatalf("move %d to %s: session present false", move, other.name())
		}
		roamer, at, other = next, other, at
	}
	close(stop)
	wg.Wait()
	if pubErr != nil {
		t.Fatal(pubErr)
	}
	total := int(published.Load())
	eventually(t, clusterTimeout, "every message reaches the roamer", func() error {
		if got := len(uniquePayloads(rec.data())); got < total {
			return fmt.Errorf("%d of %d", got, total)
		}
		return nil
	})
	firsts, dups := map[string]int{}, 0
	var order []int
	for _, m := range rec.data() {
		if m.dup {
			dups++
			continue
		}
		if firsts[m.payload]++; firsts[m.payload] == 1 {
			n, _ := strconv.Atoi(m.payload)
			order = append(order, n)
		}
	}
	var twice []string
	for p, k := range firsts {
		if k > 1 {
			twice = append(twice, p)
		}
	}
	t.Logf("%d messages over %d moves, %d resent with DUP", total, handoverMoves, dups)
	if len(twice) > 0 {
		t.Errorf("%d messages delivered more than once as new deliveries (QoS 2), e.g. %v", len(twice), twice[:min(5, len(twice))])
	}
	for i := 1; i < len(order); i++ {
		if order[i] < order[i-1] {
			t.Errorf("message %d arrived after %d (published later)", order[i], order[i-1])
			break
		}
	}
}
