package api_test

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/mqtt-operator/mqtt-operator/broker/api"
	"github.com/mqtt-operator/mqtt-operator/broker/packet"
	"github.com/mqtt-operator/mqtt-operator/broker/server"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// TestHealthReadyMetrics checks the API against a real server with a real MQTT
// client: health and readiness while serving, metrics that follow the client, and
// readiness that turns 503 once a graceful shutdown starts.
func TestHealthReadyMetrics(t *testing.T) {
	srv, err := server.New(server.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	h := httptest.NewServer(api.Handler(srv, nil, api.Options{}))
	defer h.Close()

	if code, body := get(t, h.URL+"/healthz"); code != http.StatusOK || body != "ok\n" {
		t.Fatalf("/healthz: %d %q", code, body)
	}
	if code, _ := get(t, h.URL+"/readyz"); code != http.StatusOK {
		t.Fatalf("/readyz while serving: %d", code)
	}

	conn, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	connect := packet.Packet{Type: packet.Connect, Connect: packet.ConnectFields{ProtocolVersion: packet.V311, CleanStart: true, ClientID: "m"}}
	if _, err := conn.Write(connect.Encode(nil, packet.V311)); err != nil {
		t.Fatal(err)
	}
	// The server counts the client before its writer sends CONNACK, so once CONNACK
	// is read the metrics must show it: no polling needed.
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	ack, err := packet.Read(bufio.NewReader(conn), packet.V311, 0)
	if err != nil || ack.Type != packet.Connack || ack.ReasonCode != packet.Success {
		t.Fatalf("CONNACK: %+v %v", ack, err)
	}
	_, body := get(t, h.URL+"/metrics")
	for _, want := range []string{"\nmqttd_clients_connected 1\n", "\nmqttd_connections_total 1\n",
		"# TYPE mqttd_messages_received_total counter", "\nmqttd_clients_parked ", "\ngo_gc_heap_live_bytes ",
		"\nprocess_resident_memory_bytes "} {
		if !strings.Contains(body, want) {
			t.Fatalf("/metrics lacks %q:\n%s", want, body)
		}
	}

	// The profiler is behind the API token: without one configured, off.
	if code, _ := get(t, h.URL+"/debug/pprof/heap"); code != http.StatusForbidden {
		t.Fatalf("/debug/pprof/heap with no API token configured: %d", code)
	}
	withToken := httptest.NewServer(api.Handler(srv, nil, api.Options{Token: "secret-token"}))
	defer withToken.Close()
	if code, _ := get(t, withToken.URL+"/debug/pprof/heap"); code != http.StatusUnauthorized {
		t.Fatalf("/debug/pprof/heap without the token: %d", code)
	}
	req, _ := http.NewRequest(http.MethodGet, withToken.URL+"/debug/pprof/heap?debug=1", nil)
	req.Header.Set("Authorization", "Bearer secret-token")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	prof, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(prof), "heap profile") {
		t.Fatalf("/debug/pprof/heap with the token: %d %.100q", resp.StatusCode, prof)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if code, body := get(t, h.URL+"/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "shutting down") {
		t.Fatalf("/readyz after shutdown: %d %q", code, body)
	}
	if code, _ := get(t, h.URL+"/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz after shutdown: %d", code)
	}
	<-served
}
