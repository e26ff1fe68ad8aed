package cluster

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
	clusterTimeout = 30 * time.Second // membership changes, elections, rejoins
	apiTimeout     = 15 * time.Second // one HTTP call (a join waits for raft)
)

var httpClient = &http.Client{Timeout: apiTimeout}

// The API bodies, from the broker's contract package.
type (
	nodeInfo   = apiv1.Node
	member     = apiv1.Member
	evacuation = apiv1.Evacuation
)

// clusterView is GET /api/v1/cluster.
type clusterView struct{ apiv1.Cluster }

// memberNames returns the sorted names of the members.
func (v clusterView) memberNames() []string {
	var names []string
	for _, m := range v.Members {
		names = append(names, m.Name)
	}
	slices.Sort(names)
	return names
}

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

// api is a /api/v1 call with the token; it fails the test when the node does not
// answer, and returns the status and the JSON body as a map (the raw body under "_raw"
// when it is not a JSON object).
func (n *node) api(method, path string, body any) (int, map[string]any) {
	n.t.Helper()
	status, b, err := n.call(method, path, body, true)
	if err != nil {
		n.t.Fatal(err)
	}
	var m map[string]any
	if json.Unmarshal(b, &m) != nil {
		m = map[string]any{"_raw": string(b)}
	}
	return status, m
}

// mustPost is a POST to /api/v1 that must answer want.
func (n *node) mustPost(path string, body any, want int) map[string]any {
	n.t.Helper()
	status, m := n.api(http.MethodPost, path, body)
	if status != want {
		n.t.Fatalf("POST %s on %s: status %d %v, want %d", path, n.name(), status, m, want)
	}
	return m
}

// expectAPIError asserts a /api/v1 call fails with status and the stable error code.
func (n *node) expectAPIError(method, path string, body any, status int, code string) {
	n.t.Helper()
	got, m := n.api(method, path, body)
	if got != status || m["code"] != code {
		n.t.Fatalf("%s %s on %s: %d %v, want %d with code %q", method, path, n.name(), got, m, status, code)
	}
	if msg, _ := m["message"].(string); msg == "" {
		n.t.Errorf("%s %s on %s: error %q without a message", method, path, n.name(), code)
	}
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

func (n *node) info() (nodeInfo, error) {
	var ni nodeInfo
	return ni, n.getJSON("/api/v1/node", &ni)
}

func (n *node) mustInfo() nodeInfo {
	n.t.Helper()
	ni, err := n.info()
	if err != nil {
		n.t.Fatal(err)
	}
	return ni
}

func (n *node) cluster() (clusterView, error) {
	var cv clusterView
	return cv, n.getJSON("/api/v1/cluster", &cv)
}

// bootstrap makes the node the first member of a new cluster and waits until it leads.
func (n *node) bootstrap() {
	n.t.Helper()
	n.mustPost("/api/v1/cluster/bootstrap", nil, http.StatusOK)
	eventually(n.t, clusterTimeout, n.name()+" leads after bootstrap", func() error {
		ni, err := n.info()
		if err == nil && ni.RaftState != "Leader" {
			err = fmt.Errorf("raftState %q", ni.RaftState)
		}
		return err
	})
}

// join makes the node join through seed (a member) and checks it is a voter then.
func (n *node) join(seed *node) {
	n.t.Helper()
	m := n.mustPost("/api/v1/cluster/join", map[string]string{"seed": seed.clusterAddr()}, http.StatusOK)
	if m["storeState"] != "member" {
		n.t.Fatalf("%s joined through %s but reports %v", n.name(), seed.name(), m)
	}
}

// eventually polls check until it returns nil and fails the test with its last error
// when timeout passes first.
func eventually(t testing.TB, timeout time.Duration, what string, check func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %v", what, timeout, err)
		}
		<-tick.C
	}
}

// waitClusterSize waits until every node in nodes sees the same cluster (ID, leader)
// of exactly size members, all reachable and each of nodes among them, with itself a
// Leader or Follower. It returns that view.
func waitClusterSize(t testing.TB, nodes []*node, size int) clusterView {
	t.Helper()
	var agreed clusterView
	eventually(t, clusterTimeout, fmt.Sprintf("%d nodes agree on a %d-member cluster", len(nodes), size), func() error {
		var first clusterView
		for i, n := range nodes {
			v, err := n.cluster()
			if err != nil {
				return err
			}
			if err := checkView(v, size, nodes); err != nil {
				return fmt.Errorf("%s: %w (%+v)", n.name(), err, v)
			}
			if i == 0 {
				first = v
			} else if v.ClusterID != first.ClusterID || v.Leader != first.Leader {
				return fmt.Errorf("%s sees cluster %s led by %s, %s sees %s led by %s",
					nodes[0].name(), first.ClusterID, first.Leader, n.name(), v.ClusterID, v.Leader)
			}
			ni, err := n.info()
			if err != nil {
				return err
			}
			if ni.RaftState != "Leader" && ni.RaftState != "Follower" {
				return fmt.Errorf("%s: raftState %q", n.name(), ni.RaftState)
			}
			if ni.StoreState != "member" || ni.ClusterID != v.ClusterID {
				return fmt.Errorf("%s: storeState %q clusterID %q", n.name(), ni.StoreState, ni.ClusterID)
			}
		}
		agreed = first
		return nil
	})
	return agreed
}

func checkView(v clusterView, size int, nodes []*node) error {
	if v.ClusterID == "" || v.Leader == "" {
		return fmt.Errorf("no cluster ID or leader")
	}
	if len(v.Members) != size {
		return fmt.Errorf("%d members %v, want %d", len(v.Members), v.memberNames(), size)
	}
	byName := map[string]member{}
	for _, m := range v.Members {
		if !m.Reachable {
			return fmt.Errorf("member %s unreachable", m.Name)
		}
		if !m.Voter { // a node that joined empty is promoted once it caught up
			return fmt.Errorf("member %s is not a voter yet", m.Name)
		}
		byName[m.Name] = m
	}
	if _, ok := byName[v.Leader]; !ok {
		return fmt.Errorf("leader %s is not a member", v.Leader)
	}
	for _, n := range nodes {
		m, ok := byName[n.name()]
		if !ok {
			return fmt.Errorf("%s is not a member", n.name())
		}
		if m.Address != n.clusterAddr() {
			return fmt.Errorf("member %s at %s, want %s", m.Name, m.Address, n.clusterAddr())
		}
	}
	return nil
}

// waitMember waits until every node in nodes lists name as a reachable member.
func waitMember(t testing.TB, nodes []*node, name string) {
	t.Helper()
	eventually(t, clusterTimeout, "every node lists "+name, func() error {
		for _, n := range nodes {
			v, err := n.cluster()
			if err != nil {
				return err
			}
			if !slices.ContainsFunc(v.Members, func(m member) bool { return m.Name == name && m.Reachable }) {
				return fmt.Errorf("%s lists %v", n.name(), v.memberNames())
			}
		}
		return nil
	})
}

// leaderOf returns the node that nodes agree leads the cluster.
func leaderOf(t testing.TB, nodes []*node) *node {
	t.Helper()
	v := waitClusterSize(t, nodes, len(nodes))
	for _, n := range nodes {
		if n.name() == v.Leader {
			return n
		}
	}
	t.Fatalf("leader %s is none of the nodes", v.Leader)
	return nil
}

// nodeName is the name of the i-th node of a test cluster.
func nodeName(i int) string { return fmt.Sprintf("node-%d", i) }

// formCluster starts n nodes and forms a cluster through the API: node 0 bootstraps,
// the others join one by one, each through a member that is not the leader when
// there is one (so the join is forwarded to the leader).
func formCluster(t *testing.T, n int) []*node {
	t.Helper()
	nodes := make([]*node, n)
	for i := range nodes {
		nodes[i] = startNode(t, nodeOptions{name: nodeName(i)})
	}
	nodes[0].bootstrap()
	for i := 1; i < n; i++ {
		seed := nodes[0]
		if i > 1 {
			leader := leaderOf(t, nodes[:i])
			seed = nodes[i-1]
			if seed == leader {
				seed = nodes[i-2]
			}
		}
		nodes[i].join(seed)
		waitClusterSize(t, nodes[:i+1], i+1)
	}
	return nodes
}

// formClusterFromFlags starts n nodes that form a cluster from their flags alone:
// node 0 with --cluster.bootstrap, the others with node 0 as their static seed.
func formClusterFromFlags(t *testing.T, n int) []*node {
	t.Helper()
	seedAddr := clusterAddr(t)
	nodes := make([]*node, n)
	for i := range nodes {
		opts := nodeOptions{name: nodeName(i), seeds: []string{seedAddr}}
		if i == 0 {
			opts = nodeOptions{name: nodeName(0), clusterAddr: seedAddr, bootstrap: true}
		}
		nodes[i] = startNode(t, opts)
	}
	waitClusterSize(t, nodes, n)
	return nodes
}

// connectionsOn sums the connections the nodes report; detail says how many each has.
func connectionsOn(nodes ...*node) (total int, detail string, err error) {
	var parts []string
	for _, n := range nodes {
		ni, err := n.info()
		if err != nil {
			return 0, "", err
		}
		total += int(ni.Connections)
		parts = append(parts, fmt.Sprintf("%s=%d", n.name(), ni.Connections))
	}
	return total, strings.Join(parts, " "), nil
}
