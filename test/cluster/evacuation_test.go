package cluster

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Evacuation workload: clients on the evacuated node, publishers on another.
const (
	evacClients            = 200 // half MQTT 3.1.1, half MQTT 5
	evacPublishers         = 4
	evacRound              = 200 * time.Millisecond // each publisher sends one message per client per round
	evacTimeout            = 90 * time.Second       // evacuation of all clients at a bounded rate
	reasonUseAnotherServer = 0x9C
)

// TestClusterEvacuation: a node with 200 connected persistent clients (v3.1.1 and v5)
// is evacuated while QoS 1 traffic to every client flows from another node. The v5
// clients are told to use another server, every client reconnects to one of the other
// nodes and finds its session there, the evacuation reports done with nothing left,
// and no QoS 1 message is lost.
func TestClusterEvacuation(t *testing.T) {
	nodes := formCluster(t, 3)
	a, b, c := nodes[0], nodes[1], nodes[2]

	clients := make([]*evacClient, evacClients)
	for i := range clients {
		clients[i] = connectEvacClient(t, i, c, []*node{a, b})
	}
	pubs := make([]*v5Client, evacPublishers)
	for w := range pubs {
		pubs[w] = connectV5(t, a, fmt.Sprintf("evac-pub-%d", w), v5Options{cleanStart: true})
	}
	eventually(t, clusterTimeout, "routes of every client reach "+a.name(), func() error {
		missing := 0
		for _, cl := range clients {
			if cl.rec.hasPayload(probePrefix + "route") {
				continue
			}
			missing++
			if err := pubs[0].tryPublish(cl.topic, 1, false, probePrefix+"route"); err != nil {
				return err
			}
		}
		if missing > 0 {
			return fmt.Errorf("%d clients without a route", missing)
		}
		return nil
	})

	traffic := startEvacTraffic(pubs, clients)
	eventually(t, clusterTimeout, "traffic reaches every client", func() error {
		if err := traffic.failed(); err != nil {
			t.Fatal(err)
		}
		for _, cl := range clients {
			if len(cl.rec.data()) == 0 {
				return fmt.Errorf("%s received nothing yet", cl.id)
			}
		}
		return nil
	})

	c.mustPost("/api/v1/node/evacuate", nil, http.StatusAccepted)
	c.mustPost("/api/v1/node/evacuate", nil, http.StatusAccepted) // idempotent
	eventually(t, clusterTimeout, c.name()+" is not ready while evacuating", func() error {
		status, _, err := c.call(http.MethodGet, "/readyz", nil, false)
		if err == nil && status != http.StatusServiceUnavailable {
			err = fmt.Errorf("/readyz: %d", status)
		}
		return err
	})
	if ni := c.mustInfo(); !ni.Evacuating {
		t.Errorf("%s during evacuation: %+v", c.name(), ni)
	}
	var report evacuation
	eventually(t, evacTimeout, "the evacuation of "+c.name()+" finishes", func() error {
		if err := traffic.failed(); err != nil {
			t.Fatal(err)
		}
		if err := c.getJSON("/api/v1/node/evacuation", &report); err != nil {
			return err
		}
		if report.State != "done" {
			return fmt.Errorf("%+v", report)
		}
		return nil
	})
	if report.Clients != 0 || report.Sessions != 0 {
		t.Errorf("evacuation done with %+v, want no clients and no sessions left", report)
	}
	if status, _, err := c.call(http.MethodGet, "/readyz", nil, false); err != nil || status != http.StatusServiceUnavailable {
		t.Errorf("/readyz after the evacuation: %d %v, want 503", status, err)
	}

	eventually(t, clusterTimeout, "every client is connected to "+a.name()+" or "+b.name(), func() error {
		for _, cl := range clients {
			if n := cl.connectedTo(); n != a && n != b {
				return fmt.Errorf("%s is not connected to %s or %s", cl.id, a.name(), b.name())
			}
		}
		if err := expectConnections(0, c); err != nil {
			return err
		}
		return expectConnections(evacClients+evacPublishers, a, b)
	})
	// More traffic to the clients in their new places, then count.
	more := traffic.total() + 2*evacClients
	eventually(t, clusterTimeout, "traffic after the evacuation", func() error {
		if got := traffic.total(); got < more {
			return fmt.Errorf("%d of %d published", got, more)
		}
		return nil
	})
	published := traffic.stop(t)

	for _, cl := range clients {
		cl.check(t)
	}
	eventually(t, clusterTimeout, "every published message reaches its client", func() error {
		lost, clientsV3, clientsV5, example := 0, 0, 0, ""
		for i, cl := range clients {
			missing := cl.missing(published[i])
			if len(missing) == 0 {
				continue
			}
			lost += len(missing)
			if cl.v5 {
				clientsV5++
			} else {
				clientsV3++
			}
			example = fmt.Sprintf("%s misses %v of %d", cl.id, firstFew(missing), published[i])
		}
		if lost > 0 {
			return fmt.Errorf("%d messages missing at %d v3.1.1 and %d v5 clients, e.g. %s", lost, clientsV3, clientsV5, example)
		}
		return nil
	})
}

// evacClient is a persistent client, v3.1.1 or v5, that starts on one node and, each
// time its connection ends, reconnects to the next of its fallback nodes, resuming
// its session. Its messages go to one recorder across connections.
type evacClient struct {
	index    int
	id       string
	v5       bool
	topic    string
	rec      *recorder
	fallback []*node
	quit     chan struct{}

	mu            sync.Mutex
	node          *node  // where it is connected; nil while reconnecting
	reasons       []byte // reason codes of the server's DISCONNECTs (v5)
	reconnects    int
	reasonsDone   int      // connections whose DISCONNECT reason was waited for
	sessionLost   []string // reconnects that found no session
	connectErrors []string // failed reconnect attempts (retried)
}

// connectEvacClient connects client i to first with a new persistent session,
// subscribes it to its topic and supervises its reconnections until the test ends.
func connectEvacClient(t *testing.T, i int, first *node, fallback []*node) *evacClient {
	t.Helper()
	cl := &evacClient{
		index: i, v5: i%2 == 1, id: fmt.Sprintf("evac-%03d", i), topic: fmt.Sprintf("evac/%03d", i),
		rec: &recorder{}, fallback: fallback, quit: make(chan struct{}),
	}
	conn, err := cl.dial(first, true)
	if err != nil {
		t.Fatal(err)
	}
	if err := conn.subscribe(cl.topic); err != nil {
		t.Fatal(err)
	}
	cl.node = first
	go cl.supervise(conn)
	t.Cleanup(func() { close(cl.quit) })
	return cl
}

// evacConn is one connection of an evacClient, whatever its protocol version.
type evacConn struct {
	ended          <-chan struct{} // closed when the connection is gone
	sessionPresent bool
	subscribe      func(topic string) error
	// reason waits for the reason code of the server's DISCONNECT, if it sent one.
	// paho.golang reports that DISCONNECT only after the connection has ended.
	reason func() (byte, bool)
	close  func()
}

func (cl *evacClient) dial(n *node, first bool) (*evacConn, error) {
	if cl.v5 {
		c, err := dialV5(n.mqttAddress(), cl.id, v5Options{cleanStart: first, expiry: sessionExpiry, rec: cl.rec})
		if err != nil {
			return nil, err
		}
		return &evacConn{
			ended:          c.Done(),
			sessionPresent: c.connack.SessionPresent,
			subscribe:      func(topic string) error { return c.trySubscribe(1, topic) },
			reason: func() (byte, bool) {
				select {
				case d := <-c.serverDisconnect:
					return d.ReasonCode, true
				case <-time.After(mqttTimeout):
					return 0, false
				}
			},
			close: c.close,
		}, nil
	}
	c, err := dialV3(n.mqttAddress(), cl.id, false, cl.rec)
	if err != nil {
		return nil, err
	}
	ended := make(chan struct{})
	go func() {
		<-c.lost
		close(ended)
	}()
	return &evacConn{
		ended:          ended,
		sessionPresent: c.sessionPresent,
		subscribe:      func(topic string) error { return c.subscribe(topic, 1) },
		reason:         func() (byte, bool) { return 0, false },
		close:          c.close,
	}, nil
}

// supervise waits for the connection to end and reconnects, to the fallback nodes in
// turn (starting at one that depends on the client, to spread them), until quit.
func (cl *evacClient) supervise(conn *evacConn) {
	for {
		select {
		case <-cl.quit:
			conn.close()
			return
		case <-conn.ended:
		}
		go cl.recordReason(conn)
		cl.mu.Lock()
		cl.node = nil
		cl.mu.Unlock()
		for attempt := 0; ; attempt++ {
			n := cl.fallback[(cl.index+attempt)%len(cl.fallback)]
			next, err := cl.dial(n, false)
			if err == nil {
				cl.mu.Lock()
				cl.node, cl.reconnects = n, cl.reconnects+1
				if !next.sessionPresent {
					cl.sessionLost = append(cl.sessionLost, n.name())
				}
				cl.mu.Unlock()
				conn = next
				break
			}
			cl.mu.Lock()
			cl.connectErrors = append(cl.connectErrors, err.Error())
			cl.mu.Unlock()
			select {
			case <-cl.quit:
				return
			case <-time.After(pollInterval): // back off before the next node
			}
		}
	}
}

func (cl *evacClient) recordReason(conn *evacConn) {
	code, ok := conn.reason()
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if ok {
		cl.reasons = append(cl.reasons, code)
	}
	cl.reasonsDone++
}

func (cl *evacClient) connectedTo() *node {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	return cl.node
}

// check asserts the client moved, kept its session, and (v5) was told to use another
// server.
func (cl *evacClient) check(t *testing.T) {
	t.Helper()
	eventually(t, 2*mqttTimeout, cl.id+": the end of its first connection is recorded", func() error {
		cl.mu.Lock()
		defer cl.mu.Unlock()
		if cl.reasonsDone == 0 {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if len(cl.sessionLost) > 0 {
		t.Errorf("%s reconnected without its session to %v", cl.id, cl.sessionLost)
	}
	if len(cl.connectErrors) > 0 {
		t.Logf("%s: %d failed reconnect attempts, first: %s", cl.id, len(cl.connectErrors), cl.connectErrors[0])
	}
	if cl.reconnects == 0 {
		t.Errorf("%s never left the evacuated node", cl.id)
	}
	if cl.v5 && (len(cl.reasons) == 0 || cl.reasons[0] != reasonUseAnotherServer) {
		t.Errorf("%s: server DISCONNECT reasons %x, want 0x9C (use another server)", cl.id, cl.reasons)
	}
}

// missing returns the numbers in 0..published-1 the client has not received.
func (cl *evacClient) missing(published int) []int {
	got := map[int]bool{}
	for _, m := range cl.rec.data() {
		if n, err := strconv.Atoi(m.payload); err == nil {
			got[n] = true
		}
	}
	var out []int
	for i := range published {
		if !got[i] {
			out = append(out, i)
		}
	}
	return out
}

// evacTraffic is the publishers' workload: numbered QoS 1 messages to every client's
// topic, one per client per round.
type evacTraffic struct {
	published []atomic.Int64 // acknowledged messages per client
	unrouted  atomic.Int64   // of those, acknowledged with "no matching subscribers"
	stopping  chan struct{}
	wg        sync.WaitGroup
	mu        sync.Mutex
	err       error
}

func startEvacTraffic(pubs []*v5Client, clients []*evacClient) *evacTraffic {
	tr := &evacTraffic{published: make([]atomic.Int64, len(clients)), stopping: make(chan struct{})}
	for w, pub := range pubs {
		tr.wg.Go(func() {
			tick := time.NewTicker(evacRound)
			defer tick.Stop()
			for {
				for i := w; i < len(clients); i += len(pubs) {
					seq := tr.published[i].Load()
					err := pub.tryPublish(clients[i].topic, 1, false, strconv.FormatInt(seq, 10))
					if errors.Is(err, errNoMatchingSubscribers) {
						// Lost for sure; keep going to count every loss.
						tr.unrouted.Add(1)
						err = nil
					}
					if err != nil {
						tr.mu.Lock()
						tr.err = err
						tr.mu.Unlock()
						return
					}
					tr.published[i].Add(1)
				}
				select {
				case <-tr.stopping:
					return
				case <-tick.C:
				}
			}
		})
	}
	return tr
}

func (tr *evacTraffic) failed() error {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.err
}

func (tr *evacTraffic) total() int64 {
	var sum int64
	for i := range tr.published {
		sum += tr.published[i].Load()
	}
	return sum
}

// stop ends the traffic and returns how many messages each client was sent.
func (tr *evacTraffic) stop(t *testing.T) []int {
	t.Helper()
	close(tr.stopping)
	tr.wg.Wait()
	if err := tr.failed(); err != nil {
		t.Fatal(err)
	}
	if n := tr.unrouted.Load(); n > 0 {
		t.Errorf("%d of %d messages were acknowledged with no matching subscribers: their clients' sessions had no route", n, tr.total())
	}
	out := make([]int, len(tr.published))
	for i := range out {
		out[i] = int(tr.published[i].Load())
	}
	return out
}

func firstFew(ns []int) []int {
	if len(ns) > 5 {
		return ns[:5]
	}
	return ns
}
