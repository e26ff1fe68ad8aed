package cluster

import (
	"fmt"
	"net/http"
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
