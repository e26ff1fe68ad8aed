package listener

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
)

func TestOriginAllowed(t *testing.T) {
	for _, tc := range []struct {
		origin, host string
		patterns     []string
		want         bool
	}{
		{"", "broker:8083", nil, true}, // not a browser
		{"http://broker:8083", "broker:8083", nil, true},
		{"http://BROKER:8083", "broker:8083", nil, true},
		{"http://evil.example", "broker:8083", nil, false},
		{"https://app.example.com", "broker", []string{"*.example.com"}, true},
		{"https://app.example.com:8443", "broker", []string{"*.example.com"}, true}, // host patterns ignore the port
		{"https://example.com", "broker", []string{"*.example.com"}, false},
		{"https://app.example.com", "broker", []string{"http://*.example.com"}, false}, // a pattern with a scheme needs it
		{"http://app.example.com", "broker", []string{"http://*.example.com"}, true},
		{"https://anything.org", "broker", []string{"*"}, true},
		{"null", "broker", []string{"*.example.com"}, false},
		{"://bad", "broker", []string{"*"}, false},
	} {
		if got := originAllowed(tc.origin, tc.host, tc.patterns); got != tc.want {
			t.Errorf("origin %q, host %q, patterns %q: %v, want %v", tc.origin, tc.host, tc.patterns, got, tc.want)
		}
	}
}

func TestCipherSuites(t *testing.T) {
	if ids, err := CipherSuites("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"); err != nil || len(ids) != 2 {
		t.Fatalf("two TLS 1.2 suites: %v %v", ids, err)
	}
	for _, bad := range []string{"TLS_AES_128_GCM_SHA256", "TLS_RSA_WITH_RC4_128_SHA", "nonsense", " , "} {
		if _, err := CipherSuites(bad); err == nil {
			t.Errorf("CipherSuites(%q) accepted it", bad)
		}
	}
	if _, err := NewTLS(TLSSettings{MinVersion: "1.3", CipherSuites: "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", ClientCerts: ClientCertsNone}); err == nil {
		t.Error("cipher suites with a minimum of TLS 1.3 were accepted (they would do nothing)")
	}
	if _, err := NewTLS(TLSSettings{MinVersion: "1.2", ClientCerts: ClientCertsNone, UsernameFrom: UsernameCN}); err == nil {
		t.Error("a username from certificates that are not asked for was accepted")
	}
	if _, err := NewTLS(TLSSettings{MinVersion: "1.2", ClientCerts: ClientCertsRequired}); err == nil {
		t.Error("required client certificates without a CA bundle were accepted")
	}
}

func TestCertUsername(t *testing.T) {
	u, _ := url.Parse("spiffe://acme/dev/7")
	c := &x509.Certificate{Subject: pkix.Name{CommonName: "dev1", Organization: []string{"acme"}},
		DNSNames: []string{"dev1.acme.example"}, EmailAddresses: []string{"dev1@acme.example"}, URIs: []*url.URL{u}}
	for from, want := range map[string]string{UsernameCN: "dev1", UsernameDN: "CN=dev1,O=acme", UsernameSANDNS: "dev1.acme.example",
		UsernameSANEmail: "dev1@acme.example", UsernameSANURI: "spiffe://acme/dev/7"} {
		if got := certUsername(c, from); got != want {
			t.Errorf("%s: %q, want %q", from, got, want)
		}
	}
	if got := certUsername(&x509.Certificate{}, UsernameSANDNS); got != "" {
		t.Errorf("no DNS name: %q, want empty", got)
	}
}

func TestHandshakeFailureReasons(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{x509.UnknownAuthorityError{}, "client_certificate_untrusted"},
		{fmt.Errorf("tls: failed to verify certificate: %w", x509.CertificateInvalidError{Reason: x509.Expired}), "client_certificate_expired"},
		{&net.OpError{Op: "remote error", Err: errors.New("tls: bad certificate")}, "server_certificate_refused"},
		{&net.OpError{Op: "remote error", Err: errors.New("tls: unknown certificate authority")}, "server_certificate_refused"},
		{&net.OpError{Op: "remote error", Err: errors.New("tls: protocol version not supported")}, "client_alert"},
		{tls.RecordHeaderError{Msg: "first record does not look like a TLS handshake"}, "not_tls"},
		{fmt.Errorf("read: %w", syscall.ECONNRESET), "closed"},
		{net.ErrClosed, "closed"},
		{errors.New("tls: client didn't provide a certificate"), "client_certificate_missing"},
		{errors.New("tls: client offered only unsupported versions: [302 301]"), "protocol_version"},
		{errors.New("tls: no cipher suite supported by both client and server"), "no_shared_cipher_suite"},
		{errors.New("local error: tls: bad record MAC"), "client_aborted"},
		{errors.New("something new"), "other"},
	} {
		if got := handshakeFailure(tc.err); got != tc.want {
			t.Errorf("%v: %q, want %q", tc.err, got, tc.want)
		}
	}
}

// TestRefuseLogsOncePerHostStageReason: the first refusal of a (host, stage, reason) is
// logged at info level, repeats at debug level; another reason or host is new; a
// connection closed before saying anything stays at debug level; all are counted.
func TestRefuseLogsOncePerHostStageReason(t *testing.T) {
	var buf bytes.Buffer
	l := Wrap(nil, Options{Name: "mqtts", Log: slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	e := errors.New("x")
	l.refuse(stageTLS, "client_certificate_expired", "10.0.0.1:1000", e)
	l.refuse(stageTLS, "client_certificate_expired", "10.0.0.1:1001", e)
	l.refuse(stageTLS, "client_certificate_untrusted", "10.0.0.1:1002", e)
	l.refuse(stageTLS, "client_certificate_expired", "10.0.0.2:1000", e)
	l.refuse(stageTLS, "closed", "10.0.0.3:1000", e)
	if n := strings.Count(buf.String(), "level=INFO"); n != 3 {
		t.Fatalf("%d info lines, want 3:\n%s", n, buf.String())
	}
	if n := strings.Count(buf.String(), "level=DEBUG"); n != 2 {
		t.Fatalf("%d debug lines, want 2:\n%s", n, buf.String())
	}
	var total uint64
	for _, f := range l.Failures() {
		total += f.Count
	}
	if total != 5 {
		t.Fatalf("counted %d refusals, want 5: %+v", total, l.Failures())
	}
}

// flakyListener fails its first Accept with EMFILE, as a process out of file
// descriptors does.
type flakyListener struct {
	net.Listener
	failed atomic.Bool
}

func (f *flakyListener) Accept() (net.Conn, error) {
	if !f.failed.Swap(true) {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: syscall.EMFILE}
	}
	return f.Listener.Accept()
}

// echoServer answers each MQTT-over-WebSocket connection by echoing what it reads.
type echoServer struct{}

func (echoServer) ServeConnOn(conn net.Conn, _ string) {
	defer func() { _ = conn.Close() }()
	buf := make([]byte, 64)
	n, err := conn.Read(buf)
	if err == nil {
		_, _ = conn.Write(buf[:n])
	}
}
func (echoServer) ThrottleAccept(l net.Listener, _ string) net.Listener { return l }

// TestWebSocketSurvivesEMFILE: an accept that fails for lack of file descriptors does
// not stop the WebSocket listener.
func TestWebSocketSurvivesEMFILE(t *testing.T) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() {
		served <- ServeWebSocket(ctx, Wrap(&flakyListener{Listener: raw}, Options{Name: Name}), echoServer{}, WebSocketOptions{Origins: []string{"*"}})
	}()
	dctx, dcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer dcancel()
	ws, resp, err := websocket.Dial(dctx, "ws://"+raw.Addr().String()+"/mqtt", &websocket.DialOptions{Subprotocols: []string{"mqtt"}})
	if resp != nil && resp.Body != nil {
		_ = resp.Body.Close()
	}
	if err != nil {
		t.Fatalf("dial after an EMFILE: %v", err)
	}
	if err := ws.Write(dctx, websocket.MessageBinary, []byte("ping")); err != nil {
		t.Fatal(err)
	}
	if _, got, err := ws.Read(dctx); err != nil || string(got) != "ping" {
		t.Fatalf("echo: %q %v", got, err)
	}
	_ = ws.CloseNow()
	cancel()
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("ServeWebSocket: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("ServeWebSocket did not return after its context ended")
	}
}
