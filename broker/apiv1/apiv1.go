// Package apiv1 is the contract of mqttd's HTTP API under /api/v1: the bodies of its
// requests and answers and its stable error codes, written once. The broker's API
// serves them, the cluster fills them, and the operator's client and the tests decode
// them. It depends on nothing.
package apiv1

// Store states of a node (Node.StoreState).
const (
	StoreEmpty  = "empty"  // no cluster identity yet: may bootstrap or join
	StoreMember = "member" // a member of the cluster its store names
	StoreStale  = "stale"  // another cluster's store, or removed from this one: reset it
)

// Stable error codes (Error.Code): the operator acts on them.
const (
	CodeStaleStore     = "stale_store"     // this node's store belongs to another cluster or it was removed
	CodeCookieMismatch = "cookie_mismatch" // the peer does not know our cookie
	CodeNotMember      = "not_member"      // the node is not (or no longer) in the cluster
	CodeNoLeader       = "no_leader"       // the cluster has no leader right now
	CodeAlreadyMember  = "already_member"  // bootstrap or join on a member
	CodeUnknownNode    = "unknown_node"    // force-leave of a node the cluster does not list
	CodeUnreachable    = "unreachable"     // the seed or leader (or, for a client, the node) cannot be reached
	CodeBadRequest     = "bad_request"     // malformed input
	CodeEvacuating     = "evacuating"      // the node is being evacuated
	CodeClientIDOwned  = "client_id_owned" // a takeover of another user's client ID
	CodeSessionMoving  = "session_moving"  // another move of the client ID's session is still running
	CodeNotFound       = "not_found"       // no such object (a client not connected to this node)
	CodeInternal       = "internal"        // anything else
)

// Node is GET /api/v1/node: the node's cluster state and how it serves clients.
type Node struct {
	Name        string `json:"name"`
	ClusterID   string `json:"clusterID"`
	RaftState   string `json:"raftState"`
	StoreState  string `json:"storeState"`
	StaleReason string `json:"staleReason,omitempty"`
	Evacuating  bool   `json:"evacuating"`
	Version     string `json:"version"`
	Ready       bool   `json:"ready"`
	// NotReadyReason says why the node is not ready (empty when it is): cut off from
	// the majority, catching up, evacuating, a stale store, shutting down.
	NotReadyReason string `json:"notReadyReason,omitempty"`
	// Unreachable lists the other members this node has no working link to (a
	// partition, a peer down), sorted.
	Unreachable []string `json:"unreachable,omitempty"`
	Connections int64    `json:"connections"`
	// AppliedIndex and CommitIndex are this node's raft log positions (members only):
	// the gap is how far it lags behind what it knows is committed.
	AppliedIndex uint64 `json:"appliedIndex,omitempty"`
	CommitIndex  uint64 `json:"commitIndex,omitempty"`
	// CaughtUp: the node applied the leader's commit index as it was when the node came
	// back (a member is not ready before, within the link grace period).
	CaughtUp bool `json:"caughtUp,omitempty"`
}

// Member is one node of the cluster in GET /api/v1/cluster.
type Member struct {
	Name      string `json:"name"`
	Address   string `json:"address"`
	Reachable bool   `json:"reachable"`
	// Voter: the member counts for elections and commits. A node that joined with an
	// empty store is a non-voter until it caught up with the leader's log.
	Voter bool `json:"voter"`
}

// Cluster is GET /api/v1/cluster: the cluster as the asked node sees it.
type Cluster struct {
	ClusterID string   `json:"clusterID"`
	Leader    string   `json:"leader"`
	Members   []Member `json:"members"`
}

// Has reports whether the cluster lists node.
func (c *Cluster) Has(node string) bool {
	for _, m := range c.Members {
		if m.Name == node {
			return true
		}
	}
	return false
}

// Evacuation is GET /api/v1/node/evacuation.
type Evacuation struct {
	State    string `json:"state"` // idle, running, done
	Clients  int    `json:"clients"`
	Sessions int    `json:"sessions"`
	Moved    int    `json:"moved"`
}

// JoinRequest is the body of POST /api/v1/cluster/join.
type JoinRequest struct {
	Seed string `json:"seed"` // host:port of a member's cluster port
}

// ForceLeaveRequest is the body of POST /api/v1/cluster/force-leave.
type ForceLeaveRequest struct {
	Node string `json:"node"`
}

// Error is the body of every /api/v1 error.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}
