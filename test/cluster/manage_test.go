package cluster

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/mqtt-operator/mqtt-operator/broker/apiv1"
)

// TestManagementAPI checks every management endpoint against three real mqttd
// processes with real MQTT clients: each answers the same from every node (the asking
// node collects the others' parts over the cluster links), paging and filters, the
// kick of a client connected to another node (it gets DISCONNECT 0x98), a client's
// session and subscriptions, retained messages (list, get, delete on every node),
// publish (received by a real subscriber on another node), stats summed over the
// nodes, and the token required.
func TestManagementAPI(t *testing.T) {
	nodes := formCluster(t, 3)

	// Five connected clients spread over the nodes, two subscriptions each; one
	// persistent session whose client went away.
	var clients []*v5Client
	for i := range 5 {
		c := connectV5(t, nodes[i%3], fmt.Sprintf("dev-%d", i), v5Options{cleanStart: true})
		c.subscribe(t, 1, fmt.Sprintf("dev/%d/cmd", i), "fleet/#")
		clients = append(clients, c)
	}
	away := connectV5(t, nodes[1], "away-1", v5Options{cleanStart: true, expiry: 3600})
	away.subscribe(t, 1, "away/cmd")
	away.close()

	// Every node lists all six sessions, in the same order, with the same content.
	var want apiv1.ClientList
	eventually(t, clusterTimeout, "six clients listed by node-0", func() error {
		if err := nodes[0].getJSON("/api/v1/clients", &want); err != nil {
			return err
		}
		if want.Meta.Count != 6 || len(want.Data) != 6 {
			return fmt.Errorf("%d clients (%d listed): %+v", want.Meta.Count, len(want.Data), want.Data)
		}
		for _, c := range want.Data {
			if c.ClientID == "away-1" && c.Connected {
				return fmt.Errorf("away-1 is still connected")
			}
		}
		return nil
	})
	for _, n := range nodes[1:] {
		var got apiv1.ClientList
		if err := n.getJSON("/api/v1/clients", &got); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("GET /api/v1/clients differs on %s:\n%+v\nnode-0:\n%+v", n.name(), got, want)
		}
	}
	for j, c := range want.Data {
		if i := j - 1; j > 0 { // away-1 sorts first
			wantNode := nodeName(i % 3)
			if c.ClientID != fmt.Sprintf("dev-%d", i) || c.Node != wantNode || !c.Connected || c.Subscriptions != 2 ||
				c.ProtocolVersion != 5 || c.Listener == "" || c.Remote == "" || c.ConnectedAt == "" {
				t.Errorf("client %d: %+v, want dev-%d on %s, connected, 2 subscriptions", i, c, i, wantNode)
			}
			continue
		}
		if c.ClientID != "away-1" || c.Node != "node-1" || c.Connected || c.ExpiryInterval != 3600 || c.DisconnectedAt == "" || c.Subscriptions != 1 {
			t.Errorf("the absent persistent session: %+v", c)
		}
	}

	// Paging: pages of two, in order, the count on every page.
	var paged []string
	for page := 1; page <= 4; page++ {
		var got apiv1.ClientList
		if err := nodes[2].getJSON(fmt.Sprintf("/api/v1/clients?limit=2&page=%d", page), &got); err != nil {
			t.Fatal(err)
		}
		if got.Meta.Count != 6 || got.Meta.Page != page || got.Meta.Limit != 2 {
			t.Fatalf("page %d: meta %+v", page, got.Meta)
		}
		for _, c := range got.Data {
			paged = append(paged, c.ClientID)
		}
		if page == 4 && len(got.Data) != 0 {
			t.Fatalf("page 4 of 3: %+v", got.Data)
		}
	}
	if want := []string{"away-1", "dev-0", "dev-1", "dev-2", "dev-3", "dev-4"}; !slices.Equal(paged, want) {
		t.Fatalf("pages: %v, want %v", paged, want)
	}

	// Filters.
	for _, tc := range []struct {
		query string
		want  []string
	}{
		{"node=node-1", []string{"away-1", "dev-1", "dev-4"}},
		{"clientid_prefix=dev-", []string{"dev-0", "dev-1", "dev-2", "dev-3", "dev-4"}},
		{"connected=false", []string{"away-1"}},
		{"connected=true&node=node-0", []string{"dev-0", "dev-3"}},
		{"username=nobody", nil},
	} {
		var got apiv1.ClientList
		if err := nodes[1].getJSON("/api/v1/clients?"+tc.query, &got); err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, c := range got.Data {
			ids = append(ids, c.ClientID)
		}
		if !slices.Equal(ids, tc.want) || got.Meta.Count != len(tc.want) {
			t.Errorf("clients?%s: %v (count %d), want %v", tc.query, ids, got.Meta.Count, tc.want)
		}
	}
	for _, bad := range []string{"page=0", "limit=1001", "limit=x", "connected=maybe"} {
		nodes[0].expectAPIError(http.MethodGet, "/api/v1/clients?"+bad, nil, http.StatusBadRequest, apiv1.CodeBadRequest)
	}

	// One client, asked of a node it is not connected to: its session and subscriptions.
	var d apiv1.ClientDetail
	if err := nodes[0].getJSON("/api/v1/clients/dev-2", &d); err != nil {
		t.Fatal(err)
	}
	var topics []string
	for _, s := range d.SubscriptionList {
		topics = append(topics, s.Topic)
		if s.Node != "node-2" || s.QoS != 1 || s.ClientID != "dev-2" {
			t.Errorf("dev-2's subscription: %+v", s)
		}
	}
	if d.Node != "node-2" || !d.Connected || !slices.Equal(topics, []string{"dev/2/cmd", "fleet/#"}) {
		t.Fatalf("dev-2 from node-0: %+v", d)
	}
	nodes[0].expectAPIError(http.MethodGet, "/api/v1/clients/nobody", nil, http.StatusNotFound, apiv1.CodeNotFound)

	// Subscriptions: the same on every node, filtered by topic and by client.
	var subs apiv1.SubscriptionList
	if err := nodes[0].getJSON("/api/v1/subscriptions", &subs); err != nil {
		t.Fatal(err)
	}
	if subs.Meta.Count != 11 {
		t.Fatalf("%d subscriptions, want 11: %+v", subs.Meta.Count, subs.Data)
	}
	for _, n := range nodes[1:] {
		var got apiv1.SubscriptionList
		if err := n.getJSON("/api/v1/subscriptions", &got); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, subs) {
			t.Fatalf("subscriptions differ on %s", n.name())
		}
	}
	var fleet apiv1.SubscriptionList
	if err := nodes[2].getJSON("/api/v1/subscriptions?topic="+url.QueryEscape("fleet/#"), &fleet); err != nil {
		t.Fatal(err)
	}
	if fleet.Meta.Count != 5 {
		t.Fatalf("fleet/# subscribers: %+v", fleet)
	}
	var mine apiv1.SubscriptionList
	if err := nodes[2].getJSON("/api/v1/subscriptions?clientid=dev-0", &mine); err != nil {
		t.Fatal(err)
	}
	if mine.Meta.Count != 2 || mine.Data[0].Node != "node-0" {
		t.Fatalf("dev-0's subscriptions: %+v", mine)
	}

	// Routes: fleet/# is routed to all three nodes; the same on every node.
	eventually(t, clusterTimeout, "routes seen alike by every node", func() error {
		var first apiv1.RouteList
		for i, n := range nodes {
			var got apiv1.RouteList
			if err := n.getJSON("/api/v1/routes?topic="+url.QueryEscape("fleet/#"), &got); err != nil {
				return err
			}
			if len(got.Data) != 1 || !slices.Equal(got.Data[0].Nodes, []string{"node-0", "node-1", "node-2"}) {
				return fmt.Errorf("%s: fleet/# routes %+v", n.name(), got.Data)
			}
			if i == 0 {
				first = got
			} else if !reflect.DeepEqual(got, first) {
				return fmt.Errorf("%s: %+v, node-0: %+v", n.name(), got, first)
			}
		}
		return nil
	})

	// Publish through node-0's API: a real subscriber on node-1 gets it.
	var pr apiv1.PublishResult
	status, b, err := nodes[0].call(http.MethodPost, "/api/v1/publish", apiv1.PublishRequest{Topic: "dev/1/cmd", Payload: "reboot", QoS: 1}, true)
	if err != nil || status != http.StatusOK || json.Unmarshal(b, &pr) != nil {
		t.Fatalf("publish: %d %s %v", status, b, err)
	}
	if pr.Sessions != 1 {
		t.Fatalf("publish reached %d sessions, want 1", pr.Sessions)
	}
	eventually(t, clusterTimeout, "dev-1 receives the API's message", func() error {
		if !clients[1].rec.hasPayload("reboot") {
			return fmt.Errorf("not yet: %v", clients[1].rec.all())
		}
		return nil
	})
	nodes[0].expectAPIError(http.MethodPost, "/api/v1/publish", apiv1.PublishRequest{Topic: "fleet/+", Payload: "x"}, http.StatusBadRequest, apiv1.CodeBadRequest)
	nodes[0].expectAPIError(http.MethodPost, "/api/v1/publish", apiv1.PublishRequest{Topic: "$SYS/x", Payload: "x"}, http.StatusBadRequest, apiv1.CodeBadRequest)
	nodes[0].expectAPIError(http.MethodPost, "/api/v1/publish", apiv1.PublishRequest{Topic: "a", Payload: "!", PayloadEncoding: "base64"}, http.StatusBadRequest, apiv1.CodeBadRequest)

	// Retained: three published through the API (one binary), listed alike on every
	// node with paging; get; delete through node-2 removes it everywhere.
	for _, p := range []apiv1.PublishRequest{
		{Topic: "site/a/temp", Payload: "21.5", Retain: true, QoS: 1},
		{Topic: "site/b/temp", Payload: "AP8=", PayloadEncoding: apiv1.EncodingBase64, Retain: true},
		{Topic: "site/c/temp", Payload: "19", Retain: true},
	} {
		nodes[1].mustPost("/api/v1/publish", p, http.StatusOK)
	}
	eventually(t, clusterTimeout, "three retained messages on every node", func() error {
		for _, n := range nodes {
			var got apiv1.RetainedList
			if err := n.getJSON("/api/v1/retained?topic_prefix=site/&limit=2&page=2", &got); err != nil {
				return err
			}
			if got.Meta.Count != 3 || len(got.Data) != 1 || got.Data[0].Topic != "site/c/temp" {
				return fmt.Errorf("%s: %+v", n.name(), got)
			}
		}
		return nil
	})
	var rm apiv1.RetainedMessage
	if err := nodes[2].getJSON("/api/v1/retained/message?topic=site/b/temp", &rm); err != nil {
		t.Fatal(err)
	}
	if rm.PayloadEncoding != apiv1.EncodingBase64 || rm.Payload != "AP8=" || rm.PayloadSize != 2 {
		t.Fatalf("binary retained message: %+v", rm)
	}
	if status, _, err := nodes[2].call(http.MethodDelete, "/api/v1/retained/message?topic=site/a/temp", nil, true); err != nil || status != http.StatusNoContent {
		t.Fatalf("delete retained: %d %v", status, err)
	}
	eventually(t, clusterTimeout, "the deleted retained message gone from every node", func() error {
		for _, n := range nodes {
			status, _, err := n.call(http.MethodGet, "/api/v1/retained/message?topic=site/a/temp", nil, true)
			if err != nil || status != http.StatusNotFound {
				return fmt.Errorf("%s: %d %w", n.name(), status, err)
			}
		}
		return nil
	})
	nodes[0].expectAPIError(http.MethodDelete, "/api/v1/retained/message?topic=site/a/temp", nil, http.StatusNotFound, apiv1.CodeNotFound)

	// Topics a path would be cleaned into others: each is its own message, and a
	// delete takes only the one named.
	odd := []string{"/lead", "a//b", "x/../site/c/temp"}
	for _, tp := range odd {
		nodes[0].mustPost("/api/v1/publish", apiv1.PublishRequest{Topic: tp, Payload: "odd " + tp, Retain: true}, http.StatusOK)
	}
	eventually(t, clusterTimeout, "the odd topics retained", func() error {
		for _, tp := range odd {
			var m apiv1.RetainedMessage
			if err := nodes[1].getJSON("/api/v1/retained/message?topic="+url.QueryEscape(tp), &m); err != nil {
				return err
			}
			if m.Topic != tp || m.Payload != "odd "+tp {
				return fmt.Errorf("%q: %+v", tp, m)
			}
		}
		return nil
	})
	if status, b, err := nodes[1].call(http.MethodDelete, "/api/v1/retained/message?topic="+url.QueryEscape("x/../site/c/temp"), nil, true); err != nil || status != http.StatusNoContent {
		t.Fatalf("delete x/../site/c/temp: %d %s %v", status, b, err)
	}
	eventually(t, clusterTimeout, "x/../site/c/temp deleted, site/c/temp kept", func() error {
		for _, n := range nodes {
			if status, _, err := n.call(http.MethodGet, "/api/v1/retained/message?topic="+url.QueryEscape("x/../site/c/temp"), nil, true); err != nil || status != http.StatusNotFound {
				return fmt.Errorf("%s: x/../site/c/temp: %d %w", n.name(), status, err)
			}
			var m apiv1.RetainedMessage
			if err := n.getJSON("/api/v1/retained/message?topic=site/c/temp", &m); err != nil || m.Payload != "19" {
				return fmt.Errorf("%s: site/c/temp: %+v %w", n.name(), m, err)
			}
		}
		return nil
	})
	nodes[0].expectAPIError(http.MethodGet, "/api/v1/retained/message", nil, http.StatusBadRequest, apiv1.CodeBadRequest)

	// A page far beyond the end (where page*limit overflows) is empty, not an error.
	var far apiv1.ClientList
	if err := nodes[0].getJSON("/api/v1/clients?page=9223372036854775807&limit=2", &far); err != nil || len(far.Data) != 0 || far.Meta.Count != 6 {
		t.Fatalf("a page beyond the end: %+v %v", far, err)
	}

	// Stats: per node and summed.
	var st apiv1.Stats
	if err := nodes[1].getJSON("/api/v1/stats", &st); err != nil {
		t.Fatal(err)
	}
	var names []string
	var conns int64
	for _, ns := range st.Nodes {
		names = append(names, ns.Name)
		conns += ns.Connections
	}
	if !slices.Equal(names, []string{"node-0", "node-1", "node-2"}) || st.Total.Connections != 5 || conns != 5 || st.Total.MessagesReceived == 0 {
		t.Fatalf("stats: %+v", st)
	}

	// Nodes: the three members, the same cluster ID.
	var nl apiv1.NodeList
	if err := nodes[2].getJSON("/api/v1/nodes", &nl); err != nil {
		t.Fatal(err)
	}
	if len(nl.Data) != 3 || nl.ClusterID == "" || nl.Leader == "" || len(nl.Unreachable) != 0 {
		t.Fatalf("nodes: %+v", nl)
	}
	for i, nd := range nl.Data {
		if nd.Name != nodeName(i) || nd.ClusterID != nl.ClusterID || nd.Version == "" {
			t.Errorf("node %d: %+v", i, nd)
		}
	}

	// Kick dev-2 (on node-2) through node-0: DISCONNECT 0x98 reaches the client.
	var kr apiv1.KickResult
	status, b, err = nodes[0].call(http.MethodDelete, "/api/v1/clients/dev-2", nil, true)
	if err != nil || status != http.StatusOK || json.Unmarshal(b, &kr) != nil || kr.Node != "node-2" {
		t.Fatalf("kick: %d %s %v", status, b, err)
	}
	select {
	case d := <-clients[2].serverDisconnect:
		if d.ReasonCode != 0x98 {
			t.Fatalf("dev-2 disconnected with 0x%02x, want 0x98", d.ReasonCode)
		}
	case <-time.After(clusterTimeout):
		t.Fatal("dev-2 got no DISCONNECT")
	}
	eventually(t, clusterTimeout, "dev-2 gone from the list", func() error {
		var got apiv1.ClientList
		if err := nodes[1].getJSON("/api/v1/clients?clientid_prefix=dev-2", &got); err != nil {
			return err
		}
		if got.Meta.Count != 0 {
			return fmt.Errorf("still listed: %+v", got.Data)
		}
		return nil
	})
	nodes[1].expectAPIError(http.MethodDelete, "/api/v1/clients/dev-2", nil, http.StatusNotFound, apiv1.CodeNotFound)

	// The contract, served.
	var doc struct {
		OpenAPI string         `json:"openapi"`
		Paths   map[string]any `json:"paths"`
	}
	if err := nodes[1].getJSON("/api/v1/openapi.json", &doc); err != nil || doc.OpenAPI == "" || doc.Paths["/api/v1/clients"] == nil {
		t.Fatalf("openapi.json: %+v %v", doc.OpenAPI, err)
	}

	// Auth: no token, a wrong token.
	for _, path := range []string{"/api/v1/clients", "/api/v1/retained", "/api/v1/stats"} {
		status, _, err := nodes[0].call(http.MethodGet, path, nil, false)
		if err != nil || status != http.StatusUnauthorized {
			t.Errorf("GET %s without the token: %d %v", path, status, err)
		}
		req, _ := http.NewRequest(http.MethodGet, "http://"+nodes[0].apiAddress()+path, nil)
		req.Header.Set("Authorization", "Bearer wrong-token-wrong-token")
		resp, err := httpClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("GET %s with a wrong token: %d", path, resp.StatusCode)
		}
	}

	// A node down: lists say whose part is missing instead of silently shrinking.
	nodes[2].stop()
	eventually(t, clusterTimeout, "node-2 named unreachable", func() error {
		var got apiv1.ClientList
		if err := nodes[0].getJSON("/api/v1/clients", &got); err != nil {
			return err
		}
		if !slices.Equal(got.Meta.Unreachable, []string{"node-2"}) {
			return fmt.Errorf("meta %+v", got.Meta)
		}
		return nil
	})
	// A client that is nowhere reachable may be on the node that is down: not 404.
	nodes[0].expectAPIError(http.MethodGet, "/api/v1/clients/nobody", nil, http.StatusBadGateway, apiv1.CodeUnreachable)
	nodes[0].expectAPIError(http.MethodDelete, "/api/v1/clients/nobody", nil, http.StatusBadGateway, apiv1.CodeUnreachable)
}
