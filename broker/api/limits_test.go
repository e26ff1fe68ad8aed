package api_test

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/mqtt-operator/mqtt-operator/broker/api"
	"github.com/mqtt-operator/mqtt-operator/broker/packet"
	"github.com/mqtt-operator/mqtt-operator/broker/server"
)

// TestLimitMetrics checks that /metrics reports every abuse limit, refusals and
// throttle waits apart, and counts a refusal under its limit.
func TestLimitMetrics(t *testing.T) {
	srv, err := server.New(server.Options{MaxSubscriptions: 1, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-served
	}()
	h := httptest.NewServer(api.Handler(srv, nil, api.Options{}))
	defer h.Close()

	conn, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(conn)
	for _, p := range []packet.Packet{
		{Type: packet.Connect, Connect: packet.ConnectFields{ProtocolVersion: packet.V5, CleanStart: true, ClientID: "m"}},
		{Type: packet.Subscribe, PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "a"}, {Filter: "b"}}},
	} {
		if _, err := conn.Write(p.Encode(nil, packet.V5)); err != nil {
			t.Fatal(err)
		}
		if _, err := packet.Read(br, packet.V5, 0); err != nil {
			t.Fatal(err)
		}
	}

	_, body := get(t, h.URL+"/metrics")
	for _, want := range []string{
		`mqttd_limit_refusals_total{limit="subscriptions"} 1`,
		`mqttd_limit_refusals_total{limit="connections"} 0`,
		`mqttd_limit_refusals_total{limit="queued_bytes"} 0`,
		`mqttd_limit_throttles_total{limit="publish_rate"} 0`,
		`mqttd_limit_throttles_total{limit="connection_rate"} 0`,
	} {
		if !strings.Contains(body, want+"\n") {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if strings.Contains(body, `mqttd_limit_refusals_total{limit="publish_rate"}`) {
		t.Error("a throttle is reported as a refusal")
	}
}
