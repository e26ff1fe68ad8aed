package api

import (
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"

	"github.com/mqtt-operator/mqtt-operator/broker/apiv1"
	"github.com/mqtt-operator/mqtt-operator/broker/cluster"
	"github.com/mqtt-operator/mqtt-operator/broker/server"
	"github.com/mqtt-operator/mqtt-operator/broker/session"
)

// The management API: clients, subscriptions, routes, retained messages, publish,
// nodes and stats, each answering for the whole cluster from any node. The asked node
// answers its own part and asks every other member for theirs over the cluster links
// (cluster.Node.AskPeers); a member that cannot be asked is named in the answer
// (unreachable), so a partial answer is never taken for a whole one.

// Management queries, asked of every node.
const (
	qClients       = "clients"       // the node's sessions matching a clientFilter
	qClient        = "client"        // one session and its subscriptions
	qSubscriptions = "subscriptions" // the node's subscriptions matching a subFilter
	qKick          = "kick"          // close a client's connection
	qStats         = "stats"         // the node's counters
	qNode          = "node"          // the node's state
)

// Paging bounds.
const (
	defaultLimit = 100
	maxLimit     = 1000
	// retainedPreview is how much of a payload the retained list shows.
	retainedPreview = 1024
	// askTimeout bounds a whole cluster-wide query.
	askTimeout = 10 * time.Second
)

// clientFilter selects clients (GET /api/v1/clients).
type clientFilter struct {
	Username  string `json:"username,omitempty"`
	Prefix    string `json:"prefix,omitempty"`
	Connected *bool  `json:"connected,omitempty"`
	Node      string `json:"node,omitempty"`
	// Want is how many of its matching items, in order, a node sends (the asked
	// page's end): every node counts all of them but sends no more than a page needs.
	Want int `json:"want,omitempty"`
}

func (f clientFilter) match(c apiv1.Client) bool {
	return (f.Username == "" || c.Username == f.Username) && strings.HasPrefix(c.ClientID, f.Prefix) &&
		(f.Connected == nil || *f.Connected == c.Connected)
}

// subFilter selects subscriptions (GET /api/v1/subscriptions).
type subFilter struct {
	Topic    string `json:"topic,omitempty"`
	ClientID string `json:"clientID,omitempty"`
	Node     string `json:"node,omitempty"`
	Want     int    `json:"want,omitempty"` // as clientFilter.Want
}

// partial is one node's part of a list: the first Want matching items in the list's
// order, and how many matched in all.
type partial[T any] struct {
	Items []T `json:"items"`
	Count int `json:"count"`
}

// cut is the first want items of a node's sorted matches, with their count.
func cut[T any](items []T, want int) partial[T] {
	p := partial[T]{Items: items, Count: len(items)}
	if len(items) > want {
		p.Items = items[:want]
	}
	if p.Items == nil {
		p.Items = []T{}
	}
	return p
}

func (f subFilter) match(s apiv1.Subscription) bool {
	return (f.Topic == "" || s.Topic == f.Topic) && (f.ClientID == "" || s.ClientID == f.ClientID)
}

type idParam struct {
	ClientID string `json:"clientID"`
}

type kicked struct {
	Kicked bool `json:"kicked"`
}

// errNotFound is a query about something this node does not hold (a not_found answer,
// told apart from a node that failed).
var errNotFound = &cluster.Error{Code: apiv1.CodeNotFound, Message: "not on this node"}

// answerLocal answers a management query from this node's own state.
func (a *api) answerLocal(name string, params []byte) (any, error) {
	self := a.nodeName()
	switch name {
	case qClients:
		var f clientFilter
		if err := unmarshalParams(params, &f); err != nil {
			return nil, err
		}
		if f.Node != "" && f.Node != self {
			return cut([]apiv1.Client{}, f.Want), nil
		}
		out := []apiv1.Client{}
		for _, c := range a.srv.LocalClients(func(id string) bool { return strings.HasPrefix(id, f.Prefix) }) {
			if f.match(c) {
				c.Node = self
				out = append(out, c)
			}
		}
		return cut(out, f.Want), nil
	case qClient:
		var p idParam
		if err := unmarshalParams(params, &p); err != nil {
			return nil, err
		}
		d, ok := a.srv.LocalClient(p.ClientID)
		if !ok {
			return nil, errNotFound
		}
		d.Node = self
		for i := range d.SubscriptionList {
			d.SubscriptionList[i].Node = self
		}
		return d, nil
	case qSubscriptions:
		var f subFilter
		if err := unmarshalParams(params, &f); err != nil {
			return nil, err
		}
		if f.Node != "" && f.Node != self {
			return cut([]apiv1.Subscription{}, f.Want), nil
		}
		out := []apiv1.Subscription{}
		for _, s := range a.srv.LocalSubscriptions() {
			if f.match(s) {
				s.Node = self
				out = append(out, s)
			}
		}
		return cut(out, f.Want), nil
	case qKick:
		var p idParam
		if err := unmarshalParams(params, &p); err != nil {
			return nil, err
		}
		return kicked{a.srv.KickClient(p.ClientID)}, nil
	case qStats:
		return a.localStats(), nil
	case qNode:
		st := a.srv.Stats()
		return apiv1.NodeDetail{Node: a.nodeInfo(), UptimeSeconds: int64(st.Uptime / time.Second), Sessions: st.Sessions}, nil
	}
	return nil, &cluster.Error{Code: apiv1.CodeBadRequest, Message: fmt.Sprintf("unknown management query %q", name)}
}

// manager answers peers' management queries (cluster.Manager).
func (a *api) manager(name string, params []byte) ([]byte, error) {
	v, err := a.answerLocal(name, params)
	if err != nil {
		return nil, err
	}
	return json.Marshal(v)
}

func unmarshalParams(params []byte, v any) error {
	if len(params) == 0 {
		return nil
	}
	if err := json.Unmarshal(params, v); err != nil {
		return &cluster.Error{Code: apiv1.CodeBadRequest, Message: err.Error()}
	}
	return nil
}

func (a *api) localStats() apiv1.NodeStats {
	st := a.srv.Stats()
	return apiv1.NodeStats{Name: a.nodeName(), Version: a.opts.Version, UptimeSeconds: int64(st.Uptime / time.Second),
		Connections: st.ClientsConnected, Sessions: st.Sessions, Subscriptions: st.Subscriptions, Retained: len(a.srv.RetainedMessages()),
		MessagesReceived: st.MessagesReceived, MessagesSent: st.MessagesSent, MessagesDropped: st.MessagesDropped,
		BytesReceived: st.BytesReceived, BytesSent: st.BytesSent}
}

// nodeName is this node's name: its cluster name, else Options.NodeName.
func (a *api) nodeName() string {
	if a.node != nil {
		return a.node.Name()
	}
	return a.opts.NodeName
}

// answer is one node's answer to a cluster-wide query.
type answer struct {
	node string
	data []byte
	err  error
}

// ask sends a query to every node of the cluster (this one included) and returns
// their answers, this node's first, and the nodes that could not be asked.
func (a *api) ask(ctx context.Context, name string, params any) ([]answer, []string) {
	raw, err := json.Marshal(params)
	if err != nil {
		return []answer{{node: a.nodeName(), err: err}}, nil
	}
	ctx, cancel := context.WithTimeout(ctx, askTimeout)
	defer cancel()
	own, err := a.manager(name, raw)
	out := []answer{{node: a.nodeName(), data: own, err: err}}
	if a.node == nil {
		return out, nil
	}
	peers, unreachable := a.node.AskPeers(ctx, name, raw)
	for _, p := range peers {
		out = append(out, answer{node: p.Node, data: p.Data, err: p.Err})
	}
	return out, unreachable
}

// gatherList asks every node for its part of a list and merges them: the items
// (at most Want from each node) and the total count. A node that answered with an
// error counts as unreachable (its items are missing).
func gatherList[T any](a *api, r *http.Request, name string, params any) ([]T, int, []string) {
	answers, unreachable := a.ask(r.Context(), name, params)
	var all []T
	count := 0
	for _, an := range answers {
		var part partial[T]
		if an.err != nil || json.Unmarshal(an.data, &part) != nil {
			a.log.Warn("a node's management answer is missing", "query", name, "node", an.node, "error", an.err)
			unreachable = append(unreachable, an.node)
			continue
		}
		all = append(all, part.Items...)
		count += part.Count
	}
	slices.Sort(unreachable)
	return all, count, unreachable
}

// paging reads ?page= and ?limit=.
func paging(r *http.Request) (page, limit int, err error) {
	page, limit = 1, defaultLimit
	if v := r.URL.Query().Get("page"); v != "" {
		if page, err = strconv.Atoi(v); err != nil || page < 1 {
			return 0, 0, fmt.Errorf("page must be a positive integer, not %q", v)
		}
	}
	if v := r.URL.Query().Get("limit"); v != "" {
		if limit, err = strconv.Atoi(v); err != nil || limit < 1 || limit > maxLimit {
			return 0, 0, fmt.Errorf("limit must be an integer from 1 to %d, not %q", maxLimit, v)
		}
	}
	return page, limit, nil
}

// pageOf cuts one page out of items.
func pageOf[T any](items []T, page, limit int) []T {
	if page-1 >= (len(items)+limit-1)/limit { // also where (page-1)*limit would overflow
		return []T{}
	}
	from := (page - 1) * limit
	return items[from:min(from+limit, len(items))]
}

// want is how many sorted items each node sends for a page: its end (capped; a page
// beyond it is empty anyway).
func want(page, limit int) int {
	if page > (1<<30)/limit {
		return 1 << 30
	}
	return page * limit
}

func (a *api) listClients(w http.ResponseWriter, r *http.Request) {
	page, limit, err := paging(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, apiv1.CodeBadRequest, err.Error())
		return
	}
	q := r.URL.Query()
	f := clientFilter{Username: q.Get("username"), Prefix: q.Get("clientid_prefix"), Node: q.Get("node"), Want: want(page, limit)}
	if v := q.Get("connected"); v != "" {
		c, err := strconv.ParseBool(v)
		if err != nil {
			writeError(w, http.StatusBadRequest, apiv1.CodeBadRequest, fmt.Sprintf("connected must be true or false, not %q", v))
			return
		}
		f.Connected = &c
	}
	all, count, unreachable := gatherList[apiv1.Client](a, r, qClients, f)
	// A client ID may have a session on two nodes for a moment (a takeover): both show.
	slices.SortFunc(all, func(x, y apiv1.Client) int {
		return cmp.Or(cmp.Compare(x.ClientID, y.ClientID), cmp.Compare(x.Node, y.Node))
	})
	writeJSON(w, http.StatusOK, apiv1.ClientList{Data: pageOf(all, page, limit),
		Meta: apiv1.Meta{Page: page, Limit: limit, Count: count, Unreachable: unreachable}})
}

func (a *api) getClient(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("clientID")
	answers, unreachable := a.ask(r.Context(), qClient, idParam{ClientID: id})
	var found []apiv1.ClientDetail
	for _, an := range answers {
		var d apiv1.ClientDetail
		switch {
		case an.err != nil && cluster.CodeOf(an.err) == apiv1.CodeNotFound:
		case an.err != nil || json.Unmarshal(an.data, &d) != nil:
			unreachable = append(unreachable, an.node) // failed: it may hold the session
		default:
			found = append(found, d)
		}
	}
	if len(found) == 0 {
		a.notFound(w, "no session with this client ID", unreachable)
		return
	}
	// A takeover in progress: the connected copy is the client's.
	slices.SortStableFunc(found, func(x, y apiv1.ClientDetail) int {
		if x.Connected != y.Connected {
			if x.Connected {
				return -1
			}
			return 1
		}
		return 0
	})
	writeJSON(w, http.StatusOK, found[0])
}

// notFound answers 404, or 502 when some node could not be asked (it may hold it).
func (a *api) notFound(w http.ResponseWriter, what string, unreachable []string) {
	if len(unreachable) > 0 {
		writeError(w, http.StatusBadGateway, apiv1.CodeUnreachable,
			fmt.Sprintf("%s on the reachable nodes; not asked: %s", what, strings.Join(unreachable, ", ")))
		return
	}
	writeError(w, http.StatusNotFound, apiv1.CodeNotFound, what+" in the cluster")
}

func (a *api) kickClient(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("clientID")
	answers, unreachable := a.ask(r.Context(), qKick, idParam{ClientID: id})
	for _, an := range answers {
		var k kicked
		switch {
		case an.err != nil || json.Unmarshal(an.data, &k) != nil:
			unreachable = append(unreachable, an.node) // failed: the client may be there
		case k.Kicked:
			writeJSON(w, http.StatusOK, apiv1.KickResult{ClientID: id, Node: an.node})
			return
		}
	}
	a.notFound(w, "no client with this ID is connected", unreachable)
}

func (a *api) listSubscriptions(w http.ResponseWriter, r *http.Request) {
	page, limit, err := paging(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, apiv1.CodeBadRequest, err.Error())
		return
	}
	q := r.URL.Query()
	all, count, unreachable := gatherList[apiv1.Subscription](a, r, qSubscriptions,
		subFilter{Topic: q.Get("topic"), ClientID: q.Get("clientid"), Node: q.Get("node"), Want: want(page, limit)})
	slices.SortFunc(all, func(x, y apiv1.Subscription) int {
		return cmp.Or(cmp.Compare(x.ClientID, y.ClientID), cmp.Compare(x.Topic, y.Topic), cmp.Compare(x.Node, y.Node))
	})
	writeJSON(w, http.StatusOK, apiv1.SubscriptionList{Data: pageOf(all, page, limit),
		Meta: apiv1.Meta{Page: page, Limit: limit, Count: count, Unreachable: unreachable}})
}

// listRoutes answers from this node alone: every node knows every node's routes.
func (a *api) listRoutes(w http.ResponseWriter, r *http.Request) {
	page, limit, err := paging(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, apiv1.CodeBadRequest, err.Error())
		return
	}
	all := a.srv.Routes(a.nodeName())
	if t := r.URL.Query().Get("topic"); t != "" {
		all = slices.DeleteFunc(all, func(rt apiv1.Route) bool { return rt.Topic != t })
	}
	var unreachable []string
	if a.node != nil {
		unreachable = a.node.Info().Unreachable // their routes are dropped while unlinked
	}
	writeJSON(w, http.StatusOK, apiv1.RouteList{Data: pageOf(all, page, limit),
		Meta: apiv1.Meta{Page: page, Limit: limit, Count: len(all), Unreachable: unreachable}})
}

// retainedOf renders a retained message, its payload cut to preview bytes (0: whole).
func retainedOf(m *session.Message, preview int) apiv1.RetainedMessage {
	p := m.Payload
	out := apiv1.RetainedMessage{Topic: m.Topic, QoS: m.QoS, PayloadSize: len(p), Publisher: m.Publisher}
	if preview > 0 && len(p) > preview {
		p, out.Truncated = p[:preview], true
	}
	if utf8.Valid(p) {
		out.Payload, out.PayloadEncoding = string(p), apiv1.EncodingPlain
	} else {
		out.Payload, out.PayloadEncoding = base64.StdEncoding.EncodeToString(p), apiv1.EncodingBase64
	}
	return out
}

// listRetained answers from this node alone: every node holds the replicated set.
func (a *api) listRetained(w http.ResponseWriter, r *http.Request) {
	page, limit, err := paging(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, apiv1.CodeBadRequest, err.Error())
		return
	}
	prefix := r.URL.Query().Get("topic_prefix")
	msgs := a.srv.RetainedMessages()
	msgs = slices.DeleteFunc(msgs, func(m *session.Message) bool { return !strings.HasPrefix(m.Topic, prefix) })
	slices.SortFunc(msgs, func(x, y *session.Message) int { return cmp.Compare(x.Topic, y.Topic) })
	count := len(msgs)
	msgs = pageOf(msgs, page, limit)
	out := make([]apiv1.RetainedMessage, 0, len(msgs))
	for _, m := range msgs {
		out = append(out, retainedOf(m, retainedPreview))
	}
	writeJSON(w, http.StatusOK, apiv1.RetainedList{Data: out, Meta: apiv1.Meta{Page: page, Limit: limit, Count: count}})
}

// retainedTopic reads ?topic= (a query parameter, not a path: the router would clean
// a topic such as "/a", "a//b" or "a/../b" into another one).
func retainedTopic(w http.ResponseWriter, r *http.Request) (string, bool) {
	q := r.URL.Query()
	if !q.Has("topic") {
		writeError(w, http.StatusBadRequest, apiv1.CodeBadRequest, "the topic is the query parameter topic")
		return "", false
	}
	return q.Get("topic"), true
}

func (a *api) getRetained(w http.ResponseWriter, r *http.Request) {
	t, ok := retainedTopic(w, r)
	if !ok {
		return
	}
	m, ok := a.srv.Retained(t)
	if !ok || strings.HasPrefix(t, "$SYS/") {
		writeError(w, http.StatusNotFound, apiv1.CodeNotFound, "no retained message on this topic")
		return
	}
	writeJSON(w, http.StatusOK, retainedOf(m, 0))
}

func (a *api) deleteRetained(w http.ResponseWriter, r *http.Request) {
	t, ok := retainedTopic(w, r)
	if !ok {
		return
	}
	if strings.HasPrefix(t, "$SYS/") {
		writeError(w, http.StatusNotFound, apiv1.CodeNotFound, "no retained message on this topic")
		return
	}
	had, err := a.srv.DeleteRetained(t)
	switch {
	case err != nil:
		writeError(w, http.StatusServiceUnavailable, apiv1.CodeNoLeader, err.Error())
	case !had:
		writeError(w, http.StatusNotFound, apiv1.CodeNotFound, "no retained message on this topic")
	default:
		a.log.Info("retained message deleted by an administrator", "topic", t)
		w.WriteHeader(http.StatusNoContent)
	}
}

func (a *api) publish(w http.ResponseWriter, r *http.Request) {
	var req apiv1.PublishRequest
	// Room for a payload of the maximum packet size, base64-encoded (4/3), and the rest.
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, int64(a.srv.MaxPayload())*4/3+64<<10)).Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, apiv1.CodeBadRequest, "the body is not a publish request: "+err.Error())
		return
	}
	var payload []byte
	switch req.PayloadEncoding {
	case "", apiv1.EncodingPlain:
		payload = []byte(req.Payload)
	case apiv1.EncodingBase64:
		var err error
		if payload, err = base64.StdEncoding.DecodeString(req.Payload); err != nil {
			writeError(w, http.StatusBadRequest, apiv1.CodeBadRequest, "the payload is not base64: "+err.Error())
			return
		}
	default:
		writeError(w, http.StatusBadRequest, apiv1.CodeBadRequest, fmt.Sprintf("payloadEncoding must be plain or base64, not %q", req.PayloadEncoding))
		return
	}
	n, notRetained, err := a.srv.Publish(&session.Message{Topic: req.Topic, Payload: payload, QoS: req.QoS, Retain: req.Retain})
	switch {
	case errors.Is(err, server.ErrBadPublish):
		writeError(w, http.StatusBadRequest, apiv1.CodeBadRequest, err.Error())
	case err != nil:
		writeError(w, http.StatusServiceUnavailable, apiv1.CodeNoLeader, err.Error())
	default:
		writeJSON(w, http.StatusOK, apiv1.PublishResult{Topic: req.Topic, Sessions: n, NotRetained: notRetained})
	}
}

func (a *api) getStats(w http.ResponseWriter, r *http.Request) {
	nodes, unreachable := gatherOne[apiv1.NodeStats](a, r, qStats)
	var total apiv1.NodeStats
	for _, n := range nodes {
		total.UptimeSeconds = max(total.UptimeSeconds, n.UptimeSeconds)
		total.Connections += n.Connections
		total.Sessions += n.Sessions
		total.Subscriptions += n.Subscriptions
		total.Retained = max(total.Retained, n.Retained) // the same replicated set on every node
		total.MessagesReceived += n.MessagesReceived
		total.MessagesSent += n.MessagesSent
		total.MessagesDropped += n.MessagesDropped
		total.BytesReceived += n.BytesReceived
		total.BytesSent += n.BytesSent
	}
	writeJSON(w, http.StatusOK, apiv1.Stats{Nodes: nodes, Total: total, Unreachable: unreachable})
}

func (a *api) listNodes(w http.ResponseWriter, r *http.Request) {
	nodes, unreachable := gatherOne[apiv1.NodeDetail](a, r, qNode)
	out := apiv1.NodeList{Data: nodes, Unreachable: unreachable}
	if a.node != nil {
		if v, err := a.node.View(); err == nil {
			out.ClusterID, out.Leader = v.ClusterID, v.Leader
		}
	}
	writeJSON(w, http.StatusOK, out)
}

// gatherOne asks every node for one object, sorted by node name.
func gatherOne[T any](a *api, r *http.Request, name string) ([]T, []string) {
	answers, unreachable := a.ask(r.Context(), name, nil)
	slices.SortFunc(answers, func(x, y answer) int { return cmp.Compare(x.node, y.node) })
	out := []T{}
	for _, an := range answers {
		var v T
		if an.err != nil || json.Unmarshal(an.data, &v) != nil {
			unreachable = append(unreachable, an.node)
			continue
		}
		out = append(out, v)
	}
	slices.Sort(unreachable)
	return out, unreachable
}

// openAPIJSON is apiv1.OpenAPI as JSON, converted once.
var openAPIJSON = sync.OnceValues(func() ([]byte, error) {
	var doc any
	if err := yaml.Unmarshal(apiv1.OpenAPI, &doc); err != nil {
		return nil, err
	}
	return json.Marshal(doc)
})

func serveOpenAPI(w http.ResponseWriter, _ *http.Request) {
	b, err := openAPIJSON()
	if err != nil {
		writeError(w, http.StatusInternalServerError, apiv1.CodeInternal, "the OpenAPI document does not parse: "+err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(b)
}
