package listener

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/pires/go-proxyproto"
)

// Options configures what a listener does on a connection before MQTT starts.
type Options struct {
	// Name is the listener's name in logs and metrics (tcp, mqtts, websocket, wss).
	Name string
	// ProxyProtocol: every connection starts with a PROXY protocol header (v1 or v2,
	// as load balancers send); the client address is the header's. A connection
	// without a valid header is refused.
	ProxyProtocol bool
	// TLS, when set, runs a TLS handshake (after the PROXY header, if any).
	TLS *TLS
	Log *slog.Logger
}

// Listener accepts connections for one named listener. Accept does not block on a
// client: the PROXY header and the TLS handshake run in Conn.Prepare, on the
// connection's own goroutine and under the caller's deadline. Failures are counted
// by reason and logged once per client address.
type Listener struct {
	net.Listener
	opts Options

	mu       sync.Mutex
	failures map[failureKey]uint64
	logged   map[logKey]time.Time // when a (host, stage, reason) was last logged at info level
	accepted atomic.Uint64
	versions [2]atomic.Uint64 // handshakes done with TLS 1.2, 1.3
}

type failureKey struct{ stage, reason string }

// maxLogged bounds the set of (host, stage, reason) logged at info level: past it, the
// set starts over (a scan from many addresses does not grow memory).
const maxLogged = 4096

// Wrap returns l accepting connections that Prepare as o says.
func Wrap(l net.Listener, o Options) *Listener {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	return &Listener{Listener: l, opts: o, failures: map[failureKey]uint64{}, logged: map[logKey]time.Time{}}
}

// Name is the listener's name.
func (l *Listener) Name() string { return l.opts.Name }

// TLSEnabled reports whether the listener runs TLS.
func (l *Listener) TLSEnabled() bool { return l.opts.TLS != nil }

// Accept returns the next connection, not yet prepared.
func (l *Listener) Accept() (net.Conn, error) {
	raw, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.accepted.Add(1)
	c := &Conn{Conn: raw, raw: raw, l: l}
	if l.opts.ProxyProtocol {
		// No timeout of its own: Prepare runs under the caller's deadline.
		c.proxy = proxyproto.NewConn(raw, proxyproto.WithPolicy(proxyproto.REQUIRE), proxyproto.SetReadHeaderTimeout(0))
		c.Conn = c.proxy
	}
	if l.opts.TLS != nil {
		c.tls = tls.Server(c.Conn, l.opts.TLS.config)
		c.Conn = c.tls
	}
	return c, nil
}

// Failure is a count of refused connections of one stage and reason.
type Failure struct {
	Stage  string // "proxy" (the PROXY header), "tls" (the handshake), "certificate" (its name) or "websocket" (the upgrade)
	Reason string
	Count  uint64
}

// Failures returns the refused connections by stage and reason, sorted.
func (l *Listener) Failures() []Failure {
	l.mu.Lock()
	out := make([]Failure, 0, len(l.failures))
	for k, n := range l.failures {
		out = append(out, Failure{Stage: k.stage, Reason: k.reason, Count: n})
	}
	l.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		if out[i].Stage != out[j].Stage {
			return out[i].Stage < out[j].Stage
		}
		return out[i].Reason < out[j].Reason
	})
	return out
}

// Handshakes returns the TLS handshakes completed with TLS 1.2 and with TLS 1.3.
func (l *Listener) Handshakes() (tls12, tls13 uint64) {
	return l.versions[0].Load(), l.versions[1].Load()
}

// Certificate is the listener's certificate reloader (nil without TLS).
func (l *Listener) Certificate() *CertReloader {
	if l.opts.TLS == nil {
		return nil
	}
	return l.opts.TLS.cert
}

// refuse counts a refused connection and logs it: at info level the first time for
// a client host, stage and reason (and again after logAgain), at debug level
// otherwise. A connection closed before saying anything (a balancer's TCP check)
// is logged at debug level only.
func (l *Listener) refuse(stage, reason, remote string, err error) {
	host := remote
	if h, _, e := net.SplitHostPort(remote); e == nil {
		host = h
	}
	key := logKey{host, stage, reason}
	now := time.Now()
	l.mu.Lock()
	l.failures[failureKey{stage, reason}]++
	last, seen := l.logged[key]
	loud := (!seen || now.Sub(last) > logAgain) && reason != "closed"
	if loud {
		if len(l.logged) >= maxLogged {
			clear(l.logged)
		}
		l.logged[key] = now
	}
	l.mu.Unlock()
	level := slog.LevelDebug
	if loud {
		level = slog.LevelInfo
	}
	msg := map[string]string{stageTLS: "TLS handshake failed", stageProxy: "PROXY protocol header refused",
		stageWebSocket: "WebSocket upgrade refused", stageCertificate: "client certificate refused"}[stage]
	l.opts.Log.Log(context.Background(), level, msg, "listener", l.opts.Name, "remote", remote, "reason", reason, "error", err)
}

// logAgain is how long a (host, stage, reason) stays at debug level after it was
// logged at info level.
const logAgain = 10 * time.Minute

type logKey struct{ host, stage, reason string }

const (
	stageProxy       = "proxy"
	stageTLS         = "tls"
	stageWebSocket   = "websocket"
	stageCertificate = "certificate" // a verified certificate without the name to take
)

// Conn is a connection of a Listener: Prepare reads the PROXY header and runs the TLS
// handshake, after which RemoteAddr is the client's address and CertUsername the
// username its certificate carries (when the listener takes one from it).
type Conn struct {
	net.Conn // what MQTT reads and writes: TLS over PROXY over raw, as configured
	raw      net.Conn
	proxy    *proxyproto.Conn
	tls      *tls.Conn
	l        *Listener

	remote   net.Addr
	certUser string
	prepared bool
}

// Prepare reads the PROXY header and runs the TLS handshake, both before deadline
// (which stays set on the connection). A failure is counted and logged; the caller
// closes the connection.
func (c *Conn) Prepare(deadline time.Time) error {
	if c.prepared {
		return nil
	}
	c.prepared = true
	_ = c.raw.SetDeadline(deadline)
	c.remote = c.raw.RemoteAddr()
	if c.proxy != nil {
		h := c.proxy.ProxyHeader()
		if h == nil {
			reason, err := proxyFailure(c.proxy)
			c.l.refuse(stageProxy, reason, c.remote.String(), err)
			return fmt.Errorf("PROXY protocol header: %s: %w", reason, err)
		}
		c.remote = c.proxy.RemoteAddr() // a LOCAL header (a balancer's health check) keeps the socket's
	}
	if c.tls == nil {
		return nil
	}
	if err := c.tls.Handshake(); err != nil {
		reason := handshakeFailure(err)
		c.l.refuse(stageTLS, reason, c.remote.String(), err)
		return fmt.Errorf("TLS handshake: %s: %w", reason, err)
	}
	st := c.tls.ConnectionState()
	if st.Version == tls.VersionTLS13 {
		c.l.versions[1].Add(1)
	} else {
		c.l.versions[0].Add(1)
	}
	if from := c.l.opts.TLS.usernameFrom; from != UsernameNone && len(st.VerifiedChains) > 0 {
		name := certUsername(st.VerifiedChains[0][0], from)
		if name == "" {
			c.l.refuse(stageCertificate, "no_username", c.remote.String(),
				fmt.Errorf("the client certificate has no %s to take the username from", from))
			return fmt.Errorf("the client certificate has no %s", from)
		}
		c.certUser = name
	}
	return nil
}

// proxyFailure classifies why a connection had no usable PROXY header.
func proxyFailure(p *proxyproto.Conn) (string, error) {
	var b [1]byte
	_, err := p.Read(b[:0]) // the header's error, again (the library keeps it)
	switch {
	case err == nil:
		return "missing", errors.New("no header")
	case errors.Is(err, proxyproto.ErrNoProxyProtocol):
		return "missing", err
	case isTimeout(err):
		return "timeout", err
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET), errors.Is(err, net.ErrClosed):
		return "closed", err
	}
	return "invalid", err
}

// RemoteAddr is the client's address: the PROXY header's, once Prepare read it.
func (c *Conn) RemoteAddr() net.Addr {
	if c.remote != nil {
		return c.remote
	}
	return c.raw.RemoteAddr()
}

// Plain returns the socket when MQTT reads it directly (no TLS, no PROXY protocol
// header reader in between), so that the server may watch it itself while the
// connection is idle; nil otherwise.
func (c *Conn) Plain() net.Conn {
	if c.tls != nil || c.proxy != nil {
		return nil
	}
	return c.raw
}

// CertUsername is the username taken from the client's verified certificate ("" when
// there is none or the listener takes none).
func (c *Conn) CertUsername() string { return c.certUser }

// TLSVersion is the negotiated TLS version (0 without TLS or before Prepare).
func (c *Conn) TLSVersion() uint16 {
	if c.tls == nil || !c.prepared {
		return 0
	}
	return c.tls.ConnectionState().Version
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// handshakeFailure names the reason of a failed server handshake, as counted in
// mqttd_tls_handshake_failures_total.
func handshakeFailure(err error) string {
	var (
		unknownCA x509.UnknownAuthorityError
		invalid   x509.CertificateInvalidError
		hostname  x509.HostnameError
		record    tls.RecordHeaderError
		op        *net.OpError
	)
	switch {
	case isTimeout(err):
		return "timeout"
	case errors.As(err, &record):
		return "not_tls"
	case errors.As(err, &unknownCA):
		return "client_certificate_untrusted"
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
		return "client_certificate_expired"
	case errors.As(err, &invalid):
		return "client_certificate_invalid"
	case errors.As(err, &hostname):
		return "client_certificate_invalid"
	case errors.As(err, &op) && op.Op == "remote error":
		// The client refused: usually our certificate (untrusted CA, wrong host name,
		// expired), which it reports with an alert.
		if strings.Contains(op.Err.Error(), "certificate") || strings.Contains(op.Err.Error(), "unknown ca") {
			return "server_certificate_refused"
		}
		return "client_alert"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET), errors.Is(err, net.ErrClosed):
		return "closed" // also our own close (shutdown, a node reset) during the handshake
	}
	msg := err.Error()
	switch {
	case strings.Contains(msg, "didn't provide a certificate"):
		return "client_certificate_missing"
	case strings.Contains(msg, "unsupported versions"), strings.Contains(msg, "protocol version"):
		return "protocol_version"
	case strings.Contains(msg, "no cipher suite"):
		return "no_shared_cipher_suite"
	case strings.Contains(msg, "bad record MAC"):
		// A record we could not decrypt in the handshake: most often a client (OpenSSL)
		// refusing our certificate with a plaintext alert in TLS 1.3.
		return "client_aborted"
	}
	return "other"
}
