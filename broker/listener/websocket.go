// Package listener turns network endpoints into MQTT connections for the server: the
// PROXY protocol header and TLS handshake of a connection (Listener, Conn), the
// certificates of TLS listeners (CertReloader), and the HTTP upgrade of WebSocket.
package listener

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"path"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/coder/websocket"
)

// Name is the plain WebSocket listener's name: its per-listener limits and logs.
const Name = "websocket"

// ConnServer runs the MQTT protocol on one connection of a named listener and limits
// the rate at which a listener accepts connections (implemented by server.Server).
type ConnServer interface {
	ServeConnOn(conn net.Conn, listener string)
	ThrottleAccept(l net.Listener, listener string) net.Listener
}

// WebSocketOptions configure a WebSocket listener.
type WebSocketOptions struct {
	// Origins are the browser origins allowed to connect: patterns matched against
	// the Origin header's host (or against the whole origin when a pattern holds
	// "://"), "*" for any. A request without an Origin header (not from a browser)
	// and one from the page's own host are always allowed.
	Origins []string
	// PrepareTimeout bounds the PROXY header and the TLS handshake.
	PrepareTimeout time.Duration
	Log            *slog.Logger
}

type connKey struct{}

// WebSocket returns an HTTP handler that accepts MQTT over WebSocket (binary frames,
// subprotocol "mqtt" or "mqttv3.1", MQTT 5.0 section 6) on any path, for the
// listener l (whose name, counters and client addresses it uses).
func WebSocket(srv ConnServer, l *Listener, o WebSocketOptions) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		lc, _ := r.Context().Value(connKey{}).(*Conn)
		remote := remoteAddr(r.RemoteAddr)
		if lc != nil {
			remote = lc.RemoteAddr()
		}
		if origin := r.Header.Get("Origin"); !originAllowed(origin, r.Host, o.Origins) {
			l.refuse(stageWebSocket, "origin_refused", remote.String(), errors.New("origin "+origin+" is not allowed"))
			w.Header().Set("Connection", "close")
			http.Error(w, "origin not allowed", http.StatusForbidden)
			return
		}
		ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{
			Subprotocols:       []string{"mqtt", "mqttv3.1"},
			InsecureSkipVerify: true, // the origin was checked above
		})
		if err != nil {
			l.refuse(stageWebSocket, "upgrade_failed", remote.String(), err)
			return
		}
		if ws.Subprotocol() == "" {
			l.refuse(stageWebSocket, "subprotocol_missing", remote.String(), errors.New("the client offered neither mqtt nor mqttv3.1"))
			_ = ws.Close(websocket.StatusPolicyViolation, "subprotocol mqtt required")
			return
		}
		ws.SetReadLimit(-1) // the MQTT layer enforces the maximum packet size
		conn := &addrConn{Conn: websocket.NetConn(context.Background(), ws, websocket.MessageBinary), remote: remote}
		if lc != nil {
			conn.certUser, conn.tlsVersion = lc.CertUsername(), lc.TLSVersion()
		}
		srv.ServeConnOn(conn, l.Name())
	})
}

// originAllowed applies the Origin allow list.
func originAllowed(origin, host string, patterns []string) bool {
	if origin == "" {
		return true // not a browser: MQTT's own authentication applies
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return false
	}
	if strings.EqualFold(u.Host, host) {
		return true
	}
	for _, p := range patterns {
		p = strings.ToLower(p)
		target := strings.ToLower(u.Hostname()) // a host pattern ignores the port
		if strings.Contains(p, "://") {
			target = strings.ToLower(u.Scheme + "://" + u.Host)
		}
		if ok, _ := path.Match(p, target); ok || p == "*" { // patterns are checked by config.Validate
			return true
		}
	}
	return false
}

// ServeWebSocket serves MQTT over WebSocket on l until ctx is done. Connections are
// accepted at the listener's connection rate, then prepared (PROXY header, TLS) on
// their own goroutines under o.PrepareTimeout, before the HTTP upgrade.
func ServeWebSocket(ctx context.Context, l *Listener, srv ConnServer, o WebSocketOptions) error {
	if o.PrepareTimeout <= 0 {
		o.PrepareTimeout = 10 * time.Second
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	throttled := srv.ThrottleAccept(l, l.Name())
	ready := &preparedListener{Listener: throttled, conns: make(chan net.Conn), done: make(chan struct{})}
	go ready.run(o.PrepareTimeout)
	hs := &http.Server{
		Handler:           WebSocket(srv, l, o),
		ReadHeaderTimeout: 10 * time.Second,
		// A connection whose upgrade was refused or failed must not idle on: it never
		// reaches MQTT, where the connection caps apply.
		IdleTimeout: 10 * time.Second,
		ErrorLog:    slog.NewLogLogger(o.Log.Handler(), slog.LevelDebug),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, connKey{}, c)
		},
	}
	go func() {
		<-ctx.Done()
		_ = hs.Close()
	}()
	err := hs.Serve(ready)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// preparedListener hands the HTTP server connections whose PROXY header and TLS
// handshake are done (Accept must not wait on one slow client).
type preparedListener struct {
	net.Listener
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
	mu    sync.Mutex
	err   error // the accept loop's error, after which Accept fails
}

func (p *preparedListener) run(timeout time.Duration) {
	var delay time.Duration
	for {
		c, err := p.Listener.Accept()
		if err != nil {
			// Out of file descriptors and the like: wait and accept again, as
			// net/http does (a stopped loop would leave the port bound and dead).
			var ne net.Error
			if !errors.Is(err, net.ErrClosed) && (errors.As(err, &ne) && ne.Timeout() || isTemporary(err)) {
				delay = min(max(delay*2, 5*time.Millisecond), time.Second)
				select {
				case <-time.After(delay):
					continue
				case <-p.done:
					return
				}
			}
			p.mu.Lock()
			p.err = err
			p.mu.Unlock()
			p.close()
			_ = p.Listener.Close()
			return
		}
		delay = 0
		go func() {
			lc, ok := c.(*Conn)
			if ok {
				if err := lc.Prepare(time.Now().Add(timeout)); err != nil {
					_ = c.Close()
					return
				}
				_ = lc.raw.SetDeadline(time.Time{})
			}
			select {
			case p.conns <- c:
			case <-p.done:
				_ = c.Close()
			}
		}()
	}
}

// isTemporary reports accept errors worth waiting out: no file descriptors or
// buffers left, a connection aborted before it was accepted.
func isTemporary(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) || errors.Is(err, syscall.ENOBUFS) ||
		errors.Is(err, syscall.ENOMEM) || errors.Is(err, syscall.ECONNABORTED)
}

func (p *preparedListener) close() { p.once.Do(func() { close(p.done) }) }

// Accept returns the next prepared connection; after Close or a failed accept, the
// error (net.ErrClosed, or the accept error, which is not temporary).
func (p *preparedListener) Accept() (net.Conn, error) {
	select {
	case c := <-p.conns:
		return c, nil
	case <-p.done:
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.err != nil {
			// Not wrapped: net/http would retry a temporary error forever.
			return nil, errors.New("accepting websocket connections: " + p.err.Error())
		}
		return nil, net.ErrClosed
	}
}

// Close stops accepting.
func (p *preparedListener) Close() error {
	p.close()
	return p.Listener.Close()
}

// addrConn reports the client's address (the PROXY header's, or the HTTP peer's)
// instead of the WebSocket wrapper's, and the username from its TLS certificate.
type addrConn struct {
	net.Conn
	remote     net.Addr
	certUser   string
	tlsVersion uint16
}

func (c *addrConn) RemoteAddr() net.Addr { return c.remote }

// TLSVersion is the negotiated TLS version of a wss connection (0 on plain ws).
func (c *addrConn) TLSVersion() uint16 { return c.tlsVersion }

// CertUsername is the username from the client's TLS certificate, if taken.
func (c *addrConn) CertUsername() string { return c.certUser }

type stringAddr string

func (a stringAddr) Network() string { return "tcp" }
func (a stringAddr) String() string  { return string(a) }

func remoteAddr(s string) net.Addr { return stringAddr(s) }
