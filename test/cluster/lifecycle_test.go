package cluster

import (
	"fmt"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

// TestClusterKillNode: kill -9 of one node of three (the raft leader, the hardest one
// to lose) while QoS 1 traffic flows between clients on the two others loses none of
// it; the killed node, restarted with its store and flags, rejoins on its own and
// serves its persistent session again, with the message queued for it.
func TestClusterKillNode(t *testing.T) {
	nodes := formCluster(t, 3)
	victim := leaderOf(t, nodes)
	var others []*node
	for _, n := range nodes {
		if n != victim {
			others = append(others, n)
		}
	}
	a, b := others[0], others[1]

	// A persistent session on the victim with one message queued for it.
	resident := connectV5(t, victim, "resident", persistent())
	resident.subscribe(t, 1, "kill/resident")
	pub := connectV5(t, a, "kill-pub", v5Options{cleanStart: true})
	awaitRoute(t, pub, "kill/resident", resident.rec)
	resident.close()
	eventually(t, clusterTimeout, "the resident's connection is gone", func() error { return expectConnections(0, victim) })
	pub.publish(t, "kill/resident", false, "queued")

	sub := connectV5(t, b, "kill-sub", v5Options{cleanStart: true})
	sub.subscribe(t, 1, "kill/stream")
	awaitRoute(t, pub, "kill/stream", sub.rec)
	stream := startStream(pub, "kill/stream")
	waitPublished(t, stream, 100)
	victim.kill()
	waitPublished(t, stream, stream.published.Load()+200)
	total := stream.stop(t)
	expectSequence(t, sub, total)

	victim.restart()
	waitMember(t, []*node{victim}, victim.name())
	waitClusterSize(t, nodes, 3)
	back := connectV5(t, victim, "resident", persistent())
	if !back.connack.SessionPresent {
		t.Fatalf("%s restarted without the resident's session", victim.name())
	}
	eventually(t, clusterTimeout, "the queued message reaches the resident", func() error {
		if !back.rec.hasPayload("queued") {
			return fmt.Errorf("received %+v", back.rec.all())
		}
		return nil
	})
}

// TestClusterFullRestart: a cluster formed from flags (bootstrap and static seeds) is
// stopped as a whole and started in reverse order: same cluster ID and members, the
// retained message and the queued messages of a persistent session are intact.
func TestClusterFullRestart(t *testing.T) {
	nodes := formClusterFromFlags(t, 3)
	before := waitClusterSize(t, nodes, 3)
	const queued = 10

	pub := connectV5(t, nodes[2], "fr-pub", v5Options{cleanStart: true})
	pub.publish(t, "fr/retained", true, "kept")
	sleeper := connectV5(t, nodes[1], "sleeper", persistent())
	sleeper.subscribe(t, 1, "fr/queue")
	awaitRoute(t, pub, "fr/queue", sleeper.rec)
	sleeper.close()
	eventually(t, clusterTimeout, "the sleeper's connection is gone", func() error { return expectConnections(0, nodes[1]) })
	for i := range queued {
		pub.publish(t, "fr/queue", false, strconv.Itoa(i))
	}
	pub.close()

	for _, n := range nodes {
		n.stop()
	}
	for _, n := range slices.Backward(nodes) {
		n.launch()
	}
	for _, n := range nodes {
		if err := n.awaitListening(); err != nil {
			t.Fatalf("%s: %v", n.name(), err)
		}
	}

	after := waitClusterSize(t, nodes, 3)
	if after.ClusterID != before.ClusterID || !slices.Equal(after.memberNames(), before.memberNames()) {
		t.Fatalf("after the restart: %+v, before: %+v", after, before)
	}
	for _, n := range nodes {
		awaitRetained(t, n, "fr/retained", "kept")
	}
	back := connectV5(t, nodes[1], "sleeper", persistent())
	if !back.connack.SessionPresent {
		t.Fatal("the sleeper's session did not survive the restart")
	}
	eventually(t, clusterTimeout, "the queued messages arrive", func() error {
		if got := len(uniquePayloads(back.rec.data())); got < queued {
			return fmt.Errorf("%d of %d", got, queued)
		}
		return nil
	})
	if got := firstOccurrences(back.rec.data()); !isSequence(got, queued) {
		t.Fatalf("queued messages arrived as %v, want 0..%d", got, queued-1)
	}
}

// stream publishes numbered QoS 1 messages (0, 1, 2, ...) to one topic, each after the
// previous one was acknowledged, until stopped or a publish fails.
type stream struct {
	published atomic.Int64  // messages acknowledged so far
	stopping  chan struct{} // closed by stop
	exited    chan struct{} // closed when the publisher returns
	err       error         // the failed publish, if any; read after exited is closed
}

func startStream(pub *v5Client, topic string) *stream { return startPacedStream(pub, topic, 0) }

// startPacedStream is startStream publishing at most one message per every.
func startPacedStream(pub *v5Client, topic string, every time.Duration) *stream {
	s := &stream{stopping: make(chan struct{}), exited: make(chan struct{})}
	go func() {
		defer close(s.exited)
		var tick <-chan time.Time
		if every > 0 {
			tk := time.NewTicker(every)
			defer tk.Stop()
			tick = tk.C
		}
		for seq := 0; ; seq++ {
			select {
			case <-s.stopping:
				return
			default:
			}
			if tick != nil {
				select {
				case <-s.stopping:
					return
				case <-tick:
				}
			}
			if err := pub.tryPublish(topic, 1, false, strconv.Itoa(seq)); err != nil {
				s.err = fmt.Errorf("after %d acknowledged messages: %w", seq, err)
				return
			}
			s.published.Add(1)
		}
	}()
	return s
}

// failed returns the error the publisher stopped with, or nil while it runs.
func (s *stream) failed() error {
	select {
	case <-s.exited:
		return s.err
	default:
		return nil
	}
}

// stop ends the stream, fails the test if a publish failed, and returns how many
// messages were acknowledged.
func (s *stream) stop(t *testing.T) int {
	t.Helper()
	close(s.stopping)
	<-s.exited
	if s.err != nil {
		t.Fatal(s.err)
	}
	return int(s.published.Load())
}

// waitPublished waits until at least n messages of the stream were acknowledged.
func waitPublished(t *testing.T, s *stream, n int64) {
	t.Helper()
	eventually(t, clusterTimeout, fmt.Sprintf("%d messages published", n), func() error {
		if err := s.failed(); err != nil {
			t.Fatal(err)
		}
		if got := s.published.Load(); got < n {
			return fmt.Errorf("%d published", got)
		}
		return nil
	})
}

// expectSequence waits until sub received every number 0..total-1 and checks they
// arrived in order (repeats of QoS 1 redelivery aside).
func expectSequence(t *testing.T, sub *v5Client, total int) {
	t.Helper()
	eventually(t, clusterTimeout, fmt.Sprintf("%s receives all %d messages", sub.id, total), func() error {
		if got := len(uniquePayloads(sub.rec.data())); got < total {
			return fmt.Errorf("%d distinct of %d", got, total)
		}
		return nil
	})
	if got := firstOccurrences(sub.rec.data()); !isSequence(got, total) {
		t.Fatalf("%s: %d messages not in order 0..%d: %v", sub.id, len(got), total-1, firstDifference(got))
	}
}

// firstDifference describes where got first departs from 0, 1, 2, ...
func firstDifference(got []int) string {
	for i, v := range got {
		if v != i {
			return fmt.Sprintf("position %d holds %d", i, v)
		}
	}
	return fmt.Sprintf("only %d messages", len(got))
}

// awaitRetained waits until a new subscriber to topic on n receives the retained
// payload (retained messages replicate asynchronously): each attempt is a new client.
func awaitRetained(t *testing.T, n *node, topic, payload string) {
	t.Helper()
	attempt := 0
	eventually(t, clusterTimeout, fmt.Sprintf("%s serves retained %s=%q", n.name(), topic, payload), func() error {
		attempt++
		c, err := dialV5(n.mqttAddress(), fmt.Sprintf("retained-%s-%d", n.name(), attempt), v5Options{cleanStart: true})
		if err != nil {
			return err
		}
		defer c.close()
		c.subscribe(t, 1, topic)
		for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); <-time.After(pollInterval / 10) {
			for _, m := range c.rec.all() {
				if m.topic == topic && m.payload == payload && m.retain {
					return nil
				}
			}
		}
		return fmt.Errorf("received %+v", c.rec.all())
	})
}
