package main

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/eclipse/paho.golang/paho"
	mqtt3 "github.com/eclipse/paho.mqtt.golang"

	"github.com/mqtt-operator/mqtt-operator/broker/packet"
)

// pahoOver connects a paho.golang (MQTT 5) client over conn and returns it with the
// CONNACK.
func pahoOver(t *testing.T, conn net.Conn, c *paho.Connect) (*paho.Client, *paho.Connack, error) {
	t.Helper()
	cl := paho.NewClient(paho.ClientConfig{Conn: conn})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if c.KeepAlive == 0 {
		c.KeepAlive = 30
	}
	c.CleanStart = true
	ack, err := cl.Connect(ctx, c)
	if err == nil {
		t.Cleanup(func() { _ = cl.Disconnect(&paho.Disconnect{}) })
	}
	return cl, ack, err
}

// tlsDial opens TLS to addr with cfg (server name localhost unless set).
func tlsDial(addr string, cfg *tls.Config) (*tls.Conn, error) {
	if cfg.ServerName == "" {
		cfg.ServerName = "localhost"
	}
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second}, Config: cfg}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return c.(*tls.Conn), nil
}

// wssDial opens MQTT over WebSocket over TLS to addr (coder/websocket, subprotocol
// mqtt); header, when set, is written on the TCP connection before TLS (a PROXY
// protocol header).
func wssDial(t *testing.T, addr string, cfg *tls.Config, header []byte) (net.Conn, error) {
	t.Helper()
	if cfg.ServerName == "" {
		cfg.ServerName = "localhost"
	}
	tr := &http.Transport{TLSClientConfig: cfg, DialContext: func(ctx context.Context, network, a string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, a)
		if err == nil && header != nil {
			_, err = c.Write(header)
		}
		return c, err
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws, resp, err := websocket.Dial(ctx, "wss://"+addr+"/mqtt", &websocket.DialOptions{
		HTTPClient: &http.Client{Transport: tr}, Subprotocols: []string{"mqtt"}})
	if resp != nil && resp.Body != nil {
		_ = resp.Body.Close()
	}
	if err != nil {
		return nil, err
	}
	return websocket.NetConn(context.Background(), ws, websocket.MessageBinary), nil
}

// mosquitto runs a Debian mosquitto client (mosquitto_pub or mosquitto_sub) and
// returns its exit code and output.
func mosquitto(ctx context.Context, t *testing.T, bin string, args ...string) (int, string) {
	t.Helper()
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), string(out)
	}
	if err != nil {
		t.Fatalf("%s: %v", bin, err)
	}
	return 0, string(out)
}

// waitMetric polls /metrics until re matches (failures are counted by the server
// after the client already saw its error).
func waitMetric(t *testing.T, apiAddr string, re string) {
	t.Helper()
	rx := regexp.MustCompile(re)
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for ; ; <-tick.C {
		_, body := httpGet(t, apiAddr, "/metrics")
		if rx.MatchString(body) {
			return
		}
		if time.Now().After(deadline) {
			var lines []string
			for _, l := range strings.Split(body, "\n") {
				if strings.Contains(l, "tls_") || strings.Contains(l, "listener_refusals") {
					lines = append(lines, l)
				}
			}
			t.Fatalf("/metrics has no %s within 10 s; it has:\n%s", re, strings.Join(lines, "\n"))
		}
	}
}

// apiClient returns GET /api/v1/clients/id as decoded JSON.
func apiClient(t *testing.T, apiAddr, id string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "http://"+apiAddr+"/api/v1/clients/"+id, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+testToken)
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

const testToken = "0123456789abcdef-test-token"

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestTLSClientCertificates: with client certificates optional and the username taken
// from the CN, real clients over mqtts (mosquitto_pub --cafile --cert --key,
// paho.golang) and wss (paho.mqtt.golang) are who their certificate says, and the ACL
// applies to that name; clients without a certificate log in with a password; every
// certificate that should not pass is refused and counted by reason: a client
// certificate from another CA, an expired one, a reserved name, and on the client's
// side a server certificate from an unknown CA or for another host.
func TestTLSClientCertificates(t *testing.T) {
	ca, other := newTestCA(t), newTestCA(t)
	dir := t.TempDir()
	srvCert, srvKey := ca.issue(t, dir, "server", 10)
	caFile, otherCAFile := ca.pemFile(t, dir, "ca.pem"), other.pemFile(t, dir, "other-ca.pem")
	dev1Cert, dev1Key := ca.issueCert(t, dir, "dev1", certOpts{})
	strangerCert, strangerKey := other.issueCert(t, dir, "stranger", certOpts{})
	expiredCert, expiredKey := ca.issueCert(t, dir, "expired", certOpts{expired: true})
	sysCert, sysKey := ca.issueCert(t, dir, "sys", certOpts{cn: "$SYS"})
	users := filepath.Join(dir, "users")
	if code, out := passwd(t, "alice-pw\n", users, "alice"); code != 0 {
		t.Fatalf("passwd: %d %s", code, out)
	}
	acl := writeFile(t, dir, "acl.yaml", `default: deny
rules:
  - {username: alice, topic: "#", access: all, action: allow}
  - {username: "*", topic: "devices/%u/#", access: all, action: allow}
`)
	token := writeFile(t, dir, "token", testToken)
	mqtts, wss := freePort(t), freePort(t)
	_, w, _, apiAddr := startMqttd(t, "--listeners.mqtts", mqtts, "--listeners.wss", wss,
		"--listeners.mqtts-cert-file", srvCert, "--listeners.mqtts-key-file", srvKey,
		"--listeners.tls-client-certs", "optional", "--listeners.tls-client-ca-file", caFile, "--listeners.tls-username-from", "cn",
		"--auth.allow-anonymous=false", "--auth.users-file", users, "--auth.acl-file", acl, "--api.token-file", token, "--log.level", "debug")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// dev1 subscribes over wss with paho.mqtt.golang and its certificate (no username).
	got := make(chan string, 10)
	opts := mqtt3.NewClientOptions().AddBroker("wss://" + wss + "/mqtt").SetClientID("dev1-sub").SetCleanSession(true).
		SetTLSConfig(&tls.Config{RootCAs: ca.pool, ServerName: "localhost", Certificates: clientCert(t, dev1Cert, dev1Key)}).
		SetAutoReconnect(false).SetConnectRetry(false)
	sub := mqtt3.NewClient(opts)
	if tok := sub.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("paho.mqtt.golang over wss with dev1's certificate: %v", tok.Error())
	}
	defer sub.Disconnect(100)
	if tok := sub.Subscribe("devices/dev1/#", 1, func(_ mqtt3.Client, m mqtt3.Message) { got <- string(m.Payload()) }); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	} else if st := tok.(*mqtt3.SubscribeToken).Result()["devices/dev1/#"]; st != 1 {
		t.Fatalf("subscribe to devices/dev1/# as dev1: granted %d, want QoS 1 (the ACL allows devices/%%u/#)", st)
	}
	if code, info := apiClient(t, apiAddr, "dev1-sub"); code != 200 || info["username"] != "dev1" || info["listener"] != "wss" || info["tlsVersion"] != "1.3" {
		t.Fatalf("API for dev1-sub: %d %v; want username dev1 (from the certificate), listener wss, TLS 1.3", code, info)
	}

	// mosquitto_pub over mqtts with the same certificate, no username: it is dev1.
	if code, out := mosquitto(ctx, t, "mosquitto_pub", "-h", "localhost", "-p", portOf(mqtts), "--cafile", caFile,
		"--cert", dev1Cert, "--key", dev1Key, "-i", "dev1-pub", "-q", "1", "-t", "devices/dev1/temp", "-m", "21.5"); code != 0 {
		t.Fatalf("mosquitto_pub --cert over mqtts: exit %d: %s", code, out)
	}
	select {
	case p := <-got:
		if p != "21.5" {
			t.Fatalf("got %q", p)
		}
	case <-ctx.Done():
		t.Fatal("dev1's message did not arrive over wss")
	}

	// The ACL applies to the certificate's name: dev1 may not publish to dev2's topics.
	conn, err := tlsDial(mqtts, &tls.Config{RootCAs: ca.pool, Certificates: clientCert(t, dev1Cert, dev1Key)})
	if err != nil {
		t.Fatal(err)
	}
	c, ack, err := pahoOver(t, conn, &paho.Connect{ClientID: "dev1-v5", UsernameFlag: true, Username: "alice",
		PasswordFlag: true, Password: []byte("alice-pw")})
	if err != nil || ack.ReasonCode != 0 {
		t.Fatalf("paho.golang with dev1's certificate: %+v %v", ack, err)
	}
	if pr, err := c.Publish(ctx, &paho.Publish{Topic: "devices/dev2/temp", QoS: 1, Payload: []byte("x")}); err == nil || pr == nil || pr.ReasonCode != byte(packet.NotAuthorized) {
		t.Fatalf("dev1 (logging in as alice in CONNECT) publishing to devices/dev2: %+v %v; want PUBACK 0x87 (the certificate's name decides)", pr, err)
	}

	// No certificate: the password decides (client certificates are optional).
	conn, err = tlsDial(mqtts, &tls.Config{RootCAs: ca.pool})
	if err != nil {
		t.Fatal(err)
	}
	if _, ack, err := pahoOver(t, conn, &paho.Connect{ClientID: "alice-1", UsernameFlag: true, Username: "alice", PasswordFlag: true, Password: []byte("alice-pw")}); err != nil || ack.ReasonCode != 0 {
		t.Fatalf("alice with a password and no certificate: %+v %v", ack, err)
	}
	conn, err = tlsDial(mqtts, &tls.Config{RootCAs: ca.pool})
	if err != nil {
		t.Fatal(err)
	}
	if _, ack, _ := pahoOver(t, conn, &paho.Connect{ClientID: "nobody"}); ack == nil || ack.ReasonCode != byte(packet.NotAuthorized) {
		t.Fatalf("no certificate and no username: %+v; want CONNACK 0x87 (anonymous clients are refused)", ack)
	}

	// A certificate whose name is reserved ($...) is refused at CONNECT.
	conn, err = tlsDial(mqtts, &tls.Config{RootCAs: ca.pool, Certificates: clientCert(t, sysCert, sysKey)})
	if err != nil {
		t.Fatal(err)
	}
	if _, ack, _ := pahoOver(t, conn, &paho.Connect{ClientID: "sys"}); ack == nil || ack.ReasonCode != byte(packet.BadUserNameOrPassword) {
		t.Fatalf("a certificate with CN $SYS: %+v; want CONNACK 0x86", ack)
	}

	// Client certificates that do not verify: refused in the handshake, counted.
	for _, tc := range []struct {
		name, cert, key, reason string
	}{
		{"from another CA", strangerCert, strangerKey, "client_certificate_untrusted"},
		{"expired", expiredCert, expiredKey, "client_certificate_expired"},
	} {
		if code, out := mosquitto(ctx, t, "mosquitto_pub", "-h", "localhost", "-p", portOf(mqtts), "--cafile", caFile,
			"--cert", tc.cert, "--key", tc.key, "-i", "bad", "-t", "devices/x", "-m", "x"); code == 0 {
			t.Fatalf("mosquitto_pub with a client certificate %s was accepted: %s", tc.name, out)
		}
		waitMetric(t, apiAddr, fmt.Sprintf(`mqttd_tls_handshake_failures_total\{listener="mqtts",reason="%s"\} 1\b`, tc.reason))
	}
	// Server certificates the client must refuse: another CA (mosquitto_pub), another
	// host name (paho.golang). The client's alert is counted.
	if code, out := mosquitto(ctx, t, "mosquitto_pub", "-h", "localhost", "-p", portOf(mqtts), "--cafile", otherCAFile,
		"-i", "wrong-ca", "-t", "devices/x", "-m", "x"); code == 0 {
		t.Fatalf("mosquitto_pub trusting another CA was accepted: %s", out)
	}
	// OpenSSL refuses in TLS 1.3 with a plaintext alert where the server expects an
	// encrypted record: counted as the client aborting.
	waitMetric(t, apiAddr, `mqttd_tls_handshake_failures_total\{listener="mqtts",reason="client_aborted"\} 1\b`)
	if _, err := tlsDial(mqtts, &tls.Config{RootCAs: ca.pool, ServerName: "broker.example.com"}); err == nil {
		t.Fatal("a client expecting broker.example.com accepted the localhost certificate")
	}
	waitMetric(t, apiAddr, `mqttd_tls_handshake_failures_total\{listener="mqtts",reason="server_certificate_refused"\} 1\b`)
	w.waitFor(t, regexp.MustCompile(`(msg="TLS handshake failed" listener=mqtts remote=127\.0\.0\.1:\d+ reason=client_certificate_untrusted)`))
	waitMetric(t, apiAddr, `mqttd_auth_connects_total\{result="certificate"\} [3-9]\b`)
	waitMetric(t, apiAddr, `mqttd_tls_handshakes_total\{listener="wss",version="1.3"\} [1-9]`)
}

// TestTLSRequiredClientCertificates: with client certificates required (anonymous
// access on, no username taken from them), mosquitto_sub and mosquitto_pub with
// --cert/--key talk over mqtts; a client without a certificate is refused and
// counted; a TLS 1.2 client with a certificate is accepted and counted by version.
func TestTLSRequiredClientCertificates(t *testing.T) {
	ca := newTestCA(t)
	dir := t.TempDir()
	srvCert, srvKey := ca.issue(t, dir, "server", 10)
	caFile := ca.pemFile(t, dir, "ca.pem")
	devCert, devKey := ca.issueCert(t, dir, "dev", certOpts{})
	mqtts := freePort(t)
	_, _, _, apiAddr := startMqttd(t, "--listeners.mqtts", mqtts, "--listeners.mqtts-cert-file", srvCert, "--listeners.mqtts-key-file", srvKey,
		"--listeners.tls-client-certs", "required", "--listeners.tls-client-ca-file", caFile, "--listeners.tls-min-version", "1.2")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	subOut := make(chan string, 1)
	subCtx, subCancel := context.WithTimeout(ctx, 30*time.Second)
	defer subCancel()
	go func() {
		_, out := mosquitto(subCtx, t, "mosquitto_sub", "-h", "localhost", "-p", portOf(mqtts), "--cafile", caFile,
			"--cert", devCert, "--key", devKey, "-i", "m-sub", "-q", "1", "-t", "req/t", "-C", "1", "-W", "25")
		subOut <- out
	}()
	// mosquitto_sub has subscribed once the broker shows its client.
	waitMetric(t, apiAddr, `mqttd_subscriptions [1-9]`)
	if code, out := mosquitto(ctx, t, "mosquitto_pub", "-h", "localhost", "-p", portOf(mqtts), "--cafile", caFile,
		"--cert", devCert, "--key", devKey, "-i", "m-pub", "-q", "1", "-t", "req/t", "-m", "with-cert"); code != 0 {
		t.Fatalf("mosquitto_pub with a certificate: exit %d: %s", code, out)
	}
	if out := <-subOut; strings.TrimSpace(out) != "with-cert" {
		t.Fatalf("mosquitto_sub received %q, want with-cert", out)
	}
	// Without a certificate: refused in the handshake (TLS 1.3 clients learn it on
	// their first read), counted.
	if code, out := mosquitto(ctx, t, "mosquitto_pub", "-h", "localhost", "-p", portOf(mqtts), "--cafile", caFile,
		"-i", "no-cert", "-t", "req/t", "-m", "x"); code == 0 {
		t.Fatalf("mosquitto_pub without a certificate was accepted: %s", out)
	}
	waitMetric(t, apiAddr, `mqttd_tls_handshake_failures_total\{listener="mqtts",reason="client_certificate_missing"\} 1\b`)
	// TLS 1.2 (the minimum here) with a certificate is accepted.
	conn, err := tlsDial(mqtts, &tls.Config{RootCAs: ca.pool, Certificates: clientCert(t, devCert, devKey), MaxVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatalf("TLS 1.2 with a client certificate: %v", err)
	}
	if _, ack, err := pahoOver(t, conn, &paho.Connect{ClientID: "v12"}); err != nil || ack.ReasonCode != 0 {
		t.Fatalf("MQTT over TLS 1.2: %+v %v", ack, err)
	}
	waitMetric(t, apiAddr, `mqttd_tls_handshakes_total\{listener="mqtts",version="1.2"\} 1\b`)
}

// TestTLSServerOnly: server-only TLS on mqtts and wss with a cipher suite list: paho.mqtt.golang over ssl:// and wss://,
// mosquitto_pub/mosquitto_sub with --cafile; a TLS 1.2 client offering only a suite
// outside the list is refused and counted.
func TestTLSServerOnly(t *testing.T) {
	ca := newTestCA(t)
	dir := t.TempDir()
	srvCert, srvKey := ca.issue(t, dir, "server", 10)
	caFile := ca.pemFile(t, dir, "ca.pem")
	mqtts, wss := freePort(t), freePort(t)
	_, _, _, apiAddr := startMqttd(t, "--listeners.mqtts", mqtts, "--listeners.wss", wss, "--listeners.mqtts-cert-file", srvCert,
		"--listeners.mqtts-key-file", srvKey, "--listeners.tls-cipher-suites", "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	got := make(chan string, 10)
	var clients []mqtt3.Client
	for _, url := range []string{"ssl://" + mqtts, "wss://" + wss + "/mqtt"} {
		opts := mqtt3.NewClientOptions().AddBroker(url).SetClientID("p3-" + url[:3]).SetTLSConfig(&tls.Config{RootCAs: ca.pool, ServerName: "localhost"}).
			SetAutoReconnect(false)
		c := mqtt3.NewClient(opts)
		if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("paho.mqtt.golang to %s: %v", url, tok.Error())
		}
		clients = append(clients, c)
	}
	defer func() {
		for _, c := range clients {
			c.Disconnect(100)
		}
	}()
	if tok := clients[1].Subscribe("so/t", 1, func(_ mqtt3.Client, m mqtt3.Message) { got <- string(m.Payload()) }); !tok.WaitTimeout(10 * time.Second) {
		t.Fatal("subscribe over wss timed out")
	}
	if tok := clients[0].Publish("so/t", 1, false, "ssl-to-wss"); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publish over ssl: %v", tok.Error())
	}
	if code, out := mosquitto(ctx, t, "mosquitto_pub", "-h", "localhost", "-p", portOf(mqtts), "--cafile", caFile, "-q", "1", "-t", "so/t", "-m", "mosquitto"); code != 0 {
		t.Fatalf("mosquitto_pub --cafile: exit %d %s", code, out)
	}
	for _, want := range []string{"ssl-to-wss", "mosquitto"} {
		select {
		case p := <-got:
			if p != want {
				t.Fatalf("got %q, want %q", p, want)
			}
		case <-ctx.Done():
			t.Fatalf("%q did not arrive over wss", want)
		}
	}
	conn, err := tlsDial(mqtts, &tls.Config{RootCAs: ca.pool, MaxVersion: tls.VersionTLS12,
		CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384}})
	if err != nil || conn.ConnectionState().CipherSuite != tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 {
		t.Fatalf("a TLS 1.2 client offering the allowed suite: %v; want that suite negotiated", err)
	}
	_ = conn.Close()
	if _, err := tlsDial(mqtts, &tls.Config{RootCAs: ca.pool, MaxVersion: tls.VersionTLS12,
		CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}}); err == nil {
		t.Fatal("a TLS 1.2 client offering only a suite outside tls_cipher_suites was accepted")
	}
	waitMetric(t, apiAddr, `mqttd_tls_handshake_failures_total\{listener="mqtts",reason="no_shared_cipher_suite"\} 1\b`)
}

// TestTLSRotationUnder100Clients: the certificate files are replaced while 100
// paho.mqtt.golang clients are connected over mqtts: none is dropped (each still gets
// a message published after the renewal), and a new connection sees the new serial.
func TestTLSRotationUnder100Clients(t *testing.T) {
	ca := newTestCA(t)
	dir := t.TempDir()
	certFile, keyFile := ca.issue(t, dir, "server", 1000)
	mqtts := freePort(t)
	startMqttd(t, "--listeners.mqtts", mqtts, "--listeners.mqtts-cert-file", certFile, "--listeners.mqtts-key-file", keyFile)
	const n = 100
	var lost atomic.Int32
	var received sync.WaitGroup
	received.Add(n)
	clients := make([]mqtt3.Client, n)
	for i := range clients {
		var once sync.Once
		opts := mqtt3.NewClientOptions().AddBroker("ssl://" + mqtts).SetClientID(fmt.Sprintf("rot-%d", i)).
			SetTLSConfig(&tls.Config{RootCAs: ca.pool, ServerName: "localhost"}).SetAutoReconnect(false).SetKeepAlive(30 * time.Second).
			SetConnectionLostHandler(func(mqtt3.Client, error) { lost.Add(1) })
		c := mqtt3.NewClient(opts)
		if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("client %d: %v", i, tok.Error())
		}
		if tok := c.Subscribe("rot/all", 1, func(mqtt3.Client, mqtt3.Message) { once.Do(received.Done) }); !tok.WaitTimeout(10 * time.Second) {
			t.Fatalf("client %d: subscribe timed out", i)
		}
		clients[i] = c
	}
	defer func() {
		for _, c := range clients {
			c.Disconnect(50)
		}
	}()

	ca.issue(t, dir, "server", 2000)
	deadline := time.Now().Add(10 * time.Second)
	var serial int64
	for serial != 2000 && time.Now().Before(deadline) {
		conn, err := tlsDial(mqtts, &tls.Config{RootCAs: ca.pool})
		if err != nil {
			t.Fatalf("handshake after the renewal: %v", err)
		}
		serial = conn.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
		_ = conn.Close()
	}
	if serial != 2000 {
		t.Fatalf("a new connection still sees serial %d 10 s after the renewal, want 2000", serial)
	}
	if tok := clients[0].Publish("rot/all", 1, false, "after"); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publish after the renewal: %v", tok.Error())
	}
	done := make(chan struct{})
	go func() { received.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("not every client connected before the renewal got the message published after it")
	}
	connected := 0
	for _, c := range clients {
		if c.IsConnectionOpen() {
			connected++
		}
	}
	if lost.Load() != 0 || connected != n {
		t.Fatalf("after the renewal: %d connections lost, %d of %d open", lost.Load(), connected, n)
	}
}

// proxyV1 is a PROXY protocol v1 header from src (ip:port) to dst.
func proxyV1(src, dst string) []byte {
	sh, sp, _ := net.SplitHostPort(src)
	dh, dp, _ := net.SplitHostPort(dst)
	return []byte(fmt.Sprintf("PROXY TCP4 %s %s %s %s\r\n", sh, dh, sp, dp))
}

// proxyV2 is a PROXY protocol v2 header (command PROXY, TCP over IPv4) from src to
// dst, written byte by byte as the specification lays it out.
func proxyV2(src, dst string) []byte {
	sa, _ := net.ResolveTCPAddr("tcp4", src)
	da, _ := net.ResolveTCPAddr("tcp4", dst)
	h := []byte("\r\n\r\n\x00\r\nQUIT\n")
	h = append(h, 0x21, 0x11, 0, 12) // version 2 + PROXY; AF_INET + STREAM; 12 address bytes
	h = append(h, sa.IP.To4()...)
	h = append(h, da.IP.To4()...)
	h = binary.BigEndian.AppendUint16(h, uint16(sa.Port))
	return binary.BigEndian.AppendUint16(h, uint16(da.Port))
}

// TestProxyProtocol: listeners with the PROXY protocol on take the client's address
// from a v1 or v2 header (the API and the logs show it), over plain TCP and under
// TLS + WebSocket (wss); a connection without a header is refused and counted.
func TestProxyProtocol(t *testing.T) {
	ca := newTestCA(t)
	dir := t.TempDir()
	srvCert, srvKey := ca.issue(t, dir, "server", 10)
	token := writeFile(t, dir, "token", testToken)
	wss := freePort(t)
	_, w, addr, apiAddr := startMqttd(t, "--listeners.wss", wss, "--listeners.mqtts-cert-file", srvCert, "--listeners.mqtts-key-file", srvKey,
		"--listeners.proxy-protocol", "tcp,wss", "--api.token-file", token, "--log.level", "debug")

	for _, tc := range []struct {
		id, src string
		header  func(src, dst string) []byte
	}{
		{"via-v1", "203.0.113.7:40001", proxyV1},
		{"via-v2", "198.51.100.9:40002", proxyV2},
	} {
		conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Write(tc.header(tc.src, "192.0.2.1:1883")); err != nil {
			t.Fatal(err)
		}
		if _, ack, err := pahoOver(t, conn, &paho.Connect{ClientID: tc.id}); err != nil || ack.ReasonCode != 0 {
			t.Fatalf("%s: CONNECT after the header: %+v %v", tc.id, ack, err)
		}
		if code, info := apiClient(t, apiAddr, tc.id); code != 200 || info["remote"] != tc.src || info["listener"] != "tcp" {
			t.Fatalf("API for %s: %d %v; want remote %s", tc.id, code, info, tc.src)
		}
		w.waitFor(t, regexp.MustCompile(`(msg="client connected" client=`+tc.id+` remote=`+regexp.QuoteMeta(tc.src)+`)`))
	}

	// wss: the header, then TLS, then the WebSocket upgrade.
	conn, err := wssDial(t, wss, &tls.Config{RootCAs: ca.pool}, proxyV2("192.0.2.77:40003", "192.0.2.1:8084"))
	if err != nil {
		t.Fatalf("wss after a PROXY v2 header: %v", err)
	}
	if _, ack, err := pahoOver(t, conn, &paho.Connect{ClientID: "via-wss"}); err != nil || ack.ReasonCode != 0 {
		t.Fatalf("CONNECT over wss: %+v %v", ack, err)
	}
	if code, info := apiClient(t, apiAddr, "via-wss"); code != 200 || info["remote"] != "192.0.2.77:40003" || info["listener"] != "wss" {
		t.Fatalf("API for via-wss: %d %v; want remote 192.0.2.77:40003 on wss", code, info)
	}

	// No header: refused before MQTT (no CONNACK), counted; the same over wss.
	raw, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = raw.Close() }()
	p := packet.Packet{Type: packet.Connect, Connect: packet.ConnectFields{ProtocolVersion: packet.V5, CleanStart: true, ClientID: "no-header"}}
	if _, err := raw.Write(p.Encode(nil, packet.V5)); err != nil {
		t.Fatal(err)
	}
	_ = raw.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := raw.Read(make([]byte, 16)); n != 0 || (!errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && !isReset(err)) {
		t.Fatalf("a connection without a PROXY header: read %d bytes, %v; want it closed without an answer", n, err)
	}
	waitMetric(t, apiAddr, `mqttd_listener_refusals_total\{listener="tcp",reason="missing",stage="proxy"\} 1\b`)
	if _, err := wssDial(t, wss, &tls.Config{RootCAs: ca.pool}, nil); err == nil {
		t.Fatal("wss without a PROXY header was accepted")
	}
	waitMetric(t, apiAddr, `mqttd_listener_refusals_total\{listener="wss",reason="(missing|invalid)",stage="proxy"\} 1\b`)
	if code, _ := apiClient(t, apiAddr, "no-header"); code != http.StatusNotFound {
		t.Fatalf("API for a client refused before CONNECT: %d, want 404", code)
	}
}

func isReset(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe) && strings.Contains(oe.Err.Error(), "reset")
}

// TestWebSocketOrigins: the WebSocket listener accepts clients without an Origin (not
// browsers), the page's own host and origins on the allow list, and refuses others
// (counted); subprotocol mqttv3.1 is accepted. (The default list: config's
// TestOrigins.)
func TestWebSocketOrigins(t *testing.T) {
	dir := t.TempDir()
	users := filepath.Join(dir, "users")
	if code, out := passwd(t, "pw\n", users, "u"); code != 0 {
		t.Fatalf("passwd: %d %s", code, out)
	}
	ws := freePort(t)
	_, _, _, apiAddr := startMqttd(t, "--auth.allow-anonymous=false", "--auth.users-file", users, "--listeners.websocket-origins", "*.example.com",
		"--listeners.websocket", ws)
	for _, tc := range []struct {
		origin string
		ok     bool
	}{
		{"", true},
		{"https://app.example.com", true},
		{"https://evil.example.org", false},
		{"http://" + ws, true}, // the page's own host
	} {
		h := http.Header{}
		if tc.origin != "" {
			h.Set("Origin", tc.origin)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c, resp, err := websocket.Dial(ctx, "ws://"+ws+"/mqtt", &websocket.DialOptions{HTTPHeader: h, Subprotocols: []string{"mqttv3.1"}})
		cancel()
		if resp != nil && resp.Body != nil {
			_ = resp.Body.Close()
		}
		if tc.ok != (err == nil) {
			t.Fatalf("origin %q: %v, want accepted=%v", tc.origin, err, tc.ok)
		}
		if err == nil {
			if c.Subprotocol() != "mqttv3.1" {
				t.Fatalf("subprotocol %q, want mqttv3.1", c.Subprotocol())
			}
			_ = c.CloseNow()
		} else if resp == nil || resp.StatusCode != http.StatusForbidden {
			t.Fatalf("origin %q refused with %v, want 403", tc.origin, resp)
		}
	}
	waitMetric(t, apiAddr, `mqttd_listener_refusals_total\{listener="websocket",reason="origin_refused",stage="websocket"\} 1\b`)
}

// portOf is the port of host:port.
func portOf(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

// TestAPIOverTLS: with api.tls_cert_file the HTTP API answers only over HTTPS, with
// the configured certificate.
func TestAPIOverTLS(t *testing.T) {
	ca := newTestCA(t)
	dir := t.TempDir()
	cert, key := ca.issue(t, dir, "api", 7)
	token := writeFile(t, dir, "token", testToken)
	_, _, _, apiAddr := startMqttd(t, "--api.tls-cert-file", cert, "--api.tls-key-file", key, "--api.token-file", token)
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.pool, ServerName: "localhost"}}}
	resp, err := c.Get("https://" + apiAddr + "/healthz")
	if err != nil {
		t.Fatalf("HTTPS /healthz: %v", err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.TLS == nil || resp.TLS.PeerCertificates[0].SerialNumber.Int64() != 7 {
		t.Fatalf("HTTPS /healthz: %d, TLS %v", resp.StatusCode, resp.TLS != nil)
	}
	// mqttd ctl as in an operator's pod: https by default, the CA and the name from
	// the pod's environment.
	var stdout, stderr strings.Builder
	env := []string{"MQTTD_API_TLS_CERT_FILE=" + cert, "MQTTD_API=https://" + apiAddr, "MQTTD_CLUSTER_TLS_CA_FILE=" + ca.pemFile(t, dir, "ca.pem"),
		"POD_NAME=localhost", "MQTTD_API_TOKEN_FILE=" + token}
	if code := runCtl([]string{"-o", "json", "node", "status"}, env, &stdout, &stderr); code != exitOK || !strings.Contains(stdout.String(), `"version"`) {
		t.Fatalf("mqttd ctl over HTTPS: exit %d, %s %s", code, stdout.String(), stderr.String())
	}
	stdout.Reset()
	stderr.Reset()
	if code := runCtl([]string{"--server-name", "mq-9", "node", "status"}, env, &stdout, &stderr); code == exitOK ||
		!strings.Contains(stderr.String(), "certificate") {
		t.Fatalf("mqttd ctl with a name the certificate does not carry: exit %d, %s", code, stderr.String())
	}
	plain := &http.Client{Timeout: 5 * time.Second}
	if resp, err := plain.Get("http://" + apiAddr + "/healthz"); err == nil {
		_ = resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Fatal("the API answered plain HTTP with api.tls_cert_file set")
		}
	}
}
