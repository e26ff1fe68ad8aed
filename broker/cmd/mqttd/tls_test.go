package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// testCA signs the mqtts listener's certificates in the tests.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "mqttd test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

// issue writes a certificate for localhost and 127.0.0.1 (server and client use)
// with serial, signed by ca, and its key as PEM files name.pem and name-key.pem in
// dir, each written beside and renamed into place (as a mounted Secret changes), and
// returns their paths.
func (ca *testCA) issue(t *testing.T, dir, name string, serial int64) (certFile, keyFile string) {
	t.Helper()
	return ca.issueCert(t, dir, name, certOpts{serial: serial})
}

// certOpts vary a test certificate: its common name (default: the file name), DNS
// names (default: localhost and 127.0.0.1), validity and serial.
type certOpts struct {
	serial   int64
	cn       string
	dnsNames []string
	expired  bool
}

func (ca *testCA) issueCert(t *testing.T, dir, name string, o certOpts) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if o.cn == "" {
		o.cn = name
	}
	if o.serial == 0 {
		o.serial = time.Now().UnixNano()
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(o.serial), Subject: pkix.Name{CommonName: o.cn},
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	if o.dnsNames != nil {
		tmpl.DNSNames, tmpl.IPAddresses = o.dnsNames, nil
	}
	if o.expired {
		tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-2*time.Hour), time.Now().Add(-time.Hour)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
	replace(t, keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}))
	replace(t, certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	return certFile, keyFile
}

// pemFile writes the CA's certificate to dir/name and returns its path.
func (ca *testCA) pemFile(t *testing.T, dir, name string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	replace(t, path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw}))
	return path
}

// clientCert loads a certificate pair for a TLS client.
func clientCert(t *testing.T, certFile, keyFile string) []tls.Certificate {
	t.Helper()
	c, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	return []tls.Certificate{c}
}

func replace(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path+".new", data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".new", path); err != nil {
		t.Fatal(err)
	}
}

// dialTLS opens a TLS connection to addr trusting ca and returns it with the serial
// of the certificate the server presented.
func dialTLS(addr string, pool *x509.CertPool, maxVersion uint16) (*tls.Conn, int64, error) {
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second},
		Config: &tls.Config{RootCAs: pool, ServerName: "localhost", MaxVersion: maxVersion}}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, 0, err
	}
	tc := c.(*tls.Conn)
	return tc, tc.ConnectionState().PeerCertificates[0].SerialNumber.Int64(), nil
}

// TestMQTTSListener: the mqtts listener speaks MQTT over TLS to a real client (paho)
// that verifies the server's certificate, with per-listener limits of its own; a renewed certificate (the files replaced)
// serves new handshakes within seconds while the connection made before keeps
// working; files that do not load keep the certificate in force (logged); a client
// below tls_min_version is refused; a connection that never finishes its handshake is
// closed after the connect timeout.
func TestMQTTSListener(t *testing.T) {
	ca := newTestCA(t)
	dir := t.TempDir()
	certFile, keyFile := ca.issue(t, dir, "mqtts", 100)
	mqtts := freePort(t)
	_, w, addr, apiAddr := startMqttd(t, "--listeners.mqtts", mqtts, "--listeners.mqtts-cert-file", certFile,
		"--listeners.mqtts-key-file", keyFile, "--listeners.tls-min-version", "1.3", "--limits.connect-timeout", "1s",
		"--limits.max-connections-per-listener", "1")

	conn, serial, err := dialTLS(mqtts, ca.pool, 0)
	if err != nil || serial != 100 {
		t.Fatalf("TLS to the mqtts listener: serial %d, %v", serial, err)
	}
	got := make(chan string, 10)
	c := paho.NewClient(paho.ClientConfig{Conn: conn, OnPublishReceived: []func(paho.PublishReceived) (bool, error){
		func(pr paho.PublishReceived) (bool, error) { got <- string(pr.Packet.Payload); return true, nil }}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if ack, err := c.Connect(ctx, &paho.Connect{ClientID: "tls-client", CleanStart: true, KeepAlive: 30}); err != nil || ack.ReasonCode != 0 {
		t.Fatalf("CONNECT over TLS: %+v %v", ack, err)
	}
	t.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}) })
	if _, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "tls/t", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	roundTrip := func(payload string) {
		t.Helper()
		if _, err := c.Publish(ctx, &paho.Publish{Topic: "tls/t", QoS: 1, Payload: []byte(payload)}); err != nil {
			t.Fatalf("publish over TLS: %v", err)
		}
		select {
		case p := <-got:
			if p != payload {
				t.Fatalf("got %q, want %q", p, payload)
			}
		case <-ctx.Done():
			t.Fatalf("%q did not come back over TLS", payload)
		}
	}
	roundTrip("before")
	// The mqtts listener has its own limits: its one connection leaves the plain TCP
	// listener's one slot free.
	_, _ = connectV5(t, addr, "plain-beside-tls")

	ca.issue(t, dir, "mqtts", 200) // renewed
	deadline := time.Now().Add(10 * time.Second)
	for serial != 200 && time.Now().Before(deadline) {
		var nc *tls.Conn
		if nc, serial, err = dialTLS(mqtts, ca.pool, 0); err != nil {
			t.Fatalf("handshake after the renewal: %v", err)
		}
		_ = nc.Close()
	}
	if serial != 200 {
		t.Fatalf("new handshakes still get serial %d 10 s after the renewal", serial)
	}
	roundTrip("after") // the connection from before the renewal still works
	w.waitFor(t, regexp.MustCompile(`(TLS certificate reloaded)`))

	if err := os.WriteFile(certFile, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	// The files are looked at on handshakes, at most once a second: a few of them
	// over 2 s see the broken pair; each gets the certificate in force.
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); <-tick.C {
		nc, s, err := dialTLS(mqtts, ca.pool, 0)
		if err != nil || s != 200 {
			t.Fatalf("with broken files: serial %d, %v; want the certificate in force (200)", s, err)
		}
		_ = nc.Close()
	}
	w.waitFor(t, regexp.MustCompile(`(do not load; the previous certificate stays in use)`))
	if _, body := httpGet(t, apiAddr, "/metrics"); !regexp.MustCompile(`mqttd_tls_certificate_reloads_total\{listener="mqtts"\} 1\b`).MatchString(body) ||
		!regexp.MustCompile(`mqttd_tls_certificate_load_failures_total\{listener="mqtts"\} 1\b`).MatchString(body) {
		t.Fatalf("/metrics does not count one reload and one failed load of the mqtts certificate")
	}

	if nc, _, err := dialTLS(mqtts, ca.pool, tls.VersionTLS12); err == nil {
		_ = nc.Close()
		t.Fatal("a TLS 1.2 client was accepted with tls_min_version 1.3")
	}

	raw, err := net.DialTimeout("tcp", mqtts, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = raw.Close() }()
	_ = raw.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := raw.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("a connection that never starts its handshake: read %v, want EOF (closed after the 1 s connect timeout)", err)
	}
}
