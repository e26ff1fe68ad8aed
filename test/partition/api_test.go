package partition

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mqtt-operator/mqtt-operator/broker/apiv1"
)

// Bounds of the waits on the cluster.
const (
	pollInterval   = 100 * time.Millisecond
	clusterTimeout = 30 * time.Second // membership changes, elections, heals
	healBound      = 12 * time.Second // links (and so routes) up again after a heal (docs/clustering.md)
	apiTimeout     = 15 * time.Second // one HTTP call (a join waits for raft)
	// detectTimeout bounds how long a node takes to notice a silent cut: the links'
	// heartbeat timeout (4 s) plus a check interval and slack (docs/clustering.md).
	detectTimeout = 10 * time.Second
)

var httpClient = &http.Client{Timeout: apiTimeout}

// call sends an HTTP request to the node's API (with the bearer token when token is
// true) and returns the status and body. It does not touch t, so goroutines may use it.
func (n *node) call(method, path string, body any, token bool) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, "http://"+n.apiAddress()+path, rd)
	if err != nil {
		return 0, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token {
		req.Header.Set("Authorization", "Bearer "+apiToken)
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("%s %s on %s: %w", method, path, n.name(), err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// mustPost is a POST to /api/v1 that must answer 200; it returns the JSON body.
func (n *node) mustPost(path string, body any) map[string]any {
	n.t.Helper()
	status, b, err := n.call(http.MethodPost, path, body, true)
	if err != nil {
		n.t.Fatal(err)
	}
	var m map[string]any
	if json.Unmarshal(b, &m) != nil {
		m = map[string]any{"_raw": string(b)}
	}
	if status != http.StatusOK {
		n.t.Fatalf("POST %s on %s: status %d %v", path, n.name(), status, m)
	}
	return m
}

// getJSON decodes a successful GET of the node's API into out.
func (n *node) getJSON(path string, out any) error {
	status, b, err := n.call(http.MethodGet, path, nil, true)
	if err != nil {
		return err
	}
	if status != http.StatusOK {
		return fmt.Errorf("GET %s on %s: %d %s", path, n.name(), status, bytes.TrimSpace(b))
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("GET %s on %s: %w in %s", path, n.name(), err, b)
	}
	return nil
}

func (n *node) info() (apiv1.Node, error) {
	var ni apiv1.Node
	return ni, n.getJSON("/api/v1/node", &ni)
}

func (n *node) cluster() (apiv1.Cluster, error) {
	var cv apiv1.Cluster
	return cv, n.getJSON("/api/v1/cluster", &cv)
}

// eventually polls check until it returns nil and fails the test with its last error
// when timeout passes first. It returns how long it took.
func eventually(t testing.TB, timeout time.Duration, what string, check func() error) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := start.Add(timeout)
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		err := check()
		if err == nil {
			return time.Since(start)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %v", what, timeout, err)
		}
		<-tick.C
	}
}

// formCluster starts the three nodes of nw and forms a cluster through the API: node 0
// bootstraps, node 1 joins through node 0, node 2 through node 1 (a follower, which
// forwards the join to the leader). It returns once all agree and every node is ready.
func formCluster(t *testing.T, nw *network) []*node {
	t.Helper()
	nodes := make([]*node, nodeCount)
	for i := range nodes {
		nodes[i] = startNode(t, nw, i)
	}
	nodes[0].mustPost("/api/v1/cluster/bootstrap", nil)
	eventually(t, clusterTimeout, nodes[0].name()+" leads after bootstrap", func() error {
		ni, err := nodes[0].info()
		if err == nil && ni.RaftState != "Leader" {
			err = fmt.Errorf("raftState %q", ni.RaftState)
		}
		return err
	})
	for i := 1; i < len(nodes); i++ {
		seed := nodes[i-1]
		m := nodes[i].mustPost("/api/v1/cluster/join", apiv1.JoinRequest{Seed: seed.clusterAddr()})
		if m["storeState"] != apiv1.StoreMember {
			t.Fatalf("%s joined through %s but reports %v", nodes[i].name(), seed.name(), m)
		}
		waitClusterSize(t, nodes[:i+1], i+1)
	}
	for _, n := range nodes {
		eventually(t, clusterTimeout, n.name()+" ready", readyz(n, http.StatusOK))
	}
	return nodes
}

// waitClusterSize waits until every node in nodes sees the same cluster (ID, leader)
// of exactly size members, all reachable voters, and returns that view.
func waitClusterSize(t testing.TB, nodes []*node, size int) apiv1.Cluster {
	t.Helper()
	var agreed apiv1.Cluster
	eventually(t, clusterTimeout, fmt.Sprintf("%d nodes agree on a %d-member cluster", len(nodes), size), func() error {
		for i, n := range nodes {
			v, err := n.cluster()
			if err != nil {
				return err
			}
			if err := checkView(v, size, nodes); err != nil {
				return fmt.Errorf("%s: %w (%+v)", n.name(), err, v)
			}
			if i == 0 {
				agreed = v
			} else if v.ClusterID != agreed.ClusterID || v.Leader != agreed.Leader {
				return fmt.Errorf("%s sees cluster %s led by %s, %s sees %s led by %s",
					nodes[0].name(), agreed.ClusterID, agreed.Leader, n.name(), v.ClusterID, v.Leader)
			}
		}
		return nil
	})
	return agreed
}

func checkView(v apiv1.Cluster, size int, nodes []*node) error {
	if v.ClusterID == "" || v.Leader == "" {
		return fmt.Errorf("no cluster ID or leader")
	}
	if len(v.Members) != size {
		return fmt.Errorf("%d members, want %d", len(v.Members), size)
	}
	for _, m := range v.Members {
		if !m.Reachable {
			return fmt.Errorf("member %s unreachable", m.Name)
		}
		if !m.Voter {
			return fmt.Errorf("member %s is not a voter yet", m.Name)
		}
	}
	if !v.Has(v.Leader) {
		return fmt.Errorf("leader %s is not a member", v.Leader)
	}
	for _, n := range nodes {
		i := slices.IndexFunc(v.Members, func(m apiv1.Member) bool { return m.Name == n.name() })
		if i < 0 {
			return fmt.Errorf("%s is not a member", n.name())
		}
		if v.Members[i].Address != n.clusterAddr() {
			return fmt.Errorf("member %s at %s, want %s", n.name(), v.Members[i].Address, n.clusterAddr())
		}
	}
	return nil
}

// readyz returns a check that n's /readyz answers want.
func readyz(n *node, want int) func() error {
	return func() error {
		status, _, err := n.call(http.MethodGet, "/readyz", nil, false)
		if err == nil && status != want {
			err = fmt.Errorf("%s /readyz: %d, want %d", n.name(), status, want)
		}
		return err
	}
}

// reachability returns a check that n's view of the cluster marks each member named
// in want as reachable or not.
func reachability(n *node, want map[string]bool) func() error {
	return func() error {
		v, err := n.cluster()
		if err != nil {
			return err
		}
		for name, w := range want {
			i := slices.IndexFunc(v.Members, func(m apiv1.Member) bool { return m.Name == name })
			if i < 0 {
				return fmt.Errorf("%s does not list %s", n.name(), name)
			}
			if v.Members[i].Reachable != w {
				return fmt.Errorf("%s: member %s reachable=%v, want %v", n.name(), name, v.Members[i].Reachable, w)
			}
		}
		return nil
	}
}

// allReachable returns the reachability want of a node that reaches every node.
func allReachable(nodes []*node) map[string]bool {
	want := map[string]bool{}
	for _, n := range nodes {
		want[n.name()] = true
	}
	return want
}

// metric returns a check that n's /metrics has the line want.
func metric(n *node, want string) func() error {
	return func() error {
		status, body, err := n.call(http.MethodGet, "/metrics", nil, false)
		if err != nil {
			return err
		}
		if status != http.StatusOK {
			return fmt.Errorf("%s /metrics: %d", n.name(), status)
		}
		for _, l := range strings.Split(string(body), "\n") {
			if l == want {
				return nil
			}
		}
		return fmt.Errorf("%s /metrics has no line %q", n.name(), want)
	}
}

// outboxesDrained checks on every node that the outboxes are empty and that none
// dropped a message (an acknowledged message dropped from an outbox is lost).
func outboxesDrained(t *testing.T, nodes []*node) {
	t.Helper()
	for _, n := range nodes {
		eventually(t, clusterTimeout, n.name()+"'s outboxes are empty", metric(n, "mqttd_cluster_outbox_messages 0"))
		if err := metric(n, "mqttd_cluster_outbox_dropped_total 0")(); err != nil {
			t.Error(err)
		}
	}
}
