package cluster

import (
	"fmt"
	"time"

	"github.com/hashicorp/raft"

	"github.com/mqtt-operator/mqtt-operator/broker/apiv1"
)

// The membership decisions, as pure functions of a copy of the node's membership
// state (memberView), the raft configuration and what a peer said. The membership
// part takes the copy under its lock, decides with these, then acts; the tests in
// judge_test.go run them as tables.

// memberView is one consistent copy of the node's membership state.
type memberView struct {
	Self        string // this node's name
	State       string // apiv1.StoreEmpty, StoreMember or StoreStale
	StaleReason string
	ClusterID   string // "" until bootstrapped, joined or adopted from the log
	WasMember   bool   // this node saw itself in the raft configuration
}

// member reports whether the node acts as a member: its store belongs to a cluster
// and it has seen itself in that cluster's configuration.
func (v memberView) member() bool { return v.State == apiv1.StoreMember && v.WasMember }

// notMember is the error of a request that needs a member.
func (v memberView) notMember() error {
	if v.State == apiv1.StoreStale {
		return errorf(apiv1.CodeStaleStore, "%s", v.StaleReason)
	}
	return errorf(apiv1.CodeNotMember, "%s is not a member of a cluster", v.Self)
}

// judgePeer decides whether a peer's link is accepted, from this node's view, the
// newest configuration its log holds (servers, at index idx; nil while raft stops)
// and the peer's hello. The answer carries this node's cluster ID and index, or the
// refusal's code.
func judgePeer(v memberView, servers []raft.Server, idx uint64, peer string, h *hello) *hello {
	ack := &hello{ClusterID: v.ClusterID, ConfigIndex: idx}
	switch {
	case !v.member():
		ack.Code, ack.Message, ack.ClusterID, ack.ConfigIndex = apiv1.CodeNotMember, v.Self+" is not a member", "", 0
	case servers == nil: // raft is stopping: no view to judge by
		ack.Code, ack.Message, ack.ConfigIndex = apiv1.CodeNotMember, v.Self+" has no configuration to check against now", 0
	case h.ClusterID != "" && h.ClusterID != v.ClusterID:
		ack.Code, ack.Message = apiv1.CodeStaleStore, "the store of "+peer+" belongs to cluster "+h.ClusterID+"; this cluster is "+v.ClusterID
	case !containsServer(servers, peer):
		ack.Code, ack.Message = apiv1.CodeNotMember, peer+" is not a member of this cluster"
	}
	return ack
}

// judgeRefusal decides what a peer's refusal of this node's link means: a member of
// this node's cluster that lists a later configuration without this node makes it
// stale (the cluster removed it), and the reason is returned. A peer with another
// cluster ID proves nothing about this node: one of the two holds a foreign store,
// and a single peer cannot tell which (a healthy member that links to a node
// restarted on another cluster's store must not wipe itself); the join and the raft
// log decide that.
func judgeRefusal(h *hello, myIndex uint64, myCluster, peer string) (stale bool, reason string) {
	switch h.Code {
	case apiv1.CodeNotMember:
		// Unknown index 0: not enough to tell.
		if myIndex > 0 && h.ConfigIndex > myIndex && h.ClusterID != "" && h.ClusterID == myCluster {
			return true, "the cluster removed this node while it was away: " + peer + " does not list it"
		}
	case apiv1.CodeStaleStore:
		// Not linked; the refusing side logs it ("cluster link refused").
	}
	return false, ""
}

// configVerdict is what a new look at the raft configuration means for this node.
type configVerdict struct {
	wasMember bool // the view's WasMember from now on
	removed   bool // the cluster removed this node: it becomes stale
	link      bool // keep links to the configuration's members (else none)
}

// judgeConfig reads the configuration: a member that sees itself in it was a member;
// one that was and no longer sees itself was removed; only a node that was a member
// (and is not stale) links to the others.
func judgeConfig(v memberView, servers []raft.Server) configVerdict {
	self := containsServer(servers, v.Self)
	out := configVerdict{wasMember: v.WasMember}
	switch {
	case self && v.State == apiv1.StoreMember:
		out.wasMember = true
	case !self && v.WasMember && v.State == apiv1.StoreMember:
		out.removed = true
		return out
	}
	out.link = v.State == apiv1.StoreMember && out.wasMember
	return out
}

// judgeRaftConn decides whether a raft connection is handed to raft: not while raft
// is down or the node stale, and never from another cluster (an empty ID on either
// side is not known yet: raft's own log decides).
func judgeRaftConn(v memberView, raftUp bool, theirID string) bool {
	if !raftUp || v.State == apiv1.StoreStale {
		return false
	}
	return v.ClusterID == "" || theirID == "" || v.ClusterID == theirID
}

// judgeBootstrap refuses a bootstrap of a node that is stale, already belongs to a
// cluster or has no raft running.
func judgeBootstrap(v memberView, raftUp bool) error {
	switch {
	case v.State == apiv1.StoreStale:
		return v.notMember()
	case v.State == apiv1.StoreMember || v.ClusterID != "":
		return errorf(apiv1.CodeAlreadyMember, "this node already belongs to cluster %s", v.ClusterID)
	case !raftUp:
		return errorf(apiv1.CodeInternal, "raft is not running")
	}
	return nil
}

// judgeLeaderOp refuses a membership or apply request this node cannot serve: it is
// not a member with raft running, or a joining node's store belongs to another
// cluster.
func judgeLeaderOp(v memberView, raftUp bool, req *request) error {
	if !raftUp || v.State != apiv1.StoreMember {
		return v.notMember()
	}
	if req.Op == opJoin && req.ClusterID != "" && req.ClusterID != v.ClusterID {
		return errorf(apiv1.CodeStaleStore, "the store of %s belongs to cluster %s; this cluster is %s", req.Name, req.ClusterID, v.ClusterID)
	}
	return nil
}

// adoption is what a cluster ID found in the log does to this node.
type adoption int

const (
	adoptKeep  adoption = iota // the ID is this node's already
	adoptStore                 // the node had none: it takes this one
	adoptStale                 // the node's store belongs to another cluster
)

// judgeClusterID compares the cluster ID the log carries with the node's own.
func judgeClusterID(mine, logs string) (adoption, string) {
	switch {
	case mine == "":
		return adoptStore, ""
	case mine != logs:
		return adoptStale, fmt.Sprintf("this node's store belongs to cluster %s, the cluster's log says %s", mine, logs)
	}
	return adoptKeep, ""
}

// readiness is what Ready looks at.
type readiness struct {
	view       memberView
	settled    bool          // ready once already: stays ready
	caughtUp   bool          // applied the leader's commit index as of its return
	voter      bool          // listed as a voter (a node that joined empty is promoted once caught up)
	voters     int           // the voters of the configuration
	reached    int           // of them, this node (if a voter) and those it has a link to
	evacuating bool          // moving its clients away: never ready
	memberFor  time.Duration // how long it has been a member since it started or was reset
	peers      []string      // the other members of the configuration
	linked     func(peer string) bool
}

// judgeReady decides readiness: not stale, not evacuating, for a member in reach of a
// majority of the voters (itself counted if it is one: a node cut off from the
// majority is unready even once settled, so Kubernetes stops sending it clients),
// and, for a member that just
// started (or rejoined after a reset), caught up with the leader's log as it was when
// the node came back (so it serves the cluster's retained set, not an older one), a
// voter (promoted after that catch-up when it joined with an empty store; a non-voter
// is never ready, grace or not), and linked both ways to every other member (so it has their routes and they have its),
// or linkGrace after it became a member (a dead member, or a cluster without a leader,
// must not keep it unready forever).
// settle reports that the node is settled from now on: a peer going away later does
// not make it unready.
func judgeReady(in readiness) (ready, settle bool, why string) {
	if in.view.State == apiv1.StoreStale {
		return false, false, "stale store: " + in.view.StaleReason
	}
	if in.evacuating {
		return false, false, "evacuating"
	}
	if in.view.member() && in.voters > 0 && in.reached <= in.voters/2 {
		// Cut off from a majority (settled or not): what its clients publish cannot
		// reach the rest of the cluster, and it cannot store retained messages.
		return false, false, fmt.Sprintf("cut off from the majority: reaches %d of %d voters", in.reached, in.voters)
	}
	if in.settled {
		return true, false, ""
	}
	if !in.view.member() {
		// An empty node serves alone until it joins; one whose store holds a cluster
		// (restarted, or just joined) waits until it sees itself in that cluster's
		// configuration, then catches up like any member that comes back.
		if in.view.State == apiv1.StoreMember {
			return false, false, "not yet in the cluster's configuration"
		}
		return true, false, ""
	}
	if !in.voter {
		// Joined with an empty store: it becomes a voter once caught up, and counts for
		// no quorum until then; no grace makes it ready before (it would never be
		// promoted if it settled as a non-voter).
		return false, false, "a non-voter until caught up with the leader's log"
	}
	if in.memberFor > linkGrace {
		return true, true, ""
	}
	if !in.caughtUp {
		return false, false, "catching up with the leader's log"
	}
	for _, p := range in.peers {
		if !in.linked(p) {
			return false, false, "waiting for the link to " + p
		}
	}
	return true, true, ""
}

// linkGrace bounds how long a member stays unready waiting for its links.
const linkGrace = 20 * time.Second

func containsServer(ss []raft.Server, name string) bool {
	for _, s := range ss {
		if string(s.ID) == name {
			return true
		}
	}
	return false
}

// configStep is one change of the raft configuration a leader makes for a join.
type configStep int

const (
	stepAddVoter    configStep = iota // add the node as a voter, or promote it
	stepDemote                        // make a listed voter a non-voter
	stepAddNonvoter                   // add the node as a non-voter (or update its address)
)

// judgeJoin decides the configuration changes for a join (promote false) or a
// promotion (promote true) of node name. A joiner whose store is empty (nonVoter)
// comes in as a non-voter, and a voter that lost its store is demoted first: until it
// has caught up it must not count for elections or commits, or a second fault could
// lose entries it had acknowledged (raft's hazard of a voter that lost its disk). A
// joiner of an older version (nonVoter false) is added as a voter, as it expects,
// unless it is listed as a non-voter: then it is promoted only by its own request once
// caught up. A promotion applies only to a listed non-voter; a node no longer listed
// is refused.
func judgeJoin(servers []raft.Server, name string, nonVoter, promote bool) ([]configStep, error) {
	var listed *raft.Server
	for i := range servers {
		if string(servers[i].ID) == name {
			listed = &servers[i]
		}
	}
	switch {
	case promote && listed == nil:
		return nil, errorf(apiv1.CodeNotMember, "%s is not in the cluster's configuration", name)
	case promote && listed.Suffrage == raft.Voter:
		return nil, nil
	case promote:
		return []configStep{stepAddVoter}, nil
	case !nonVoter && listed != nil && listed.Suffrage != raft.Voter:
		return nil, nil // a non-voter with its store: it asks to be promoted once caught up
	case !nonVoter:
		return []configStep{stepAddVoter}, nil
	case listed != nil && listed.Suffrage == raft.Voter:
		return []configStep{stepDemote, stepAddNonvoter}, nil
	default:
		return []configStep{stepAddNonvoter}, nil
	}
}

// judgePromote says whether a member should ask to become a voter: it is listed as a
// non-voter and has caught up with the leader's log.
func judgePromote(servers []raft.Server, self string, caughtUp bool) bool {
	for _, s := range servers {
		if string(s.ID) == self {
			return caughtUp && s.Suffrage != raft.Voter
		}
	}
	return false
}
