package cluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mqtt-operator/mqtt-operator/broker/apiv1"
	"github.com/mqtt-operator/mqtt-operator/broker/internal/lockorder"
)

// transport owns the cluster port: it accepts and dials connections, wraps them in
// TLS, runs the cookie handshake, names or reads the channel, and hands each accepted
// connection to the part that serves its channel. It keeps every open connection so
// that close can end them. It makes no decision about membership: the raft channel's
// handler judges the dialer's cluster ID.
type transport struct {
	tls  *tls.Config
	auth *Authenticator
	log  *slog.Logger
	// clusterID is named on every dialed connection (the raft channel's judge reads it).
	clusterID func() string
	// Handlers of the accepted channels, set once before serve.
	onRaft  func(c net.Conn, peer, theirID string)
	onLink  func(c net.Conn, peer string)
	onQuery func(peer string, req *request) *response

	done <-chan struct{}
	wg   *sync.WaitGroup

	mu     lockorder.Mutex // guards conns and closed; a leaf
	conns  map[net.Conn]struct{}
	closed bool

	tlsFailures atomic.Uint64
	tlsDone     [2]atomic.Uint64 // TLS handshakes completed with TLS 1.2, 1.3
}

func newTransport(cfg Config, done <-chan struct{}, wg *sync.WaitGroup) *transport {
	return &transport{tls: cfg.TLS, auth: cfg.Auth, log: cfg.Logger, done: done, wg: wg, conns: map[net.Conn]struct{}{}}
}

// serve accepts cluster connections on l until the node closes.
func (t *transport) serve(l net.Listener) error {
	if t.tls != nil {
		cfg := t.tls.Clone()
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
		l = tls.NewListener(l, cfg)
	}
	go func() {
		<-t.done
		_ = l.Close()
	}()
	for {
		c, err := l.Accept()
		if err != nil {
			select {
			case <-t.done:
				return nil
			default:
				return err
			}
		}
		if !t.track(c) {
			return nil
		}
		t.wg.Add(1)
		go func() {
			defer t.wg.Done()
			t.accept(c)
		}()
	}
}

// track registers c so close can close it; false when the transport is closed.
func (t *transport) track(c net.Conn) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		_ = c.Close()
		return false
	}
	t.conns[c] = struct{}{}
	return true
}

func (t *transport) untrack(c net.Conn) {
	t.mu.Lock()
	delete(t.conns, c)
	t.mu.Unlock()
	_ = c.Close()
}

// close refuses new connections and closes the open ones.
func (t *transport) close() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closed = true
	for c := range t.conns {
		_ = c.Close()
	}
}

// dialTLS is the dialer's TLS: the peer's chain is verified against the cluster CA
// (RootCAs) but not against the address dialed, which may be an IP or a name the
// certificate does not carry; certNames binds the certificate to the node name the
// peer proves in the cookie handshake instead.
func dialTLS(base *tls.Config) *tls.Config {
	cfg := base.Clone()
	roots := cfg.RootCAs
	cfg.InsecureSkipVerify = true // replaced by VerifyConnection below
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("the peer sent no certificate")
		}
		inter := x509.NewCertPool()
		for _, c := range cs.PeerCertificates[1:] {
			inter.AddCert(c)
		}
		_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
		return err
	}
	return cfg
}

// ErrCertName is the refusal of a peer whose certificate does not name the node it
// proved to be.
var ErrCertName = errors.New("the peer's certificate does not name it")

// certNames checks, on a TLS connection, that the peer's certificate names the node
// peer (its common name or a DNS name): a certificate of the cluster's CA is good only
// for the node it was issued to. A refusal is counted with the TLS failures.
func (t *transport) certNames(c net.Conn, peer string) error {
	tc, ok := c.(*tls.Conn)
	if !ok {
		return nil
	}
	certs := tc.ConnectionState().PeerCertificates
	if len(certs) > 0 && certNamesNode(certs[0], peer) {
		return nil
	}
	t.tlsFailures.Add(1)
	return fmt.Errorf("%w: %q", ErrCertName, peer)
}

// certNamesNode reports whether cert is issued to node: its common name, or one of its
// DNS names, or the first label of one (a pod's DNS name starts with the pod name).
func certNamesNode(cert *x509.Certificate, node string) bool {
	if cert.Subject.CommonName == node {
		return true
	}
	for _, n := range cert.DNSNames {
		if first, _, _ := strings.Cut(n, "."); n == node || first == node {
			return true
		}
	}
	return false
}

// countTLS counts a completed TLS handshake by its version.
func (t *transport) countTLS(tc *tls.Conn) {
	if tc.ConnectionState().Version == tls.VersionTLS13 {
		t.tlsDone[1].Add(1)
	} else {
		t.tlsDone[0].Add(1)
	}
}

// accept authenticates an incoming connection and dispatches it by channel.
func (t *transport) accept(c net.Conn) {
	if tc, ok := c.(*tls.Conn); ok {
		ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
		err := tc.HandshakeContext(ctx)
		cancel()
		if err != nil {
			t.tlsFailures.Add(1)
			t.log.Warn("cluster TLS handshake failed", "remote", c.RemoteAddr().String(), "error", err)
			t.untrack(c)
			return
		}
		t.countTLS(tc)
	}
	peer, err := t.auth.Handshake(c, Listener)
	if err == nil {
		err = t.certNames(c, peer)
	}
	if err != nil {
		t.untrack(c)
		if errors.Is(err, ErrCookieMismatch) {
			t.log.Warn("cluster connection refused: cookie mismatch", "remote", c.RemoteAddr().String(), "peer", peer)
		} else {
			t.log.Warn("cluster connection refused", "remote", c.RemoteAddr().String(), "peer", peer, "error", err)
		}
		return
	}
	_ = c.SetReadDeadline(time.Now().Add(requestTimeout))
	ch, theirID, err := readChannel(c)
	_ = c.SetReadDeadline(time.Time{})
	if err != nil {
		t.untrack(c)
		return
	}
	switch ch {
	case chanRaft:
		t.onRaft(c, peer, theirID)
	case chanLink:
		t.onLink(c, peer)
	case chanQuery:
		t.serveQuery(c, peer)
	default:
		t.log.Warn("cluster connection with an unknown channel", "peer", peer, "channel", ch)
		t.untrack(c)
	}
}

// dial connects and authenticates to a cluster address and names the channel.
func (t *transport) dial(ctx context.Context, addr string, ch byte) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, errorf(apiv1.CodeUnreachable, "%s: %v", addr, err)
	}
	if t.tls != nil {
		tc := tls.Client(c, dialTLS(t.tls))
		if err := tc.HandshakeContext(ctx); err != nil {
			_ = c.Close()
			t.tlsFailures.Add(1)
			t.log.Warn("cluster TLS handshake failed", "remote", addr, "error", err)
			return nil, errorf(apiv1.CodeUnreachable, "%s: TLS: %v", addr, err)
		}
		t.countTLS(tc)
		c = tc
	}
	if !t.track(c) {
		return nil, net.ErrClosed
	}
	peer, err := t.auth.Handshake(c, Dialer)
	if err != nil {
		t.untrack(c)
		if errors.Is(err, ErrCookieMismatch) {
			t.log.Warn("cluster peer refused: cookie mismatch", "remote", addr, "peer", peer)
			return nil, errorf(apiv1.CodeCookieMismatch, "%s does not know this node's cookie", addr)
		}
		return nil, errorf(apiv1.CodeUnreachable, "%s: %v", addr, err)
	}
	if err := t.certNames(c, peer); err != nil {
		t.untrack(c)
		t.log.Warn("cluster peer refused", "remote", addr, "peer", peer, "error", err)
		return nil, errorf(apiv1.CodeUnreachable, "%s: %v", addr, err)
	}
	if err := writeChannel(c, ch, t.clusterID()); err != nil {
		t.untrack(c)
		return nil, errorf(apiv1.CodeUnreachable, "%s: %v", addr, err)
	}
	return c, nil
}

// query sends one request to a node that need not be a member link peer.
func (t *transport) query(ctx context.Context, addr string, req *request) (*response, error) {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout+5*time.Second)
	defer cancel()
	c, err := t.dial(ctx, addr, chanQuery)
	if err != nil {
		return nil, err
	}
	defer t.untrack(c)
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	cd := newCodec(c)
	defer cd.close()
	if err := cd.write(&frame{Kind: fReq, Seq: 1, Req: req}); err != nil {
		return nil, errorf(apiv1.CodeUnreachable, "%s: %v", addr, err)
	}
	var f frame
	if err := cd.read(&f); err != nil || f.Resp == nil {
		return nil, errorf(apiv1.CodeUnreachable, "%s: no answer: %v", addr, err)
	}
	return f.Resp, nil
}

// serveQuery answers one request on a query connection.
func (t *transport) serveQuery(c net.Conn, peer string) {
	defer t.untrack(c)
	_ = c.SetDeadline(time.Now().Add(requestTimeout + 5*time.Second))
	cd := newCodec(c)
	defer cd.close()
	var f frame
	if err := cd.read(&f); err != nil || f.Req == nil {
		return
	}
	resp := t.onQuery(peer, f.Req)
	_ = cd.write(&frame{Kind: fResp, Seq: f.Seq, Resp: resp})
}
