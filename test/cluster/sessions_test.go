package cluster

import (
	"fmt"
	"strconv"
	"sync"
	"testing"
)

// sessionExpiry is the session expiry interval of the persistent v5 clients.
const sessionExpiry = 300

// persistent are the CONNECT options of a persistent v5 client: its session is
// resumed if there is one and outlives the connection.
func persistent() v5Options {
	return v5Options{cleanStart: false, expiry: sessionExpiry}
}

// TestClusterTakeover: a persistent session moves with its client from node A to node
// B and brings the messages queued for it meanwhile (published on node C); and two
// connects with one client ID on two nodes at once leave exactly one connection.
func TestClusterTakeover(t *testing.T) {
	nodes := formCluster(t, 3)
	a, b, c := nodes[0], nodes[1], nodes[2]
	const topic, queued = "takeover/roamer", 50

	roamer := connectV5(t, a, "roamer", persistent())
	if roamer.connack.SessionPresent {
		t.Fatal("a new client ID found a session")
	}
	roamer.subscribe(t, 1, topic)
	pub := connectV5(t, c, "takeover-pub", v5Options{cleanStart: true})
	awaitRoute(t, pub, topic, roamer.rec)
	roamer.close()
	eventually(t, clusterTimeout, "the roamer's connection is gone", func() error {
		return expectConnections(0, a) // the publisher is on c
	})

	for i := range queued {
		pub.publish(t, topic, false, strconv.Itoa(i))
	}
	moved := connectV5(t, b, "roamer", persistent())
	if !moved.connack.SessionPresent {
		t.Fatalf("connecting to %s: session present false, want the session from %s", b.name(), a.name())
	}
	eventually(t, clusterTimeout, "the queued messages arrive on "+b.name(), func() error {
		if got := len(uniquePayloads(moved.rec.data())); got < queued {
			return fmt.Errorf("%d of %d", got, queued)
		}
		return nil
	})
	if got := firstOccurrences(moved.rec.data()); !isSequence(got, queued) {
		t.Fatalf("queued messages arrived as %v, want 0..%d in order", got, queued-1)
	}
	moved.close()
	pub.close()

	// Simultaneous connects with one ID on two nodes, several times over.
	for round := range 5 {
		id := fmt.Sprintf("racer-%d", round)
		clients := raceConnect(t, id, a, b)
		eventually(t, clusterTimeout, id+": one connection is left", func() error {
			alive := 0
			for _, cl := range clients {
				if cl.alive() {
					alive++
				}
			}
			if alive != 1 {
				return fmt.Errorf("%d of the clients still connected", alive)
			}
			return expectConnections(1, a, b, c)
		})
		for _, cl := range clients {
			cl.close()
		}
		eventually(t, clusterTimeout, "no connections left after round "+strconv.Itoa(round), func() error {
			return expectConnections(0, a, b, c)
		})
	}
}

// raceConnect connects a client with id to each node at the same moment and returns
// those whose CONNECT succeeded (a refused one is a valid outcome of the race).
func raceConnect(t *testing.T, id string, nodes ...*node) []*v5Client {
	t.Helper()
	var (
		mu      sync.Mutex
		clients []*v5Client
		wg      sync.WaitGroup
	)
	start := make(chan struct{})
	for _, n := range nodes {
		addr := n.mqttAddress()
		wg.Go(func() {
			<-start
			c, err := dialV5(addr, id, v5Options{cleanStart: true, expiry: sessionExpiry})
			if err != nil {
				t.Logf("%s on %s: %v", id, addr, err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			clients = append(clients, c)
		})
	}
	close(start)
	wg.Wait()
	for _, c := range clients {
		t.Cleanup(c.close)
	}
	if len(clients) == 0 {
		t.Fatalf("%s: every connect was refused", id)
	}
	return clients
}

// expectConnections checks that the nodes together hold want client connections.
func expectConnections(want int, nodes ...*node) error {
	total, detail, err := connectionsOn(nodes...)
	if err == nil && total != want {
		err = fmt.Errorf("%d connections (%s), want %d", total, detail, want)
	}
	return err
}

// firstOccurrences returns the numeric payloads in the order of their first arrival
// (a QoS 1 redelivery may repeat one).
func firstOccurrences(ms []message) []int {
	seen := map[string]bool{}
	var out []int
	for _, m := range ms {
		if seen[m.payload] {
			continue
		}
		seen[m.payload] = true
		n, err := strconv.Atoi(m.payload)
		if err != nil {
			n = -1
		}
		out = append(out, n)
	}
	return out
}

// isSequence reports whether got is 0..n-1.
func isSequence(got []int, n int) bool {
	if len(got) != n {
		return false
	}
	for i, v := range got {
		if v != i {
			return false
		}
	}
	return true
}
