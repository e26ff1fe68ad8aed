package cluster

import (
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"testing"
	"time"
)

// TestClusterNodeAPI: one node outside any cluster, then bootstrapped, answers the
// HTTP API contract: health without a token, 401 without one on /api/v1, the node's
// state before and after bootstrap, and the stable error codes of the cluster verbs.
func TestClusterNodeAPI(t *testing.T) {
	n := startNode(t, nodeOptions{name: nodeName(0)})
	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		if status, body, err := n.call(http.MethodGet, path, nil, false); err != nil || status != http.StatusOK {
			t.Fatalf("GET %s without token: %d %s %v", path, status, body, err)
		}
	}
	status, body, err := n.call(http.MethodGet, "/api/v1/node", nil, false)
	if err != nil || status != http.StatusUnauthorized || !regexp.MustCompile(`"code":\s*"unauthorized"`).Match(body) {
		t.Fatalf("GET /api/v1/node without token: %d %s %v, want 401 unauthorized", status, body, err)
	}

	ni := n.mustInfo()
	if ni.Name != n.name() || ni.StoreState != "empty" || ni.RaftState != "" || ni.ClusterID != "" || ni.Version == "" {
		t.Fatalf("node outside a cluster reports %+v", ni)
	}
	n.expectAPIError(http.MethodGet, "/api/v1/cluster", nil, http.StatusConflict, "not_member")
	n.expectAPIError(http.MethodPost, "/api/v1/cluster/leave", nil, http.StatusConflict, "not_member")

	m := n.mustPost("/api/v1/cluster/bootstrap", nil, http.StatusOK)
	if m["storeState"] != "member" || m["clusterID"] == "" {
		t.Fatalf("bootstrap answered %v", m)
	}
	n.expectAPIError(http.MethodPost, "/api/v1/cluster/bootstrap", nil, http.StatusConflict, "already_member")
	v := waitClusterSize(t, []*node{n}, 1)
	if v.Leader != n.name() || v.ClusterID != m["clusterID"] {
		t.Fatalf("cluster %+v after bootstrap %v", v, m)
	}
	n.expectAPIError(http.MethodPost, "/api/v1/cluster/force-leave", map[string]string{"node": "no-such-node"}, http.StatusNotFound, "unknown_node")

	// A second node cannot join through an address where no node listens.
	lonely := startNode(t, nodeOptions{name: nodeName(1)})
	lonely.expectAPIError(http.MethodPost, "/api/v1/cluster/join", map[string]string{"seed": clusterAddr(t)}, http.StatusBadGateway, "unreachable")
	if ni := lonely.mustInfo(); ni.StoreState != "empty" {
		t.Fatalf("after a failed join: %+v", ni)
	}
}

// TestClusterWrongCookie: a node with another cookie is refused by the seed: the join
// fails with cookie_mismatch, both logs say so, the seed counts the refusal in its
// metrics, and the cluster keeps its two members.
func TestClusterWrongCookie(t *testing.T) {
	nodes := formCluster(t, 2)
	before := waitClusterSize(t, nodes, 2)
	seed := nodes[0]

	intruder := startNode(t, nodeOptions{name: "intruder", cookieFile: writeCookie(t, "not-the-cluster-cookie-0123456789")})
	intruder.expectAPIError(http.MethodPost, "/api/v1/cluster/join", map[string]string{"seed": seed.clusterAddr()}, http.StatusBadGateway, "cookie_mismatch")

	after := waitClusterSize(t, nodes, 2)
	if after.ClusterID != before.ClusterID || !slices.Equal(after.memberNames(), before.memberNames()) {
		t.Fatalf("cluster changed: %+v, was %+v", after, before)
	}
	if ni := intruder.mustInfo(); ni.StoreState != "empty" || ni.ClusterID != "" {
		t.Fatalf("the intruder reports %+v", ni)
	}
	intruder.expectAPIError(http.MethodGet, "/api/v1/cluster", nil, http.StatusConflict, "not_member")
	for _, n := range []*node{seed, intruder} {
		eventually(t, clusterTimeout, n.name()+" logs the cookie mismatch", func() error {
			if !n.logs.Contains("cookie mismatch") {
				return fmt.Errorf("no log line says cookie mismatch")
			}
			return nil
		})
	}
	mismatches := regexp.MustCompile(`(?m)^mqttd_cluster_handshakes_total\{result="cookie_mismatch"\} (\d+)`)
	eventually(t, clusterTimeout, "the seed counts the refusal", func() error {
		status, body, err := seed.call(http.MethodGet, "/metrics", nil, false)
		if err != nil {
			return err
		}
		if status != http.StatusOK {
			return fmt.Errorf("GET /metrics: %d", status)
		}
		m := mismatches.FindSubmatch(body)
		if m == nil {
			return fmt.Errorf("no cookie_mismatch handshake metric")
		}
		if count, _ := strconv.Atoi(string(m[1])); count < 1 {
			return fmt.Errorf("cookie_mismatch handshakes: %s", m[1])
		}
		return nil
	})
}

// TestClusterStaleStore: (a) a node force-left while it was down comes back with its
// old store: it reports stale and serves no cluster traffic; after reset and join it
// is a member again and routes. (b) a node whose store belongs to another cluster
// cannot join: stale_store, and the cluster is unchanged.
func TestClusterStaleStore(t *testing.T) {
	nodes := formCluster(t, 3)
	a, c := nodes[0], nodes[2]
	before := waitClusterSize(t, nodes, 3)

	t.Run("force-left while down", func(t *testing.T) {
		c.stop()
		a.mustPost("/api/v1/cluster/force-leave", map[string]string{"node": c.name()}, http.StatusOK)
		waitClusterSize(t, nodes[:2], 2)

		c.restart()
		eventually(t, clusterTimeout, c.name()+" reports a stale store", func() error {
			ni, err := c.info()
			if err == nil && (ni.StoreState != "stale" || ni.StaleReason == "") {
				err = fmt.Errorf("storeState %q staleReason %q", ni.StoreState, ni.StaleReason)
			}
			return err
		})
		expectNoTrafficFrom(t, a, c, "stale/traffic")

		c.mustPost("/api/v1/node/reset", nil, http.StatusOK)
		if ni := c.mustInfo(); ni.StoreState != "empty" || ni.ClusterID != "" {
			t.Fatalf("after reset %s reports %+v", c.name(), ni)
		}
		c.join(a)
		after := waitClusterSize(t, nodes, 3)
		if after.ClusterID != before.ClusterID {
			t.Fatalf("cluster ID changed from %s to %s", before.ClusterID, after.ClusterID)
		}
		sub := connectV5(t, c, "stale-sub-after-join", v5Options{cleanStart: true})
		sub.subscribe(t, 1, "stale/after")
		pub := connectV5(t, a, "stale-pub-after-join", v5Options{cleanStart: true})
		awaitRoute(t, pub, "stale/after", sub.rec)
	})

	// Whatever the first case left, this one compares with the members of now.
	t.Run("store of another cluster", func(t *testing.T) {
		members := currentMembers(t, a, nodes)
		now := waitClusterSize(t, members, len(members))

		// A node bootstrapped into a cluster of its own, restarted with that store.
		other := startNode(t, nodeOptions{name: "other-0"})
		other.bootstrap()
		otherID := other.mustInfo().ClusterID
		other.stop()
		other.restart()
		other.expectAPIError(http.MethodPost, "/api/v1/cluster/join", map[string]string{"seed": a.clusterAddr()}, http.StatusConflict, "stale_store")
		if ni := other.mustInfo(); ni.StoreState != "stale" || ni.StaleReason == "" || ni.ClusterID != otherID {
			t.Fatalf("%s with a store of cluster %s reports %+v", other.name(), otherID, ni)
		}
		unchanged := waitClusterSize(t, members, len(members))
		if unchanged.ClusterID != now.ClusterID || !slices.Equal(unchanged.memberNames(), now.memberNames()) {
			t.Fatalf("cluster changed to %+v, was %+v", unchanged, now)
		}
	})

	// A member restarted on another cluster's store (a volume from elsewhere) while
	// every member still lists it: links between it and the others are refused both
	// ways, and no healthy member may take that for its own staleness. The join
	// finds out which side is foreign.
	t.Run("a member restarted on another cluster's store", func(t *testing.T) {
		members := currentMembers(t, a, nodes)
		if !slices.Contains(members, c) {
			t.Fatalf("%s is not a member", c.name())
		}
		now := waitClusterSize(t, members, len(members))
		other := startNode(t, nodeOptions{name: c.name()})
		other.bootstrap()
		otherID := other.mustInfo().ClusterID
		other.stop()
		c.stop()
		c.opts.dataDir = other.opts.dataDir
		c.restart()
		if ni := c.mustInfo(); ni.ClusterID != otherID {
			t.Fatalf("%s restarted with %+v, want the store of cluster %s", c.name(), ni, otherID)
		}
		healthy := slices.DeleteFunc(slices.Clone(members), func(n *node) bool { return n == c })
		// Links are retried every 250 ms: a few seconds cover many refusals.
		tick := time.NewTicker(pollInterval)
		defer tick.Stop()
		for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); <-tick.C {
			for _, n := range healthy {
				if ni := n.mustInfo(); ni.StoreState != "member" || ni.ClusterID != now.ClusterID {
					t.Fatalf("%s reports %+v while %s holds cluster %s's store", n.name(), ni, c.name(), otherID)
				}
			}
		}
		c.expectAPIError(http.MethodPost, "/api/v1/cluster/join", map[string]string{"seed": a.clusterAddr()}, http.StatusConflict, "stale_store")
		c.mustPost("/api/v1/node/reset", nil, http.StatusOK)
		c.join(a)
		after := waitClusterSize(t, members, len(members))
		if after.ClusterID != now.ClusterID {
			t.Fatalf("cluster ID is %s after the rejoin, was %s", after.ClusterID, now.ClusterID)
		}
	})

	// A node reset while the configuration still lists it (as the operator resets a
	// stale pod) gets the whole log from the leader at once, cluster ID included,
	// before anyone asks it to join; the join must still make it a member.
	t.Run("reset while the configuration lists it", func(t *testing.T) {
		members := currentMembers(t, a, nodes)
		if !slices.Contains(members, c) {
			t.Fatalf("%s is not a member before the reset", c.name())
		}
		now := waitClusterSize(t, members, len(members))
		pub := connectV5(t, a, "reset-listed-pub", v5Options{cleanStart: true})
		pub.publish(t, "reset-listed/kept", true, "kept")
		pub.publish(t, retainedMarker, true, "reset-listed")
		c.mustPost("/api/v1/node/reset", nil, http.StatusOK)
		eventually(t, clusterTimeout, c.name()+" holds the cluster's log again, not yet a member", func() error {
			ni, err := c.info()
			if err == nil && (ni.StoreState != "empty" || ni.ClusterID != now.ClusterID) {
				err = fmt.Errorf("storeState %q clusterID %q", ni.StoreState, ni.ClusterID)
			}
			return err
		})
		c.join(a)
		after := waitClusterSize(t, members, len(members))
		if after.ClusterID != now.ClusterID || !slices.Equal(after.memberNames(), now.memberNames()) {
			t.Fatalf("cluster is %+v after the reset, was %+v", after, now)
		}
		if got := retainedAfterMarker(t, c, "reset-listed", "reset-listed/kept"); len(got) != 1 || got[0].payload != "kept" {
			t.Fatalf("a new subscriber on %s got %+v, want the retained %q", c.name(), got, "kept")
		}
	})
}

// currentMembers returns the nodes that via lists as members.
func currentMembers(t *testing.T, via *node, nodes []*node) []*node {
	t.Helper()
	v, err := via.cluster()
	if err != nil {
		t.Fatal(err)
	}
	var out []*node
	for _, n := range nodes {
		if slices.Contains(v.memberNames(), n.name()) {
			out = append(out, n)
		}
	}
	return out
}

// expectNoTrafficFrom asserts that messages published on from do not reach a
// subscriber on the stale node: for a while, probes are published on from and none
// may arrive. A stale node may refuse MQTT clients altogether, which serves no
// traffic either.
func expectNoTrafficFrom(t *testing.T, from, stale *node, topic string) {
	t.Helper()
	sub, err := dialV5(stale.mqttAddress(), "stale-sub", v5Options{cleanStart: true})
	if err != nil {
		t.Logf("%s refuses MQTT clients while stale: %v", stale.name(), err)
		return
	}
	t.Cleanup(sub.close)
	sub.subscribe(t, 1, topic)
	pub := connectV5(t, from, "stale-pub", v5Options{cleanStart: true})
	const window = 3 * time.Second // a live route delivers within milliseconds
	deadline := time.Now().Add(window)
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for i := 0; time.Now().Before(deadline); i++ {
		if err := pub.tryPublish(topic, 1, false, probePrefix+strconv.Itoa(i)); err != nil {
			t.Fatal(err)
		}
		<-tick.C
	}
	if got := sub.rec.all(); len(got) > 0 {
		t.Fatalf("the stale node %s delivered %d messages published on %s, first %+v", stale.name(), len(got), from.name(), got[0])
	}
}
