package cluster

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// TestRetainedNeedsMajority: a node that cannot reach a raft majority refuses a
// retained publish (MQTT 5: PUBACK 0x80 with a reason) and keeps serving the retained
// set the cluster committed; once the other nodes are back, every node serves the same
// set, without the refused message. Before, the cut-off node acknowledged it, kept it
// "on this node only" and served it forever while the others never did: the nodes
// answered new subscribers differently.
func TestRetainedNeedsMajority(t *testing.T) {
	nodes := formCluster(t, 3)
	a, b, c := nodes[0], nodes[1], nodes[2]
	pub := connectV5(t, a, "maj-pub", v5Options{cleanStart: true})
	pub.publish(t, "maj/before", true, "kept")
	pub.publish(t, retainedMarker, true, "m1")
	// Connected before the others go: a node without a majority refuses new clients.
	check := connectV5(t, a, "maj-check", v5Options{cleanStart: true})

	b.kill()
	c.kill()
	eventually(t, clusterTimeout, a.name()+" sees no leader", func() error {
		v, err := a.cluster()
		if err == nil && v.Leader != "" {
			err = fmt.Errorf("leader %s", v.Leader)
		}
		return err
	})
	ctx, cancel := context.WithTimeout(context.Background(), mqttTimeout)
	defer cancel()
	resp, err := pub.Publish(ctx, &paho.Publish{Topic: "maj/during", QoS: 1, Retain: true, Payload: []byte("refused")})
	if resp == nil || resp.ReasonCode != 0x80 || resp.Properties == nil || resp.Properties.ReasonString == "" {
		t.Fatalf("a retained publish without a majority: %+v %v, want PUBACK 0x80 with a reason", resp, err)
	}
	if got, err := retainedSince(t, check, len(check.rec.all()), "m1", "maj/#"); err != nil {
		t.Fatal(err)
	} else if len(got) != 1 || got[0].topic != "maj/before" {
		t.Fatalf("%s without a majority serves %+v, want only maj/before", a.name(), got)
	}

	b.restart()
	c.restart()
	waitClusterSize(t, nodes, 3)
	pub.publish(t, retainedMarker, true, "m2")
	for _, n := range nodes {
		if got := retainedAfterMarker(t, n, "m2", "maj/#"); len(got) != 1 || got[0].topic != "maj/before" {
			t.Fatalf("%s after the others came back serves %+v, want only maj/before", n.name(), got)
		}
	}
}

// TestJoinRetriesTransient: a join through a member that cannot forward it right now
// (the cluster has no leader: two of three nodes are down) is retried and succeeds
// once a leader is back, within the join's bound, instead of failing at once with
// no_leader (scripted cluster formation failed on such transients).
func TestJoinRetriesTransient(t *testing.T) {
	nodes := formCluster(t, 3)
	leader := leaderOf(t, nodes)
	var seed, down *node
	for _, n := range nodes {
		switch {
		case n == leader:
		case seed == nil:
			seed = n
		default:
			down = n
		}
	}
	leader.kill()
	down.kill()
	joiner := startNode(t, nodeOptions{name: "node-3"})
	type result struct {
		status int
		body   string
		err    error
	}
	done := make(chan result, 1)
	go func() {
		status, b, err := joiner.call(http.MethodPost, "/api/v1/cluster/join", map[string]string{"seed": seed.clusterAddr()}, true)
		done <- result{status, string(b), err}
	}()
	eventually(t, clusterTimeout, joiner.name()+" is told to wait (no leader)", func() error {
		select {
		case r := <-done:
			t.Fatalf("the join answered %d %s %v while the cluster had no leader, want it to wait for one", r.status, r.body, r.err)
		default:
		}
		if !joiner.logs.Contains("the seed cannot forward the join yet") {
			return fmt.Errorf("no transient refusal logged yet")
		}
		return nil
	})
	down.restart() // a majority again: a leader is elected
	var r result
	select {
	case r = <-done:
	case <-time.After(apiTimeout + 5*time.Second):
		t.Fatal("the join did not answer")
	}
	if r.err != nil || r.status != http.StatusOK {
		t.Fatalf("join through %s: %d %s %v, want 200 once a leader is back", seed.name(), r.status, r.body, r.err)
	}
	if ni := joiner.mustInfo(); ni.StoreState != "member" {
		t.Fatalf("after the join %s reports %+v", joiner.name(), ni)
	}
}

// TestNotReadyWithoutMajority: a node that can no longer reach a majority of the
// voters reports not ready (so Kubernetes stops sending it clients), even long after
// it settled, refuses connects, and is ready and takes connects again once a majority
// is back. Before, a settled node stayed ready whatever happened to its peers, and
// accepted connects it could not order with the rest of the cluster.
func TestNotReadyWithoutMajority(t *testing.T) {
	nodes := formCluster(t, 3)
	a, b, c := nodes[0], nodes[1], nodes[2]
	eventually(t, clusterTimeout, a.name()+" ready", readyz(a, http.StatusOK))
	b.kill()
	eventually(t, clusterTimeout, a.name()+" still ready with 2 of 3 voters", readyz(a, http.StatusOK))
	c.kill()
	eventually(t, clusterTimeout, a.name()+" not ready with 1 of 3 voters", readyz(a, http.StatusServiceUnavailable))
	eventually(t, mqttTimeout, a.name()+" logs why it is not ready", logged(a, "reaches no majority"))
	// Without a majority it cannot order connects with the rest of the cluster: it
	// refuses them (0x88 with a reason), so a client ID is never connected on both
	// sides of a partition.
	if cl, err := dialV5(a.mqttAddress(), "minority-client", v5Options{cleanStart: true}); err == nil {
		cl.close()
		t.Fatalf("%s without a majority accepted a connect", a.name())
	} else if !strings.Contains(err.Error(), "cut off from the majority") {
		t.Fatalf("%s without a majority: connect failed with %v, want the refusal's reason", a.name(), err)
	}
	c.restart()
	eventually(t, clusterTimeout, a.name()+" ready again with 2 of 3", readyz(a, http.StatusOK))
	connectV5(t, a, "minority-client", v5Options{cleanStart: true})
}
