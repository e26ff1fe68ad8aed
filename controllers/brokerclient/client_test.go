package brokerclient

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/mqtt-operator/mqtt-operator/broker/apiv1"
)

// The broker side is the real mqttd in test/lifecycle; here a stand-in HTTP server
// pins down the client's own behavior: the bearer token, the JSON bodies it sends,
// and how error bodies and transport failures become stable codes.
func TestClientRequestsAndErrors(t *testing.T) {
	var gotAuth, gotBody, gotPath string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotAuth, gotPath = r.Header.Get("Authorization"), r.Method+" "+r.URL.Path
		var m map[string]string
		_ = json.NewDecoder(r.Body).Decode(&m)
		gotBody = m["seed"] + m["node"]
		switch r.URL.Path {
		case "/api/v1/node":
			_, _ = w.Write([]byte(`{"name":"n-0","clusterID":"c1","storeState":"member","ready":true,"connections":3}`))
		case "/api/v1/cluster/join":
			w.WriteHeader(http.StatusBadGateway)
			_, _ = w.Write([]byte(`{"code":"cookie_mismatch","message":"their cookies differ"}`))
		case "/api/v1/cluster/force-leave":
			w.WriteHeader(http.StatusInternalServerError)
			_, _ = w.Write([]byte("not json"))
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	c := &Client{BaseURL: srv.URL + "/", Token: "secret-token"}
	ctx := context.Background()

	n, err := c.Node(ctx)
	if err != nil || n.Name != "n-0" || n.StoreState != apiv1.StoreMember || !n.Ready || n.Connections != 3 {
		t.Fatalf("Node() = %+v, %v", n, err)
	}
	if gotAuth != "Bearer secret-token" || gotPath != "GET /api/v1/node" {
		t.Fatalf("request: %q %q", gotAuth, gotPath)
	}
	if _, err := c.Join(ctx, "n-1.svc:4370"); CodeOf(err) != apiv1.CodeCookieMismatch || gotBody != "n-1.svc:4370" {
		t.Fatalf("Join: %v (code %q), body %q", err, CodeOf(err), gotBody)
	}
	if err := c.ForceLeave(ctx, "n-2"); CodeOf(err) != "http_500" || gotBody != "n-2" {
		t.Fatalf("ForceLeave with a non-JSON error: %v", err)
	}
	srv.Close()
	if _, err := c.Node(ctx); CodeOf(err) != apiv1.CodeUnreachable {
		t.Fatalf("Node() on a closed server: %v", err)
	}
	if CodeOf(nil) != "" {
		t.Fatal("CodeOf(nil)")
	}
}
