package cluster

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// routeKind is one kind of filter in TestClusterRouting, each in a topic space of its
// own so that a client's subscriptions never overlap.
type routeKind struct {
	name   string
	filter string
	topic  func(publisher string) string
}

func routeKinds(qos byte) []routeKind {
	p := fmt.Sprintf("rt/q%d/", qos)
	return []routeKind{
		{"exact", p + "exact/t", func(string) string { return p + "exact/t" }},
		{"plus", p + "plus/+/t", func(pub string) string { return p + "plus/" + pub + "/t" }},
		{"hash", p + "hash/#", func(pub string) string { return p + "hash/" + pub + "/a/b" }},
	}
}

// TestClusterRouting: three nodes, a subscriber and a publisher on each; for QoS 0, 1
// and 2 and for exact, + and # filters, every subscriber receives every message of
// every publisher exactly once, at the QoS of the flow, in each publisher's order.
func TestClusterRouting(t *testing.T) {
	nodes := formCluster(t, 3)
	const perTopic = 30
	for _, qos := range []byte{0, 1, 2} {
		t.Run(fmt.Sprintf("qos%d", qos), func(t *testing.T) {
			kinds := routeKinds(qos)
			var subs, pubs []*v5Client
			for _, n := range nodes {
				sub := connectV5(t, n, fmt.Sprintf("rt-q%d-sub-%s", qos, n.name()), v5Options{cleanStart: true})
				for _, k := range kinds {
					sub.subscribe(t, qos, k.filter)
				}
				subs = append(subs, sub)
				pubs = append(pubs, connectV5(t, n, fmt.Sprintf("rt-q%d-pub-%s", qos, n.name()), v5Options{cleanStart: true}))
			}
			for _, sub := range subs {
				for _, pub := range pubs {
					for _, k := range kinds {
						awaitRoute(t, pub, k.topic(pub.id), sub.rec)
					}
				}
			}

			// Every publisher sends perTopic messages per kind, then an end marker.
			errs := make(chan error, len(pubs))
			var wg sync.WaitGroup
			for _, pub := range pubs {
				wg.Go(func() {
					for seq := 0; seq <= perTopic; seq++ {
						for _, k := range kinds {
							payload := fmt.Sprintf("%s/%s/%d", k.name, pub.id, seq)
							if seq == perTopic {
								payload = fmt.Sprintf("%s/%s/end", k.name, pub.id)
							}
							if err := pub.tryPublish(k.topic(pub.id), qos, false, payload); err != nil {
								errs <- err
								return
							}
						}
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}

			for _, sub := range subs {
				eventually(t, clusterTimeout, sub.id+" receives every end marker", func() error {
					for _, pub := range pubs {
						for _, k := range kinds {
							if end := fmt.Sprintf("%s/%s/end", k.name, pub.id); !sub.rec.hasPayload(end) {
								return fmt.Errorf("no %s", end)
							}
						}
					}
					return nil
				})
				checkStreams(t, sub, qos, perTopic)
			}
		})
	}
}

// checkStreams checks what sub received per publisher and filter kind: the sequence
// numbers 0..perTopic-1, each exactly once, in order, at QoS qos.
func checkStreams(t *testing.T, sub *v5Client, qos byte, perTopic int) {
	t.Helper()
	streams := map[string][]int{} // "kind/publisher" -> sequence numbers in arrival order
	for _, m := range sub.rec.data() {
		i := strings.LastIndexByte(m.payload, '/')
		if m.payload[i+1:] == "end" {
			continue
		}
		seq, err := strconv.Atoi(m.payload[i+1:])
		if err != nil {
			t.Fatalf("%s: unexpected payload %q on %s", sub.id, m.payload, m.topic)
		}
		if m.qos != qos {
			t.Errorf("%s: %q arrived at QoS %d, want %d", sub.id, m.payload, m.qos, qos)
		}
		streams[m.payload[:i]] = append(streams[m.payload[:i]], seq)
	}
	want := make([]int, perTopic)
	for i := range want {
		want[i] = i
	}
	if len(streams) != 9 {
		t.Errorf("%s: messages from %d publisher/filter pairs, want 9: %v", sub.id, len(streams), slices.Sorted(maps.Keys(streams)))
	}
	for stream, got := range streams {
		if !slices.Equal(got, want) {
			t.Errorf("%s: from %s got sequence %v, want 0..%d once each in order", sub.id, stream, got, perTopic-1)
		}
	}
}

// TestClusterSharedSubscription: a shared-subscription group with a member on each of
// the three nodes and a second group on two nodes: for 300 QoS 1 messages published
// from all nodes, each group receives each message exactly once in total.
func TestClusterSharedSubscription(t *testing.T) {
	nodes := formCluster(t, 3)
	const perPublisher = 100
	groups := map[string][]*node{"g": nodes, "h": {nodes[0], nodes[2]}}
	received := map[string]*recorder{} // one recorder for all members of a group
	for group, members := range groups {
		received[group] = &recorder{}
		for _, n := range members {
			c := connectV5(t, n, fmt.Sprintf("sh-%s-%s", group, n.name()), v5Options{cleanStart: true, rec: received[group]})
			c.subscribe(t, 1, "$share/"+group+"/sh/#")
		}
	}
	var pubs []*v5Client
	for _, n := range nodes {
		pub := connectV5(t, n, "sh-pub-"+n.name(), v5Options{cleanStart: true})
		for _, rec := range received {
			awaitRoute(t, pub, "sh/probe", rec)
		}
		pubs = append(pubs, pub)
	}

	errs := make(chan error, len(pubs))
	var wg sync.WaitGroup
	for _, pub := range pubs {
		wg.Go(func() {
			for seq := range perPublisher {
				if err := pub.tryPublish(fmt.Sprintf("sh/%s/%d", pub.id, seq), 1, false, fmt.Sprintf("%s/%d", pub.id, seq)); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	total := perPublisher * len(pubs)
	for group, rec := range received {
		eventually(t, clusterTimeout, fmt.Sprintf("group %s receives %d messages", group, total), func() error {
			if n := len(uniquePayloads(rec.data())); n < total {
				return fmt.Errorf("%d distinct messages", n)
			}
			return nil
		})
		data := rec.data()
		counts := map[string]int{}
		for _, m := range data {
			counts[m.payload]++
		}
		for payload, n := range counts {
			if n != 1 {
				t.Errorf("group %s received %q %d times", group, payload, n)
			}
		}
		if len(data) != total || len(counts) != total {
			t.Errorf("group %s received %d messages (%d distinct), want %d once each", group, len(data), len(counts), total)
		}
	}
}

// TestClusterRetained: a retained message set on one node is delivered to new
// subscribers on every node, and once cleared it is delivered on none.
func TestClusterRetained(t *testing.T) {
	nodes := formCluster(t, 3)
	pub := connectV5(t, nodes[0], "ret-pub", v5Options{cleanStart: true})
	const topic = "ret/config"

	pub.publish(t, topic, true, "eco")
	pub.publish(t, retainedMarker, true, "set")
	for _, n := range nodes {
		got := retainedAfterMarker(t, n, "set", topic)
		if len(got) != 1 || got[0].payload != "eco" || !got[0].retain || got[0].topic != topic {
			t.Fatalf("a new subscriber on %s got %+v, want the retained %q", n.name(), got, "eco")
		}
	}

	pub.publish(t, topic, true, "")
	pub.publish(t, retainedMarker, true, "cleared")
	for _, n := range nodes {
		if got := retainedAfterMarker(t, n, "cleared", topic); len(got) != 0 {
			t.Fatalf("after clearing, a new subscriber on %s got %+v", n.name(), got)
		}
	}
}

// retainedMarker is a retained topic whose value marks how far the retained set of a
// node has caught up: retained messages replicate in order, so once a node serves a
// marker value, it serves everything retained before it.
const retainedMarker = "retained-marker/x"

// retainedAfterMarker returns the retained messages that a new subscriber to filter on
// n receives once n serves marker. Each attempt subscribes, in one connection, to the
// marker, then to filter, then to the marker again through another filter: the broker
// handles them in order, so the first tells whether n has caught up, and the last
// marks the end of filter's retained messages.
func retainedAfterMarker(t *testing.T, n *node, marker, filter string) []message {
	t.Helper()
	var got []message
	attempt := 0
	eventually(t, clusterTimeout, fmt.Sprintf("%s serves retained marker %q", n.name(), marker), func() error {
		attempt++
		c, err := dialV5(n.mqttAddress(), fmt.Sprintf("ret-check-%s-%d", n.name(), attempt), v5Options{cleanStart: true})
		if err != nil {
			return err
		}
		defer c.close()
		got, err = retainedSince(t, c, 0, marker, filter)
		return err
	})
	return got
}

// retainedSince subscribes c (which has received from messages so far) to the
// retained marker, filter and the marker again, and returns the retained messages of
// filter between the two markers, or an error when the marker is not yet marker.
func retainedSince(t *testing.T, c *v5Client, from int, marker, filter string) ([]message, error) {
	t.Helper()
	c.subscribe(t, 1, retainedMarker)
	c.subscribe(t, 1, filter)
	c.subscribe(t, 1, "retained-marker/+")
	// Both marker subscriptions deliver the marker once the node has one; until then
	// neither does.
	var msgs []message
	for deadline := time.Now().Add(2 * time.Second); ; {
		msgs = c.rec.all()[from:]
		if markers := countTopic(msgs, retainedMarker); markers == 2 {
			break
		} else if markers > 2 || time.Now().After(deadline) {
			return nil, fmt.Errorf("%s got %+v", c.id, msgs)
		}
		<-time.After(pollInterval / 10)
	}
	if first := msgs[0]; first.topic != retainedMarker || first.payload != marker {
		return nil, fmt.Errorf("marker is %+v, not yet %q", first, marker)
	}
	return msgs[1 : len(msgs)-1], nil
}

func countTopic(ms []message, topic string) int {
	n := 0
	for _, m := range ms {
		if m.topic == topic {
			n++
		}
	}
	return n
}

func uniquePayloads(ms []message) map[string]bool {
	set := map[string]bool{}
	for _, m := range ms {
		set[m.payload] = true
	}
	return set
}
