// Package listener turns network endpoints into MQTT connections for the server:
// plain TCP is served by server.Serve directly; WebSocket needs the HTTP upgrade here.
package listener

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/coder/websocket"
)

// Name is the WebSocket listener's name: its per-listener limits and logs.
const Name = "websocket"

// ConnServer runs the MQTT protocol on one connection of a named listener and limits
// the rate at which a listener accepts connections (implemented by server.Server).
type ConnServer interface {
	ServeConnOn(conn net.Conn, listener string)
	ThrottleAccept(l net.Listener, listener string) net.Listener
}

// WebSocket returns an HTTP handler that accepts MQTT over WebSocket (binary frames,
// subprotocol "mqtt", MQTT 5.0 section 6) on any path.
func WebSocket(srv ConnServer, log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{
			Subprotocols:       []string{"mqtt", "mqttv3.1"},
			InsecureSkipVerify: true, // MQTT clients are not browsers bound by same-origin; auth is MQTT's
		})
		if err != nil {
			log.Info("websocket upgrade failed", "remote", r.RemoteAddr, "error", err)
			return
		}
		if ws.Subprotocol() == "" {
			_ = ws.Close(websocket.StatusPolicyViolation, "subprotocol mqtt required")
			return
		}
		ws.SetReadLimit(-1) // the MQTT layer enforces the maximum packet size
		conn := websocket.NetConn(context.Background(), ws, websocket.MessageBinary)
		srv.ServeConnOn(&addrConn{Conn: conn, remote: remoteAddr(r.RemoteAddr)}, Name)
	})
}

// ServeWebSocket serves MQTT over WebSocket on l until ctx is done. Connections are
// accepted at the listener's connection rate, before the HTTP upgrade.
func ServeWebSocket(ctx context.Context, l net.Listener, srv ConnServer, log *slog.Logger) error {
	l = srv.ThrottleAccept(l, Name)
	hs := &http.Server{Handler: WebSocket(srv, log), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		_ = hs.Close()
	}()
	err := hs.Serve(l)
	if err == http.ErrServerClosed {
		return nil
	}
	return err
}

// addrConn reports the HTTP client's address instead of the WebSocket wrapper's.
type addrConn struct {
	net.Conn
	remote net.Addr
}

func (c *addrConn) RemoteAddr() net.Addr { return c.remote }

type stringAddr string

func (a stringAddr) Network() string { return "tcp" }
func (a stringAddr) String() string  { return string(a) }

func remoteAddr(s string) net.Addr { return stringAddr(s) }
