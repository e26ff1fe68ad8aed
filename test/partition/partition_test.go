package partition

import (
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// TestDetection: during a silent cut of C, A and B mark C unreachable and C marks
// them unreachable within the heartbeat bound; C, reaching no majority, answers
// /readyz 503 within it while A stays ready; after the heal all of it recovers.
func TestDetection(t *testing.T) {
	nw := newNetwork(t)
	nodes := formCluster(t, nw)
	a, b, c := nodes[0], nodes[1], nodes[2]

	nw.isolate(t, c.index)
	cutAt := time.Now()
	for _, n := range []*node{a, b} {
		eventually(t, detectTimeout-time.Since(cutAt), n.name()+" marks the cut-off "+c.name()+" unreachable",
			reachability(n, map[string]bool{c.name(): false}))
		t.Logf("%s marked %s unreachable %v after the cut", n.name(), c.name(), time.Since(cutAt).Round(time.Millisecond))
	}
	eventually(t, detectTimeout-time.Since(cutAt), c.name()+" marks both peers unreachable",
		reachability(c, map[string]bool{a.name(): false, b.name(): false}))
	t.Logf("%s marked both peers unreachable %v after the cut", c.name(), time.Since(cutAt).Round(time.Millisecond))
	eventually(t, detectTimeout-time.Since(cutAt), c.name()+" not ready without a majority", readyz(c, http.StatusServiceUnavailable))
	t.Logf("%s answered /readyz 503 %v after the cut", c.name(), time.Since(cutAt).Round(time.Millisecond))
	for _, n := range []*node{a, b} {
		if err := readyz(n, http.StatusOK)(); err != nil {
			t.Errorf("%s, with 2 of 3 voters: %v", n.name(), err)
		}
	}
	// GET /api/v1/node says which members are out of reach and why a node is not
	// ready (what the operator shows in status.members).
	for _, n := range nodes {
		want := []string{c.name()}
		if n == c {
			want = []string{a.name(), b.name()}
		}
		in, err := n.info()
		switch {
		case err != nil:
			t.Errorf("%s: %v", n.name(), err)
		case !slices.Equal(in.Unreachable, want):
			t.Errorf("%s reports unreachable %v, want %v", n.name(), in.Unreachable, want)
		case n == c && (in.Ready || !strings.Contains(in.NotReadyReason, "majority")):
			t.Errorf("%s: ready %v, reason %q; want not ready, cut off from the majority", n.name(), in.Ready, in.NotReadyReason)
		case n != c && (!in.Ready || in.NotReadyReason != ""):
			t.Errorf("%s: ready %v, reason %q; want ready", n.name(), in.Ready, in.NotReadyReason)
		}
	}

	nw.healAll(t)
	healedAt := time.Now()
	for _, n := range nodes {
		// A link that comes up sends its full route set first: reachable both ways
		// means routes exchanged. The bound is docs/clustering.md's: a redial every
		// 250 ms with a 10 s dial timeout, then the hello.
		eventually(t, healBound-time.Since(healedAt), n.name()+" reaches every member again", reachability(n, allReachable(nodes)))
		eventually(t, clusterTimeout, n.name()+" ready again", readyz(n, http.StatusOK))
	}
	t.Logf("all reachable and ready %v after the heal", time.Since(healedAt).Round(time.Millisecond))
	waitClusterSize(t, nodes, len(nodes))
}

// TestRetainedDuringIsolation: while C is cut off, a retained publish on the majority
// succeeds and one on C is refused with PUBACK 0x80 (raft cannot commit it), and C
// does not serve it; after the heal every node serves the same retained set, the one
// the cluster committed.
func TestRetainedDuringIsolation(t *testing.T) {
	nw := newNetwork(t)
	nodes := formCluster(t, nw)
	a, c := nodes[0], nodes[2]
	pubA := connectV5(t, a, "ret-pub-a", v5Options{cleanStart: true})
	pubC := connectV5(t, c, "ret-pub-c", v5Options{cleanStart: true})
	publishRetained(t, pubA, "ret/base", "base", false)
	before := map[string]string{"ret/base": "base"}
	for _, n := range nodes {
		awaitRetainedSet(t, n, before, clusterTimeout)
	}

	nw.isolate(t, c.index)
	eventually(t, detectTimeout, a.name()+" marks the cut-off "+c.name()+" unreachable",
		reachability(a, map[string]bool{c.name(): false}))
	eventually(t, detectTimeout, c.name()+" not ready without a majority", readyz(c, http.StatusServiceUnavailable))
	publishRetained(t, pubA, "ret/majority", "majority", false)
	publishRetained(t, pubC, "ret/minority", "minority", true)
	// C still serves what the cluster committed before the cut, and nothing of its
	// refused publish: to a connection it had before the cut (it refuses new ones
	// while it reaches no majority).
	if cl, err := dialV5(c, "ret-new-on-minority", v5Options{cleanStart: true}, mqttTimeout); err == nil {
		cl.close()
		t.Errorf("%s accepted a new connection while cut off from the majority", c.name())
	}
	if got, err := retainedVia(pubC, len(before)); err != nil {
		t.Fatal(err)
	} else if !maps.Equal(got, before) {
		t.Fatalf("%s during the cut serves %v, want %v", c.name(), got, before)
	}

	nw.healAll(t)
	want := map[string]string{"ret/base": "base", "ret/majority": "majority"}
	healedAt := time.Now()
	for _, n := range nodes {
		awaitRetainedSet(t, n, want, clusterTimeout)
	}
	t.Logf("every node serves %v %v after the heal", want, time.Since(healedAt).Round(time.Millisecond))
}

// publishRetained publishes a retained QoS 1 message and checks the PUBACK: 0x80
// (unspecified error) when refused, otherwise success or "no matching subscribers".
func publishRetained(t *testing.T, c *v5Client, topic, payload string, refused bool) {
	t.Helper()
	start := time.Now()
	code, err := c.publishQoS1(topic, true, []byte(payload), publishTimeout)
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(start).Round(time.Millisecond)
	switch {
	case refused && code != 0x80:
		t.Errorf("retained publish of %s on %s: PUBACK 0x%02X after %v, want 0x80 (refused)", topic, c.node, code, took)
	case !refused && code != 0x00 && code != 0x10:
		t.Errorf("retained publish of %s on %s: PUBACK 0x%02X after %v, want success", topic, c.node, code, took)
	default:
		t.Logf("retained publish of %s on %s: PUBACK 0x%02X after %v", topic, c.node, code, took)
	}
}

// awaitRetainedSet polls until a fresh subscriber to ret/# on n receives exactly want
// (topic to payload) as retained messages.
func awaitRetainedSet(t *testing.T, n *node, want map[string]string, timeout time.Duration) {
	t.Helper()
	attempt := 0
	eventually(t, timeout, fmt.Sprintf("%s serves the retained set %v", n.name(), want), func() error {
		attempt++
		got, err := retainedSet(n, fmt.Sprintf("ret-check-%s-%d", n.name(), attempt), len(want))
		if err != nil {
			return err
		}
		if !maps.Equal(got, want) {
			return fmt.Errorf("%s serves %v", n.name(), got)
		}
		return nil
	})
}

// retainedSet subscribes a new client on n to ret/# and returns the retained messages
// it receives: it waits until it has at least want of them, then a little longer for
// more (for at most a second in all).
func retainedSet(n *node, id string, want int) (map[string]string, error) {
	c, err := dialV5(n, id, v5Options{cleanStart: true}, mqttTimeout)
	if err != nil {
		return nil, err
	}
	defer c.close()
	return retainedVia(c, want)
}

// retainedVia subscribes c to ret/# and returns the retained messages it receives
// after that, as retainedSet does.
func retainedVia(c *v5Client, want int) (map[string]string, error) {
	from := len(c.rec.all())
	ctx, cancel := contextWithTimeout(mqttTimeout)
	defer cancel()
	if _, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "ret/#", QoS: 1}}}); err != nil {
		return nil, err
	}
	got := map[string]string{}
	end := time.NewTimer(time.Second)
	defer end.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	enough := time.Time{}
	for {
		for _, m := range c.rec.all()[from:] {
			if m.retain {
				got[m.topic] = m.payload
			}
		}
		if len(got) >= want && enough.IsZero() {
			enough = time.Now()
		}
		if !enough.IsZero() && time.Since(enough) > 200*time.Millisecond {
			return got, nil
		}
		select {
		case <-end.C:
			return got, nil
		case <-tick.C:
		}
	}
}

// TestSameClientIDBothSides: while C is cut off, client ID "dup" connects on A (the
// majority) and then on C; client ID "stale", connected on C (a persistent session)
// before the cut, connects on A during it. After the heal, within 30 s, exactly one
// connection with each ID remains, and it is the one on A: the majority's owner
// ordered its connect, the minority could not reach the cluster's owner to order its
// own, and A kicks on C the older "stale" once C is back (a stale kick).
//
// During the cut, connects of brand-new client IDs on A get their CONNACK within
// 10 s, also before the cut is noticed (when A may still pick C as an ID's owner).
func TestSameClientIDBothSides(t *testing.T) {
	const connectBound = 10 * time.Second
	nw := newNetwork(t)
	nodes := formCluster(t, nw)
	a, c := nodes[0], nodes[2]
	staleC := connectV5(t, c, "stale", persistent(nil))

	nw.isolate(t, c.index)
	cutAt := time.Now()
	// New client IDs on A from the moment of the cut until well after it is noticed.
	var times []string
	var worst time.Duration
	pace := time.NewTicker(250 * time.Millisecond)
	defer pace.Stop()
	for i := 0; time.Since(cutAt) < 8*time.Second; i++ {
		if i > 0 {
			<-pace.C
		}
		start := time.Now()
		cl, err := dialV5(a, fmt.Sprintf("fresh-%d", i), v5Options{cleanStart: true}, 2*connectBound)
		took := time.Since(start)
		worst = max(worst, took)
		times = append(times, took.Round(time.Millisecond).String())
		if err != nil {
			t.Errorf("connect of a new client ID on %s %v after the cut failed after %v: %v",
				a.name(), start.Sub(cutAt).Round(time.Millisecond), took.Round(time.Millisecond), err)
			continue
		}
		cl.close()
		if took > connectBound {
			t.Errorf("connect of a new client ID on %s %v after the cut took %v, want at most %v",
				a.name(), start.Sub(cutAt).Round(time.Millisecond), took.Round(time.Millisecond), connectBound)
		}
	}
	t.Logf("%d connects of new client IDs on %s during the cut; worst CONNACK %v; all: %s",
		len(times), a.name(), worst.Round(time.Millisecond), strings.Join(times, " "))

	eventually(t, detectTimeout, a.name()+" marks the cut-off "+c.name()+" unreachable",
		reachability(a, map[string]bool{c.name(): false}))
	eventually(t, detectTimeout, c.name()+" marks its peers unreachable",
		reachability(c, map[string]bool{a.name(): false, nodes[1].name(): false}))
	dupA := connectV5(t, a, "dup", v5Options{cleanStart: true})
	dupC, err := dialV5(c, "dup", v5Options{cleanStart: true}, mqttTimeout)
	if err != nil {
		// Refusing the minority's connect is a fair answer too: it cannot order it.
		t.Logf("connect of dup on the cut-off %s refused: %v", c.name(), err)
	} else {
		t.Cleanup(dupC.close)
		t.Logf("dup connected on %s and on the cut-off %s", a.name(), c.name())
	}
	staleA := connectV5(t, a, "stale", persistent(nil))
	for _, cl := range []*v5Client{dupA, staleA} {
		if !cl.alive() {
			t.Fatalf("the connect of %s on %s was closed during the cut (%s)", cl.id, a.name(), disconnectReason(cl))
		}
	}
	if !staleC.alive() {
		t.Fatalf("stale's connection on the cut-off %s closed during the cut (%s): nothing tells it", c.name(), disconnectReason(staleC))
	}

	nw.healAll(t)
	healedAt := time.Now()
	byID := map[string][]*v5Client{"dup": {dupA}, "stale": {staleA, staleC}}
	if dupC != nil {
		byID["dup"] = append(byID["dup"], dupC)
	}
	alive := func(id string) []*v5Client {
		return slices.DeleteFunc(slices.Clone(byID[id]), func(cl *v5Client) bool { return !cl.alive() })
	}
	state := func() string {
		var parts []string
		for _, id := range []string{"dup", "stale"} {
			for _, cl := range byID[id] {
				parts = append(parts, fmt.Sprintf("%s on %s: connected=%v %s", id, cl.node, cl.alive(), disconnectReason(cl)))
			}
		}
		return strings.Join(parts, "; ")
	}
	deadline := time.Now().Add(clusterTimeout)
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for (len(alive("dup")) != 1 || len(alive("stale")) != 1) && time.Now().Before(deadline) {
		<-tick.C
	}
	t.Logf("%v after the heal: %s", time.Since(healedAt).Round(time.Millisecond), state())
	for _, id := range []string{"dup", "stale"} {
		switch left := alive(id); {
		case len(left) != 1:
			t.Errorf("%d connections with client ID %s remain %v after the heal, want 1: %s",
				len(left), id, clusterTimeout, state())
		case left[0].node != a.name():
			t.Errorf("the connection of %s that remains is the one on %s, want the majority's on %s: %s",
				id, left[0].node, a.name(), state())
		}
	}
	// The broker agrees: the nodes count one connection of each.
	eventually(t, mqttTimeout, "the nodes count one connection per client ID (dup, stale)", func() error {
		if n, detail := connectionsOn(nodes); n != 2 {
			return fmt.Errorf("%d connections: %s", n, detail)
		}
		return nil
	})
}

// disconnectReason describes the DISCONNECT a client received from the server, if any.
func disconnectReason(c *v5Client) string {
	select {
	case d := <-c.serverDisconnect:
		c.serverDisconnect <- d // keep it for the next look
		reason := ""
		if d.Properties != nil {
			reason = d.Properties.ReasonString
		}
		return fmt.Sprintf("(server DISCONNECT 0x%02X %q)", d.ReasonCode, reason)
	default:
		return ""
	}
}

// connectionsOn sums the MQTT connections the nodes report.
func connectionsOn(nodes []*node) (int, string) {
	total := 0
	var parts []string
	for _, n := range nodes {
		ni, err := n.info()
		if err != nil {
			parts = append(parts, fmt.Sprintf("%s: %v", n.name(), err))
			continue
		}
		total += int(ni.Connections)
		parts = append(parts, fmt.Sprintf("%s=%d", n.name(), ni.Connections))
	}
	return total, strings.Join(parts, " ")
}
