package cluster

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestReadyOnlyOnceCaughtUp: a member that comes back after missing many raft entries
// (here 600 retained messages written while it was down) reports ready only once it
// applied the leader's commit index as of its return: at the first moment /readyz says
// 200, its applied index has reached what the leader had committed, and a subscriber
// on it gets the whole retained set. Before, a restarted member was ready once its
// links were up, while its log could still be behind (an older retained set served
// for a moment).
func TestReadyOnlyOnceCaughtUp(t *testing.T) {
	nodes := formCluster(t, 3)
	leader := leaderOf(t, nodes)
	late := nodes[2]
	if late == leader {
		late = nodes[1]
	}
	late.stop()
	pub := connectV5(t, leader, "writer", v5Options{cleanStart: true})
	const n = 600
	for i := range n {
		pub.publish(t, fmt.Sprintf("catchup/%d", i), true, "v")
	}
	committed := leader.mustInfo().CommitIndex
	if committed == 0 {
		t.Fatal("the leader reports no commit index")
	}

	late.restart()
	deadline := time.Now().Add(time.Minute)
	for {
		status, _, err := late.call(http.MethodGet, "/readyz", nil, false)
		if err == nil && status == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready within a minute: %d %v", late.name(), status, err)
		}
	}
	in := late.mustInfo()
	if in.AppliedIndex < committed {
		t.Fatalf("%s was ready with applied index %d, behind the %d the leader had committed before it came back", late.name(), in.AppliedIndex, committed)
	}
	if !in.CaughtUp {
		t.Errorf("%s is ready but does not report caughtUp", late.name())
	}
	rec := &recorder{}
	sub := connectV5(t, late, "reader", v5Options{cleanStart: true, rec: rec})
	sub.subscribe(t, 1, "catchup/#")
	eventually(t, 10*time.Second, "the whole retained set from the node that came back", func() error {
		if got := len(rec.data()); got != n {
			return fmt.Errorf("%d of %d retained messages", got, n)
		}
		return nil
	})
}

// TestRejoinEmptyAsNonVoter: a voter whose store is wiped (reset) while the others still
// list it as a voter comes back as a non-voter, demoted at its join, and becomes a
// voter only once it has caught up with the leader's log: the leader logs the demotion,
// the non-voter join and the promotion in that order, the node logs its catch-up before
// its promotion, it is ready only as a voter, and it serves the whole retained set.
// Before, it was a voter again from its join, counted for elections and commits while
// its log was still empty (raft's hazard of a voter that lost its disk).
func TestRejoinEmptyAsNonVoter(t *testing.T) {
	nodes := formCluster(t, 3)
	leader := leaderOf(t, nodes)
	wiped := nodes[2]
	if wiped == leader {
		wiped = nodes[1]
	}
	pub := connectV5(t, leader, "rejoin-writer", v5Options{cleanStart: true})
	const n = 300
	for i := range n {
		pub.publish(t, fmt.Sprintf("rejoin/%d", i), true, "v")
	}
	if !memberOf(t, leader, wiped.name()).Voter {
		t.Fatalf("%s is not a voter before its reset", wiped.name())
	}
	wiped.mustPost("/api/v1/node/reset", nil, http.StatusOK)
	wiped.join(leader)
	deadline := time.Now().Add(time.Minute)
	for {
		status, _, err := wiped.call(http.MethodGet, "/readyz", nil, false)
		if err == nil && status == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready within a minute: %d %v", wiped.name(), status, err)
		}
	}
	if !memberOf(t, wiped, wiped.name()).Voter {
		t.Fatalf("%s is ready while its own configuration lists it as a non-voter", wiped.name())
	}
	eventually(t, clusterTimeout, "the leader lists "+wiped.name()+" as a voter", func() error {
		if !memberOf(t, leader, wiped.name()).Voter {
			return fmt.Errorf("not a voter yet")
		}
		return nil
	})
	steps := []string{"voter demoted", "joined as a non-voter", "node is a voter"}
	if err := inOrder(leader.logs.String(), wiped.name(), steps...); err != nil {
		t.Errorf("leader %s: %v", leader.name(), err)
	}
	if err := inOrder(wiped.logs.String(), "", "store reset", "caught up with the leader's log", "this node is a voter now"); err != nil {
		t.Errorf("%s: %v", wiped.name(), err)
	}
	rec := &recorder{}
	sub := connectV5(t, wiped, "rejoin-reader", v5Options{cleanStart: true, rec: rec})
	sub.subscribe(t, 1, "rejoin/#")
	eventually(t, 10*time.Second, "the whole retained set from the node that rejoined", func() error {
		if got := len(rec.data()); got != n {
			return fmt.Errorf("%d of %d retained messages", got, n)
		}
		return nil
	})
}

// memberOf returns member name as node n's cluster view lists it.
func memberOf(t *testing.T, n *node, name string) member {
	t.Helper()
	v, err := n.cluster()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range v.Members {
		if m.Name == name {
			return m
		}
	}
	t.Fatalf("%s does not list %s: %+v", n.name(), name, v)
	return member{}
}

// inOrder checks that logs has, line after line, a line with each of steps (and with
// about, when not empty) in that order.
func inOrder(logs, about string, steps ...string) error {
	next := 0
	for _, line := range strings.Split(logs, "\n") {
		if next < len(steps) && strings.Contains(line, steps[next]) && strings.Contains(line, about) {
			next++
		}
	}
	if next < len(steps) {
		return fmt.Errorf("no line %q (about %q) after %q", steps[next], about, steps[:next])
	}
	return nil
}
