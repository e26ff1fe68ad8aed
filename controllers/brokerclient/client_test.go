package brokerclient

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
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

// TestPreviousTokens: during a token rotation a node may still run an older token
// (mqttd reads its token file only at start); the client falls back on it and keeps
// it for its later requests, and says so.
func TestPreviousTokens(t *testing.T) {
	for _, tc := range []struct {
		name         string
		nodeRuns     string
		token        string
		previous     []string
		wantErr      bool
		wantPrevious bool
		wantTries    int // requests the first call took
	}{
		{"current token", "new-token-0123456789", "new-token-0123456789", []string{"old-token-0123456789"}, false, false, 1},
		{"previous token", "old-token-0123456789", "new-token-0123456789", []string{"old-token-0123456789"}, false, true, 2},
		{"the older of two previous", "oldest-token-0123456789", "new-token-0123456789", []string{"old-token-0123456789", "oldest-token-0123456789"}, false, true, 3},
		{"no token known", "other-token-0123456789", "new-token-0123456789", []string{"old-token-0123456789"}, true, false, 2},
		{"no previous", "old-token-0123456789", "new-token-0123456789", nil, true, false, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tries := 0
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				tries++
				if r.Header.Get("Authorization") != "Bearer "+tc.nodeRuns {
					w.WriteHeader(http.StatusUnauthorized) // as broker/api answers
					_, _ = w.Write([]byte(`{"code":"unauthorized","message":"a valid bearer token is required"}`))
					return
				}
				_, _ = w.Write([]byte(`{"name":"n-0"}`))
			}))
			defer srv.Close()
			c := &Client{BaseURL: srv.URL, Token: tc.token, Previous: tc.previous}
			_, err := c.Node(context.Background())
			if (err != nil) != tc.wantErr || c.UsesPrevious() != tc.wantPrevious || tries != tc.wantTries {
				t.Fatalf("Node() err %v, UsesPrevious %v, %d requests", err, c.UsesPrevious(), tries)
			}
			tries = 0
			_, err = c.Cluster(context.Background())
			if !tc.wantErr && (err != nil && CodeOf(err) == "unauthorized" || tries != 1) {
				t.Fatalf("a later request: %v after %d requests; the token that worked is kept", err, tries)
			}
		})
	}
}

// TestPreviousTokenNotTakenOnTransportError: a previous token whose request failed
// before any answer (the connection dropped) is not taken for the node's, and no
// further token is sent.
func TestPreviousTokenNotTakenOnTransportError(t *testing.T) {
	// The handler runs on the server's goroutines: its counters are atomics.
	var tries atomic.Int32
	var oldestSent atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") == "Bearer oldest-token-0123456789" {
			oldestSent.Store(true)
		}
		if tries.Add(1) == 1 {
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"code":"unauthorized","message":"a valid bearer token is required"}`))
			return
		}
		hj, ok := w.(http.Hijacker)
		if !ok {
			t.Error("no hijacker")
			return
		}
		conn, _, err := hj.Hijack()
		if err == nil {
			_ = conn.Close() // no answer at all
		}
	}))
	defer srv.Close()
	c := &Client{BaseURL: srv.URL, Token: "new-token-0123456789", Previous: []string{"old-token-0123456789", "oldest-token-0123456789"}}
	_, err := c.Node(context.Background())
	if err == nil || c.UsesPrevious() || c.Token != "new-token-0123456789" || oldestSent.Load() {
		t.Fatalf("err %v usesPrevious %v token %q oldest sent %v: want an error, the current token kept, no further token sent", err, c.UsesPrevious(), c.Token, oldestSent.Load())
	}
}
