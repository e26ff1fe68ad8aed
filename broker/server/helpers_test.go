package server_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"testing"
	"time"

	"github.com/mqtt-operator/mqtt-operator/broker/listener"
	"github.com/mqtt-operator/mqtt-operator/broker/server"
)

// broker is a running mqttd engine on random loopback ports.
type broker struct {
	*server.Server
	TCPAddr string // host:port of the MQTT/TCP listener
	WSURL   string // ws://host:port/mqtt
}

// startBroker starts a server with opts (zero values take defaults) listening on TCP
// and WebSocket, and shuts it down when the test ends.
func startBroker(t testing.TB, opts server.Options) *broker {
	t.Helper()
	if opts.Logger == nil {
		w := io.Discard
		if os.Getenv("MQTTD_TEST_LOG") != "" {
			w = os.Stderr
		}
		opts.Logger = slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	srv, err := server.New(opts)
	if err != nil {
		t.Fatalf("server.New: %v", err)
	}
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ws, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan struct{}, 2)
	go func() {
		if err := srv.Serve(tcp); err != nil && !errors.Is(err, server.ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
		served <- struct{}{}
	}()
	go func() {
		if err := listener.ServeWebSocket(ctx, listener.Wrap(ws, listener.Options{Name: listener.Name, Log: opts.Logger}), srv,
			listener.WebSocketOptions{Origins: []string{"*"}, Log: opts.Logger}); err != nil {
			t.Errorf("ServeWebSocket: %v", err)
		}
		served <- struct{}{}
	}()
	t.Cleanup(func() {
		cancel()
		sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer scancel()
		if err := srv.Shutdown(sctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		<-served
		<-served
	})
	return &broker{Server: srv, TCPAddr: tcp.Addr().String(), WSURL: "ws://" + ws.Addr().String() + "/mqtt"}
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond) // polling interval, not a wait for an event
	}
}
