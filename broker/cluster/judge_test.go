package cluster

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/mqtt-operator/mqtt-operator/broker/apiv1"
)

func servers(names ...string) []raft.Server {
	var out []raft.Server
	for _, n := range names {
		out = append(out, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(n), Address: raft.ServerAddress(n + ":4370")})
	}
	return out
}

var (
	aMember  = memberView{Self: "a", State: apiv1.StoreMember, ClusterID: "c1", WasMember: true}
	aJoining = memberView{Self: "a", State: apiv1.StoreMember, ClusterID: "c1"} // joined, not yet in the configuration it saw
	aEmpty   = memberView{Self: "a", State: apiv1.StoreEmpty}
	aStale   = memberView{Self: "a", State: apiv1.StoreStale, StaleReason: "removed", ClusterID: "c1", WasMember: true}
)

// TestJudgePeer: which peers' links a node accepts, and what its answer says.
func TestJudgePeer(t *testing.T) {
	for _, tc := range []struct {
		name     string
		view     memberView
		servers  []raft.Server
		peer     string
		hello    hello
		code     string
		cluster  string // the answer's cluster ID
		index    uint64 // the answer's config index
		contains string // in the message
	}{
		{"member accepts a listed peer of its cluster", aMember, servers("a", "b"), "b", hello{ClusterID: "c1", ConfigIndex: 3}, "", "c1", 7, ""},
		{"a peer that names no cluster yet is judged by the list", aMember, servers("a", "b"), "b", hello{}, "", "c1", 7, ""},
		{"a fresh node is not a member: it tells nothing of itself", aEmpty, servers("a", "b"), "b", hello{ClusterID: "c1"}, apiv1.CodeNotMember, "", 0, "a is not a member"},
		{"a node not yet in its configuration refuses", aJoining, servers("a", "b"), "b", hello{ClusterID: "c1"}, apiv1.CodeNotMember, "", 0, "not a member"},
		{"a stale node refuses", aStale, servers("a", "b"), "b", hello{ClusterID: "c1"}, apiv1.CodeNotMember, "", 0, "not a member"},
		{"raft stopping: no view to judge by", aMember, nil, "b", hello{ClusterID: "c1"}, apiv1.CodeNotMember, "c1", 0, "no configuration"},
		{"a peer on another cluster's store is stale", aMember, servers("a", "b"), "b", hello{ClusterID: "c2"}, apiv1.CodeStaleStore, "c1", 7, "belongs to cluster c2"},
		{"another cluster's store wins over an unlisted name", aMember, servers("a"), "x", hello{ClusterID: "c2"}, apiv1.CodeStaleStore, "c1", 7, "cluster c2"},
		{"a removed member is told it is not listed", aMember, servers("a", "c"), "b", hello{ClusterID: "c1", ConfigIndex: 3}, apiv1.CodeNotMember, "c1", 7, "b is not a member of this cluster"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := tc.hello
			got := judgePeer(tc.view, tc.servers, 7, tc.peer, &h)
			if got.Code != tc.code || got.ClusterID != tc.cluster || got.ConfigIndex != tc.index {
				t.Fatalf("got code %q cluster %q index %d, want %q %q %d (%s)", got.Code, got.ClusterID, got.ConfigIndex, tc.code, tc.cluster, tc.index, got.Message)
			}
			if !strings.Contains(got.Message, tc.contains) {
				t.Fatalf("message %q does not say %q", got.Message, tc.contains)
			}
		})
	}
}

// TestJudgeRefusal: only a member of this node's own cluster with a newer
// configuration that leaves it out makes it stale.
func TestJudgeRefusal(t *testing.T) {
	for _, tc := range []struct {
		name    string
		h       hello
		myIndex uint64
		stale   bool
	}{
		{"newer configuration of my cluster without me", hello{Code: apiv1.CodeNotMember, ClusterID: "c1", ConfigIndex: 9}, 5, true},
		{"same index: the peer may lag", hello{Code: apiv1.CodeNotMember, ClusterID: "c1", ConfigIndex: 5}, 5, false},
		{"older configuration: the peer lags", hello{Code: apiv1.CodeNotMember, ClusterID: "c1", ConfigIndex: 4}, 5, false},
		{"my index unknown", hello{Code: apiv1.CodeNotMember, ClusterID: "c1", ConfigIndex: 9}, 0, false},
		{"the peer is not a member itself (no cluster ID)", hello{Code: apiv1.CodeNotMember, ConfigIndex: 9}, 5, false},
		{"another cluster proves nothing", hello{Code: apiv1.CodeNotMember, ClusterID: "c2", ConfigIndex: 9}, 5, false},
		{"the peer calls my store stale: one peer cannot tell", hello{Code: apiv1.CodeStaleStore, ClusterID: "c1", ConfigIndex: 9}, 5, false},
		{"accepted", hello{ClusterID: "c1", ConfigIndex: 9}, 5, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stale, reason := judgeRefusal(&tc.h, tc.myIndex, "c1", "b")
			if stale != tc.stale {
				t.Fatalf("stale %v, want %v", stale, tc.stale)
			}
			if stale && !strings.Contains(reason, "b does not list it") {
				t.Fatalf("reason %q does not name the peer", reason)
			}
		})
	}
}

// TestJudgeConfig: what a look at the configuration does to a node.
func TestJudgeConfig(t *testing.T) {
	for _, tc := range []struct {
		name    string
		view    memberView
		servers []raft.Server
		want    configVerdict
	}{
		{"a member listed links", aMember, servers("a", "b"), configVerdict{wasMember: true, link: true}},
		{"a joined node sees itself: now a member", aJoining, servers("a", "b"), configVerdict{wasMember: true, link: true}},
		{"a joined node not listed yet waits", aJoining, servers("b"), configVerdict{}},
		{"a member no longer listed was removed", aMember, servers("b", "c"), configVerdict{wasMember: true, removed: true}},
		{"a fresh node listed (an old log) does not link", aEmpty, servers("a", "b"), configVerdict{}},
		{"a stale node does not link", aStale, servers("a", "b"), configVerdict{wasMember: true}},
		{"a stale node unlisted is not removed again", aStale, servers("b"), configVerdict{wasMember: true}},
		{"empty configuration (raft not bootstrapped)", aJoining, nil, configVerdict{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := judgeConfig(tc.view, tc.servers); got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestJudgeRaftConn(t *testing.T) {
	for _, tc := range []struct {
		name    string
		view    memberView
		raftUp  bool
		theirID string
		ok      bool
	}{
		{"same cluster", aMember, true, "c1", true},
		{"dialer has no cluster yet", aMember, true, "", true},
		{"fresh node takes any (the log decides)", aEmpty, true, "c2", true},
		{"another cluster", aMember, true, "c2", false},
		{"stale", aStale, true, "c1", false},
		{"raft down", aMember, false, "c1", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := judgeRaftConn(tc.view, tc.raftUp, tc.theirID); got != tc.ok {
				t.Fatalf("got %v, want %v", got, tc.ok)
			}
		})
	}
}

func TestJudgeBootstrapAndLeaderOp(t *testing.T) {
	withID := aEmpty
	withID.ClusterID = "c9"
	for _, tc := range []struct {
		name   string
		view   memberView
		raftUp bool
		code   string // "" allowed
	}{
		{"fresh node", aEmpty, true, ""},
		{"member", aMember, true, apiv1.CodeAlreadyMember},
		{"store holds a cluster ID", withID, true, apiv1.CodeAlreadyMember},
		{"stale", aStale, true, apiv1.CodeStaleStore},
		{"raft down", aEmpty, false, apiv1.CodeInternal},
	} {
		t.Run("bootstrap/"+tc.name, func(t *testing.T) {
			if got := codeOrEmpty(judgeBootstrap(tc.view, tc.raftUp)); got != tc.code {
				t.Fatalf("got %q, want %q", got, tc.code)
			}
		})
	}
	for _, tc := range []struct {
		name   string
		view   memberView
		raftUp bool
		req    request
		code   string
	}{
		{"join of a fresh node", aMember, true, request{Op: opJoin, Name: "b"}, ""},
		{"join of a node of this cluster", aMember, true, request{Op: opJoin, Name: "b", ClusterID: "c1"}, ""},
		{"join of another cluster's store", aMember, true, request{Op: opJoin, Name: "b", ClusterID: "c2"}, apiv1.CodeStaleStore},
		{"remove naming no cluster", aMember, true, request{Op: opRemove, Node: "b", ClusterID: "c2"}, ""},
		{"stale node serves nothing", aStale, true, request{Op: opApply}, apiv1.CodeStaleStore},
		{"fresh node serves nothing", aEmpty, true, request{Op: opJoin, Name: "b"}, apiv1.CodeNotMember},
		{"raft down", aMember, false, request{Op: opApply}, apiv1.CodeNotMember},
	} {
		t.Run("leader op/"+tc.name, func(t *testing.T) {
			if got := codeOrEmpty(judgeLeaderOp(tc.view, tc.raftUp, &tc.req)); got != tc.code {
				t.Fatalf("got %q, want %q", got, tc.code)
			}
		})
	}
}

func codeOrEmpty(err error) string {
	if err == nil {
		return ""
	}
	return CodeOf(err)
}

func TestJudgeClusterID(t *testing.T) {
	for _, tc := range []struct {
		mine, logs string
		want       adoption
	}{
		{"", "c1", adoptStore},
		{"c1", "c1", adoptKeep},
		{"c1", "c2", adoptStale},
	} {
		got, reason := judgeClusterID(tc.mine, tc.logs)
		if got != tc.want || (got == adoptStale) != (reason != "") {
			t.Fatalf("judgeClusterID(%q, %q) = %v %q, want %v", tc.mine, tc.logs, got, reason, tc.want)
		}
	}
}

// TestJudgeReady: readiness and when it settles.
func TestJudgeReady(t *testing.T) {
	linkedTo := func(names ...string) func(string) bool {
		return func(p string) bool {
			for _, n := range names {
				if n == p {
					return true
				}
			}
			return false
		}
	}
	for _, tc := range []struct {
		name          string
		in            readiness
		ready, settle bool
		why           string // part of the reason, when not ready
	}{
		{"stale", readiness{view: aStale, settled: true, linked: linkedTo()}, false, false, ""},
		{"evacuating, even settled", readiness{view: aMember, settled: true, evacuating: true, linked: linkedTo()}, false, false, "evacuating"},
		{"settled member with a peer gone", readiness{view: aMember, settled: true, peers: []string{"b"}, linked: linkedTo()}, true, false, ""},
		{"fresh node", readiness{view: aEmpty, peers: []string{"b"}, linked: linkedTo()}, true, false, ""},
		{"its store holds a cluster, not yet listed (restarted or just joined)", readiness{view: aJoining, peers: []string{"b"}, linked: linkedTo()}, false, false, ""},
		{"new member caught up, linked to all", readiness{view: aMember, caughtUp: true, voter: true, peers: []string{"b", "c"}, linked: linkedTo("b", "c")}, true, true, ""},
		{"new member caught up and linked, not yet promoted to voter", readiness{view: aMember, caughtUp: true, peers: []string{"b", "c"}, linked: linkedTo("b", "c")}, false, false, ""},
		{"new member caught up, missing a link", readiness{view: aMember, caughtUp: true, voter: true, peers: []string{"b", "c"}, linked: linkedTo("b")}, false, false, "link to c"},
		{"new member linked to all, still applying the leader's log", readiness{view: aMember, peers: []string{"b", "c"}, linked: linkedTo("b", "c")}, false, false, ""},
		{"new member alone, caught up", readiness{view: aMember, caughtUp: true, voter: true, linked: linkedTo()}, true, true, ""},
		{"new member alone, not caught up", readiness{view: aMember, linked: linkedTo()}, false, false, ""},
		{"grace passed without a leader to catch up with", readiness{view: aMember, voter: true, memberFor: linkGrace + time.Second, linked: linkedTo()}, true, true, ""},
		{"grace passed with a dead member", readiness{view: aMember, voter: true, memberFor: linkGrace + time.Second, peers: []string{"b"}, linked: linkedTo()}, true, true, ""},
		{"grace passed, still a non-voter: never ready before its promotion", readiness{view: aMember, memberFor: linkGrace + time.Hour, linked: linkedTo()}, false, false, ""},
		{"within grace with a dead member", readiness{view: aMember, voter: true, memberFor: linkGrace - time.Second, peers: []string{"b"}, linked: linkedTo()}, false, false, ""},
		{"settled, cut off from the majority (1 of 3 voters)", readiness{view: aMember, settled: true, voter: true, voters: 3, reached: 1, linked: linkedTo()}, false, false, "cut off from the majority: reaches 1 of 3 voters"},
		{"settled, a majority in reach (2 of 3)", readiness{view: aMember, settled: true, voter: true, voters: 3, reached: 2, linked: linkedTo()}, true, false, ""},
		{"settled, half of 4 voters is no majority", readiness{view: aMember, settled: true, voter: true, voters: 4, reached: 2, linked: linkedTo()}, false, false, ""},
		{"a single voter is its own majority", readiness{view: aMember, caughtUp: true, voter: true, voters: 1, reached: 1, linked: linkedTo()}, true, true, ""},
		{"an empty node serves alone whatever the counts", readiness{view: aEmpty, voters: 3, reached: 0, linked: linkedTo()}, true, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ready, settle, why := judgeReady(tc.in)
			if ready != tc.ready || settle != tc.settle {
				t.Fatalf("got ready %v settle %v, want %v %v", ready, settle, tc.ready, tc.settle)
			}
			if ready != (why == "") {
				t.Fatalf("ready %v with reason %q: a node that is not ready says why, a ready one nothing", ready, why)
			}
			if tc.why != "" && !strings.Contains(why, tc.why) {
				t.Fatalf("reason %q, want it to say %q", why, tc.why)
			}
		})
	}
}

// TestJudgeJoin: a joiner with an empty store comes in as a non-voter (a listed voter
// is demoted first); a promotion applies to a listed non-voter only; a joiner of an
// older version is a voter at once; a member asking again changes nothing.
func TestJudgeJoin(t *testing.T) {
	servers := []raft.Server{
		{ID: "a", Suffrage: raft.Voter}, {ID: "b", Suffrage: raft.Voter}, {ID: "n", Suffrage: raft.Nonvoter},
	}
	for _, tc := range []struct {
		name              string
		node              string
		nonVoter, promote bool
		want              []configStep
		code              string
	}{
		{name: "new node, empty store", node: "c", nonVoter: true, want: []configStep{stepAddNonvoter}},
		{name: "a voter that lost its store: demoted first", node: "b", nonVoter: true, want: []configStep{stepDemote, stepAddNonvoter}},
		{name: "a non-voter rejoining empty", node: "n", nonVoter: true, want: []configStep{stepAddNonvoter}},
		{name: "older joiner: a voter at once", node: "c", want: []configStep{stepAddVoter}},
		{name: "a voter asking again: unchanged", node: "a", want: []configStep{stepAddVoter}},
		{name: "a non-voter with its store asking again: not promoted before it caught up", node: "n", want: nil},
		{name: "promotion of a caught-up non-voter", node: "n", promote: true, want: []configStep{stepAddVoter}},
		{name: "promotion of a voter: nothing to do", node: "a", promote: true, want: nil},
		{name: "promotion of a node no longer listed", node: "z", promote: true, code: apiv1.CodeNotMember},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := judgeJoin(servers, tc.node, tc.nonVoter, tc.promote)
			if codeOrEmpty(err) != tc.code {
				t.Fatalf("error %v, want code %q", err, tc.code)
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("steps %v, want %v", got, tc.want)
			}
		})
	}
}

// TestJudgePromote: only a listed non-voter that caught up asks to be a voter.
func TestJudgePromote(t *testing.T) {
	servers := []raft.Server{{ID: "a", Suffrage: raft.Voter}, {ID: "n", Suffrage: raft.Nonvoter}}
	for _, tc := range []struct {
		self     string
		caughtUp bool
		want     bool
	}{
		{"n", true, true}, {"n", false, false}, {"a", true, false}, {"z", true, false},
	} {
		if got := judgePromote(servers, tc.self, tc.caughtUp); got != tc.want {
			t.Errorf("%s caught up %v: %v, want %v", tc.self, tc.caughtUp, got, tc.want)
		}
	}
}
