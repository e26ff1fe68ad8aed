package cluster

import (
	"fmt"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"
)

// detectTimeout bounds how long a node takes to notice that a peer went silent: the
// links' heartbeat timeout (4 s) plus a check interval and some slack for a loaded
// machine. Before heartbeats, a frozen peer's links stayed "up" until a TCP write
// timed out, which with little traffic is never.
const detectTimeout = 10 * time.Second

// freeze stops n's process (SIGSTOP) as a silent cut does: its connections stay open,
// nothing is answered, no reset is sent. The test's cleanup kills it (SIGKILL works on
// a stopped process).
func (n *node) freeze() { n.signal(syscall.SIGSTOP) }

func (n *node) thaw() { n.signal(syscall.SIGCONT) }

// readyz returns a check that n's /readyz answers want.
func readyz(n *node, want int) func() error {
	return func() error {
		status, _, err := n.call(http.MethodGet, "/readyz", nil, false)
		if err == nil && status != want {
			err = fmt.Errorf("/readyz: %d, want %d", status, want)
		}
		return err
	}
}

// logged returns a check that n's log has a line containing text (the log is read
// from the process's output as it comes, so a line may show a moment after the
// state it reports).
func logged(n *node, text string) func() error {
	return func() error {
		if !n.logs.Contains(text) {
			return fmt.Errorf("%s has not logged %q", n.name(), text)
		}
		return nil
	}
}

// reachability returns a check that n's view of the cluster marks the members in
// want as reachable or not.
func reachability(n *node, want map[string]bool) func() error {
	return func() error {
		v, err := n.cluster()
		if err != nil {
			return err
		}
		for _, m := range v.Members {
			if w, ok := want[m.Name]; ok && m.Reachable != w {
				return fmt.Errorf("%s: member %s reachable=%v, want %v", n.name(), m.Name, m.Reachable, w)
			}
		}
		return nil
	}
}

// metricLine returns a check that n's /metrics has the line want.
func metricLine(n *node, want string) func() error {
	return func() error {
		status, body, err := n.call(http.MethodGet, "/metrics", nil, false)
		if err != nil {
			return err
		}
		if status != http.StatusOK {
			return fmt.Errorf("/metrics: %d", status)
		}
		for _, l := range strings.Split(string(body), "\n") {
			if l == want {
				return nil
			}
		}
		return fmt.Errorf("/metrics has no line %q", want)
	}
}

// TestSilentCutNoticed: peers that go silent without closing their connections (here
// frozen with SIGSTOP, as a silent network cut looks to the survivor) are marked
// unreachable within the heartbeat bound, counted in the metrics, and the survivor,
// reaching no majority, reports not ready; once they answer again, all comes back.
// Before link heartbeats, every member stayed reachable and the node ready: a link
// failed only on a TCP error.
func TestSilentCutNoticed(t *testing.T) {
	nodes := formCluster(t, 3)
	a, b, c := nodes[0], nodes[1], nodes[2]
	eventually(t, clusterTimeout, a.name()+" ready", readyz(a, http.StatusOK))

	c.freeze()
	eventually(t, detectTimeout, a.name()+" marks the frozen "+c.name()+" unreachable",
		reachability(a, map[string]bool{b.name(): true, c.name(): false}))
	eventually(t, detectTimeout, b.name()+" marks the frozen "+c.name()+" unreachable",
		reachability(b, map[string]bool{a.name(): true, c.name(): false}))
	eventually(t, mqttTimeout, a.name()+" counts one unreachable member",
		metricLine(a, "mqttd_cluster_unreachable_members 1"))
	eventually(t, mqttTimeout, a.name()+" still ready with 2 of 3 voters", readyz(a, http.StatusOK))

	b.freeze()
	eventually(t, detectTimeout, a.name()+" marks both frozen peers unreachable",
		reachability(a, map[string]bool{b.name(): false, c.name(): false}))
	eventually(t, detectTimeout, a.name()+" not ready with 1 of 3 voters", readyz(a, http.StatusServiceUnavailable))
	eventually(t, mqttTimeout, a.name()+" logs the heartbeat timeout", logged(a, "heartbeat timeout"))
	if err := metricLine(a, "mqttd_cluster_heartbeat_timeouts_total 0")(); err == nil {
		t.Errorf("%s counts no heartbeat timeout", a.name())
	}

	b.thaw()
	c.thaw()
	for _, n := range nodes {
		eventually(t, clusterTimeout, n.name()+" reaches every member again",
			reachability(n, map[string]bool{a.name(): true, b.name(): true, c.name(): true}))
		eventually(t, clusterTimeout, n.name()+" ready again", readyz(n, http.StatusOK))
	}
}

// doubled returns the payloads received more than once without DUP: a message written
// twice by the broker as new. (One received only with DUP is allowed: a QoS 1 delivery
// in flight when its client went away is resent with DUP, and may be its only copy.)
func doubled(ms []message) []string {
	seen := map[string]int{}
	var out []string
	for _, m := range ms {
		if m.dup {
			continue
		}
		if seen[m.payload]++; seen[m.payload] == 2 {
			out = append(out, m.payload)
		}
	}
	return out
}

// TestUnreachableSubscribersGetEverything: QoS 1 subscribers on a node that goes
// silent (frozen) while a publisher on another node goes on: one connected the whole
// time, one offline that comes back to its old node, one offline that comes back to a
// third node. Every message acknowledged to the publisher reaches each of them, in
// order, once the node answers again: the publisher's node keeps what the cut-off node's
// routes matched in its outbox and writes it after the reconnect. With heartbeats and
// no outbox, the cut-off node's routes were forgotten when its link failed and the
// messages were acknowledged "no matching subscribers" and lost; before heartbeats
// (today's main) such a forward was acknowledged after 10 s without an answer and lost
// if the connection then failed.
func TestUnreachableSubscribersGetEverything(t *testing.T) {
	nodes := formCluster(t, 3)
	a, b, c := nodes[0], nodes[1], nodes[2]
	const topic = "part/q1"
	online := connectV5(t, c, "part-online", persistent())
	online.subscribe(t, 1, topic)
	back := connectV5(t, c, "part-back", persistent())
	back.subscribe(t, 1, topic)
	moved := connectV5(t, c, "part-moved", persistent())
	moved.subscribe(t, 1, topic)
	pub := connectV5(t, a, "part-pub", v5Options{cleanStart: true})
	awaitRoute(t, pub, topic, online.rec)
	back.close()
	moved.close()

	s := startPacedStream(pub, topic, 5*time.Millisecond)
	waitPublished(t, s, 50)
	c.freeze()
	eventually(t, detectTimeout, a.name()+" marks the frozen "+c.name()+" unreachable",
		reachability(a, map[string]bool{c.name(): false}))
	cut := s.published.Load()
	waitPublished(t, s, cut+300) // acknowledged while c cannot be reached
	c.thaw()
	eventually(t, clusterTimeout, a.name()+" reaches "+c.name()+" again",
		reachability(a, map[string]bool{c.name(): true}))
	waitPublished(t, s, s.published.Load()+50)
	total := s.stop(t)
	t.Logf("%d messages acknowledged, %d of them while %s was cut off", total, total-int(cut), c.name())

	expectSequence(t, online, total)
	back = connectV5(t, c, "part-back", v5Options{expiry: sessionExpiry, rec: back.rec})
	expectSequence(t, back, total)
	moved = connectV5(t, b, "part-moved", v5Options{expiry: sessionExpiry, rec: moved.rec})
	expectSequence(t, moved, total)
	// Once: a message written again after the reconnect must not come twice as new. A
	// QoS 1 resend of an unacknowledged delivery carries DUP and is allowed (and may be
	// the only copy: the first send was in flight when the client went away).
	// The client connected throughout gets each message once, none resent.
	if n, d := len(online.rec.data()), doubled(online.rec.data()); n != total || len(d) > 0 {
		t.Errorf("%s received %d messages for %d (twice without DUP: %d)", online.id, n, total, len(d))
	}
	for _, sub := range []*v5Client{online, back, moved} {
		if d := doubled(sub.rec.data()); len(d) > 0 {
			t.Errorf("%s received %d messages twice without DUP: %v", sub.id, len(d), d[:min(5, len(d))])
		}
	}
	eventually(t, mqttTimeout, a.name()+"'s outbox is empty", metricLine(a, "mqttd_cluster_outbox_messages 0"))
	if err := metricLine(a, "mqttd_cluster_outbox_dropped_total 0")(); err != nil {
		t.Error(err)
	}
}

// connectBound is the longest a connect on a reachable node may wait for its CONNACK
// while another node has just gone silent (docs/clustering.md): the heartbeat timeout
// that ends the wait for the silent node, plus slack for a loaded machine.
const connectBound = 9 * time.Second

// TestConnectDuringCut: while a node has just gone silent (frozen), connects of new
// client IDs on another node are answered within connectBound — accepted, or refused
// with "try again" when the silent node owned the ID — and once the silent node is
// marked unreachable every connect is accepted at once, its IDs owned by the nodes
// that are left. Before heartbeats, a connect whose client ID the silent node owned
// waited 15 s for the takeover's request to time out.
func TestConnectDuringCut(t *testing.T) {
	nodes := formCluster(t, 3)
	a, c := nodes[0], nodes[2]
	c.freeze()
	const clients = 12
	type result struct {
		id      string
		err     error
		elapsed time.Duration
	}
	// Random IDs: about a third of them are owned by the silent node.
	ids := make([]string, clients)
	for i := range ids {
		ids[i] = "cut-" + randomHex(6)
	}
	results := make(chan result, clients)
	for _, id := range ids {
		go func() {
			start := time.Now()
			cl, err := dialV5(a.mqttAddress(), id, v5Options{cleanStart: true})
			if err == nil {
				cl.close()
			}
			results <- result{id, err, time.Since(start)}
		}()
	}
	refused := 0
	var worst time.Duration
	for range clients {
		r := <-results
		worst = max(worst, r.elapsed)
		if r.elapsed > connectBound {
			t.Errorf("%s: answered after %v (%v), want within %v", r.id, r.elapsed.Round(time.Millisecond), r.err, connectBound)
		}
		if r.err != nil {
			refused++
			t.Logf("%s refused after %v: %v", r.id, r.elapsed.Round(time.Millisecond), r.err)
		}
	}
	t.Logf("%d connects right after the cut: %d refused, slowest answer %v", clients, refused, worst.Round(time.Millisecond))
	eventually(t, detectTimeout, a.name()+" marks the frozen "+c.name()+" unreachable",
		reachability(a, map[string]bool{c.name(): false}))
	for _, id := range ids {
		start := time.Now()
		cl, err := dialV5(a.mqttAddress(), id, v5Options{cleanStart: true})
		if err != nil {
			t.Fatalf("%s once %s is known unreachable: %v", id, c.name(), err)
		}
		cl.close()
		if d := time.Since(start); d > connectBound {
			t.Errorf("%s once %s is known unreachable: CONNACK after %v", id, c.name(), d)
		}
	}
}
