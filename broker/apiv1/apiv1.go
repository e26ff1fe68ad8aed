// Package apiv1 is the contract of mqttd's HTTP API under /api/v1: the bodies of its
// requests and answers and its stable error codes, written once. The broker's API
// serves them, the cluster fills them, and the operator's client and the tests decode
// them. It depends on nothing.
package apiv1

import _ "embed" // the OpenAPI document

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

// Management API: answers for the whole cluster from any node. A node that could not
// be asked (no link, no answer in time) is listed in Meta.Unreachable: the answer is
// then partial, never silently short.

// Meta is the paging of a list answer: Page counts from 1, Count is the number of
// items that matched the filters (on every page), Unreachable the nodes whose items
// are missing.
type Meta struct {
	Page        int      `json:"page"`
	Limit       int      `json:"limit"`
	Count       int      `json:"count"`
	Unreachable []string `json:"unreachable,omitempty"`
}

// Client is one session of the cluster in GET /api/v1/clients: connected or kept for
// a client that is away (a persistent session).
type Client struct {
	ClientID        string `json:"clientID"`
	Node            string `json:"node"`
	Username        string `json:"username,omitempty"`
	Connected       bool   `json:"connected"`
	Remote          string `json:"remote,omitempty"` // the client's address (a PROXY header's, when the listener has it on)
	Listener        string `json:"listener,omitempty"`
	ProtocolVersion byte   `json:"protocolVersion,omitempty"`
	TLSVersion      string `json:"tlsVersion,omitempty"` // "1.2" or "1.3" on a TLS listener
	// ConnectedAt is when the current connection came (connected clients);
	// DisconnectedAt when the last one went (sessions kept for an absent client). RFC 3339.
	ConnectedAt    string `json:"connectedAt,omitempty"`
	DisconnectedAt string `json:"disconnectedAt,omitempty"`
	// ExpiryInterval is the session expiry interval in seconds once disconnected
	// (0: the session ends with the connection; 4294967295: never).
	ExpiryInterval uint32 `json:"expiryInterval"`
	Subscriptions  int    `json:"subscriptions"`
	Queued         int    `json:"queued"`   // messages waiting to be sent
	Inflight       int    `json:"inflight"` // QoS 1 and 2 messages sent and not yet acknowledged
	Dropped        uint64 `json:"dropped"`  // messages dropped for a full queue
}

// ClientList is GET /api/v1/clients.
type ClientList struct {
	Data []Client `json:"data"`
	Meta Meta     `json:"meta"`
}

// ClientDetail is GET /api/v1/clients/{clientID}: the session and its subscriptions.
type ClientDetail struct {
	Client
	SubscriptionList []Subscription `json:"subscriptionList"`
}

// Subscription is one subscription in GET /api/v1/subscriptions.
type Subscription struct {
	ClientID string `json:"clientID"`
	Node     string `json:"node"`
	// Topic is the filter as subscribed ($share/{group}/{filter} for a shared one).
	Topic             string `json:"topic"`
	QoS               byte   `json:"qos"`
	NoLocal           bool   `json:"noLocal,omitempty"`
	RetainAsPublished bool   `json:"retainAsPublished,omitempty"`
	RetainHandling    byte   `json:"retainHandling,omitempty"`
	Identifier        uint32 `json:"identifier,omitempty"`
}

// SubscriptionList is GET /api/v1/subscriptions.
type SubscriptionList struct {
	Data []Subscription `json:"data"`
	Meta Meta           `json:"meta"`
}

// Route is one topic filter the cluster routes in GET /api/v1/routes, with the nodes
// that have subscribers to it.
type Route struct {
	Topic string   `json:"topic"` // the filter ($share/{group}/{filter} for a shared group)
	Nodes []string `json:"nodes"`
}

// RouteList is GET /api/v1/routes.
type RouteList struct {
	Data []Route `json:"data"`
	Meta Meta    `json:"meta"`
}

// Payload encodings of retained messages and publishes.
const (
	EncodingPlain  = "plain"  // UTF-8 text
	EncodingBase64 = "base64" // standard base64 (any bytes)
)

// RetainedMessage is one retained message in GET /api/v1/retained. Every node holds
// the same set (it is replicated); $SYS topics are each node's own and not listed.
type RetainedMessage struct {
	Topic string `json:"topic"`
	QoS   byte   `json:"qos"`
	// Payload is the payload as text when it is valid UTF-8 (PayloadEncoding plain),
	// else base64; the list shows at most the first 1024 bytes (Truncated).
	Payload         string `json:"payload"`
	PayloadEncoding string `json:"payloadEncoding"`
	PayloadSize     int    `json:"payloadSize"`
	Truncated       bool   `json:"truncated,omitempty"`
	Publisher       string `json:"publisher,omitempty"`
}

// RetainedList is GET /api/v1/retained.
type RetainedList struct {
	Data []RetainedMessage `json:"data"`
	Meta Meta              `json:"meta"`
}

// PublishRequest is the body of POST /api/v1/publish.
type PublishRequest struct {
	Topic           string `json:"topic"`
	Payload         string `json:"payload"`
	PayloadEncoding string `json:"payloadEncoding,omitempty"` // plain (default) or base64
	QoS             byte   `json:"qos"`
	Retain          bool   `json:"retain"`
}

// PublishResult is the answer of POST /api/v1/publish: how many subscribers of the
// cluster got the message (Sessions: the sessions that queued it and the dashboard's
// subscribe tools that watched it).
type PublishResult struct {
	Topic    string `json:"topic"`
	Sessions int    `json:"sessions"`
	// NotRetained says why a retained message was delivered but not stored (the
	// retained message limits); empty otherwise.
	NotRetained string `json:"notRetained,omitempty"`
}

// KickResult is the answer of DELETE /api/v1/clients/{clientID}: the node whose
// connection was closed (reason 0x98, administrative action).
type KickResult struct {
	ClientID string `json:"clientID"`
	Node     string `json:"node"`
}

// NodeStats is one node's counters in GET /api/v1/stats (the sum of all nodes in
// Total, with Name empty and UptimeSeconds the longest).
type NodeStats struct {
	Name             string `json:"name"`
	Version          string `json:"version,omitempty"`
	UptimeSeconds    int64  `json:"uptimeSeconds"`
	Connections      int64  `json:"connections"`
	Sessions         int    `json:"sessions"`
	Subscriptions    int    `json:"subscriptions"`
	Retained         int    `json:"retained"` // retained messages ($SYS topics, each node's own, left out)
	MessagesReceived uint64 `json:"messagesReceived"`
	MessagesSent     uint64 `json:"messagesSent"`
	MessagesDropped  uint64 `json:"messagesDropped"`
	BytesReceived    uint64 `json:"bytesReceived"`
	BytesSent        uint64 `json:"bytesSent"`
}

// Stats is GET /api/v1/stats.
type Stats struct {
	Nodes       []NodeStats `json:"nodes"`
	Total       NodeStats   `json:"total"`
	Unreachable []string    `json:"unreachable,omitempty"`
}

// NodeList is GET /api/v1/nodes: every member's GET /api/v1/node with its uptime.
type NodeList struct {
	ClusterID   string       `json:"clusterID,omitempty"`
	Leader      string       `json:"leader,omitempty"`
	Data        []NodeDetail `json:"data"`
	Unreachable []string     `json:"unreachable,omitempty"`
}

// NodeDetail is one node in GET /api/v1/nodes.
type NodeDetail struct {
	Node
	UptimeSeconds int64 `json:"uptimeSeconds"`
	Sessions      int   `json:"sessions"`
}

// OpenAPI is the OpenAPI 3 document of /api/v1 (openapi.yaml), served as JSON at
// GET /api/v1/openapi.json.
//
//go:embed openapi.yaml
var OpenAPI []byte
