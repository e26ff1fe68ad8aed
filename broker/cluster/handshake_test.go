package cluster

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

type result struct {
	peer string
	err  error
}

// pair runs a handshake between a dialer and a listener over real loopback TCP and
// returns both results.
func pair(t *testing.T, dialer, listener *Authenticator) (d, l result) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	done := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- result{err: err}
			return
		}
		defer func() { _ = c.Close() }()
		peer, err := listener.Handshake(c, Listener)
		done <- result{peer, err}
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	peer, err := dialer.Handshake(c, Dialer)
	_ = c.Close()
	return result{peer, err}, <-done
}

func auth(t *testing.T, name, cookie string) *Authenticator {
	t.Helper()
	a, err := NewAuthenticator(name, []byte(cookie), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestHandshakeSameCookie(t *testing.T) {
	a, b := auth(t, "node-0", "the-shared-cookie-123"), auth(t, "node-1", "the-shared-cookie-123")
	d, l := pair(t, a, b)
	if d.err != nil || l.err != nil {
		t.Fatalf("dialer %v, listener %v", d.err, l.err)
	}
	if d.peer != "node-1" || l.peer != "node-0" {
		t.Fatalf("peers %q %q", d.peer, l.peer)
	}
	if a.Stats().OK != 1 || b.Stats().OK != 1 {
		t.Fatalf("stats %+v %+v", a.Stats(), b.Stats())
	}
}

// TestHandshakeWrongCookie: both ends refuse, say why, and count it.
func TestHandshakeWrongCookie(t *testing.T) {
	a, b := auth(t, "node-0", "the-shared-cookie-123"), auth(t, "intruder", "another-cookie-456789")
	d, l := pair(t, a, b)
	for name, r := range map[string]result{"dialer": d, "listener": l} {
		if !errors.Is(r.err, ErrCookieMismatch) {
			t.Fatalf("%s: %v, want cookie mismatch", name, r.err)
		}
	}
	if !strings.Contains(d.err.Error(), "intruder") || !strings.Contains(l.err.Error(), "node-0") {
		t.Fatalf("errors do not name the peer: %v / %v", d.err, l.err)
	}
	if a.Stats().CookieMismatch != 1 || b.Stats().CookieMismatch != 1 || a.Stats().OK != 0 {
		t.Fatalf("stats %+v %+v", a.Stats(), b.Stats())
	}
}

// TestHandshakeReflection: a proof sent back to its sender (as a relay that knows no
// cookie would do) is refused, because it carries the other role.
func TestHandshakeReflection(t *testing.T) {
	a := auth(t, "node-0", "the-shared-cookie-123")
	n1, n2 := []byte(strings.Repeat("a", nonceSize)), []byte(strings.Repeat("b", nonceSize))
	dialerProof := a.proof(Dialer, n1, n2, "x", "x")
	if string(dialerProof) == string(a.proof(Listener, n1, n2, "x", "x")) {
		t.Fatal("the role is not part of the proof")
	}
	if string(dialerProof) == string(a.proof(Dialer, n2, n1, "x", "x")) {
		t.Fatal("swapping the nonces gives the same proof")
	}
}

// TestHandshakeNotAPeer: something that is not an mqttd node (an HTTP client, a
// silent socket) is refused with a protocol error or a timeout, never accepted.
func TestHandshakeNotAPeer(t *testing.T) {
	a, err := NewAuthenticator("node-0", []byte("the-shared-cookie-123"), 300*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		send  string
		check func(error) bool
	}{
		{"http", "GET / HTTP/1.1\r\nHost: x\r\n\r\n" + strings.Repeat("x", 64), func(err error) bool { return errors.Is(err, ErrProtocol) }},
		// Closed before or after this side wrote its hello: a protocol error (EOF
		// read), or the write to a closed pipe; either way refused.
		{"closes at once", "", func(err error) bool { return errors.Is(err, ErrProtocol) || errors.Is(err, io.ErrClosedPipe) }},
		{"silent", "-", func(err error) bool {
			var ne net.Error
			return errors.As(err, &ne) && ne.Timeout()
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client, server := net.Pipe()
			defer func() { _ = server.Close() }()
			go func() {
				buf := make([]byte, 1024)
				switch tc.send {
				case "":
					_ = client.Close()
				case "-":
					for { // read everything, say nothing
						if _, err := client.Read(buf); err != nil {
							return
						}
					}
				default:
					go func() {
						for {
							if _, err := client.Read(buf); err != nil {
								return
							}
						}
					}()
					_, _ = client.Write([]byte(tc.send))
				}
			}()
			_, err := a.Handshake(server, Listener)
			_ = client.Close()
			if err == nil || !tc.check(err) {
				t.Fatalf("handshake with %s: %v", tc.name, err)
			}
		})
	}
	if s := a.Stats(); s.OK != 0 || s.Failed != 3 {
		t.Fatalf("stats %+v", s)
	}
}

func TestNewAuthenticatorChecks(t *testing.T) {
	if _, err := NewAuthenticator("n", []byte("short"), time.Second); err == nil {
		t.Fatal("accepted a short cookie")
	}
	if _, err := NewAuthenticator("", []byte("the-shared-cookie-123"), time.Second); err == nil {
		t.Fatal("accepted an empty name")
	}
}

// TestHandshakeRefusesReflection is the relay of a node's proof back to itself: an
// attacker without the cookie has the victim dial it (conn B, as to a seed) and dials
// the victim (conn A). On A it sends a hello with B's victim nonce and the victim's
// own name; on B a hello with A's victim nonce and, again, the victim's name. The
// proof the victim then sends on B is exactly the proof it expects on A. The victim
// must refuse a hello that carries its own name or echoes one of its own nonces, so
// neither connection authenticates.
func TestHandshakeRefusesReflection(t *testing.T) {
	victim := auth(t, "node-0", "the-shared-cookie-123")
	bVictim, bAttacker := net.Pipe() // the victim dialed the attacker
	aVictim, aAttacker := net.Pipe() // the attacker dialed the victim
	defer func() {
		for _, c := range []net.Conn{bVictim, bAttacker, aVictim, aAttacker} {
			_ = c.Close()
		}
	}()
	onB, onA := make(chan result, 1), make(chan result, 1)
	// As the transport does, the victim closes a connection whose handshake failed.
	handshake := func(c net.Conn, role Role, out chan result) {
		p, err := victim.Handshake(c, role)
		if err != nil {
			_ = c.Close()
		}
		out <- result{p, err}
	}
	go handshake(bVictim, Dialer, onB)
	// B: the victim's hello, whose nonce the attacker uses on A.
	nonceB, _, err := readHello(bAttacker)
	if err != nil {
		t.Fatal(err)
	}
	go handshake(aVictim, Listener, onA)
	if err := writeHello(aAttacker, nonceB, "node-0"); err != nil {
		t.Fatal(err)
	}
	// A: the victim's hello (unless it refused already).
	nonceA, _, err := readHello(aAttacker)
	if err == nil {
		_ = writeHello(bAttacker, nonceA, "node-0")
		// B: the victim's proof, relayed to A as the attacker's.
		proof := make([]byte, 32)
		if _, err := io.ReadFull(bAttacker, proof); err == nil {
			read := make(chan struct{})
			go func() { _, _ = io.ReadFull(aAttacker, make([]byte, 32)); close(read) }() // the victim's proof on A
			_, _ = aAttacker.Write(proof)
			<-read
		}
	}
	_ = aAttacker.Close()
	_ = bAttacker.Close()
	if st := victim.Stats(); st.Reflected < 1 || st.OK != 0 {
		t.Fatalf("victim's handshake counters %+v: want the reflection counted and nothing authenticated", st)
	}
	for name, ch := range map[string]chan result{"A (attacker dialed)": onA, "B (victim dialed)": onB} {
		select {
		case r := <-ch:
			if r.err == nil {
				t.Fatalf("connection %s authenticated the attacker as %q by reflection", name, r.peer)
			}
			if !errors.Is(r.err, ErrReflection) && !errors.Is(r.err, ErrCookieMismatch) {
				t.Fatalf("connection %s: %v, want a refused reflection (or no proof at all)", name, r.err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("connection %s: the handshake did not end", name)
		}
	}
}

// TestHandshakeRefusesOwnNonce: a hello that echoes the nonce of one of this node's
// handshakes in progress is refused whatever name it carries.
func TestHandshakeRefusesOwnNonce(t *testing.T) {
	victim := auth(t, "node-0", "the-shared-cookie-123")
	bVictim, bAttacker := net.Pipe()
	aVictim, aAttacker := net.Pipe()
	defer func() {
		for _, c := range []net.Conn{bVictim, bAttacker, aVictim, aAttacker} {
			_ = c.Close()
		}
	}()
	go func() { _, _ = victim.Handshake(bVictim, Dialer) }() // in progress until the pipes close
	nonceB, _, err := readHello(bAttacker)
	if err != nil {
		t.Fatal(err)
	}
	onA := make(chan error, 1)
	go func() { _, err := victim.Handshake(aVictim, Listener); onA <- err }()
	if err := writeHello(aAttacker, nonceB, "node-9"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := readHello(aAttacker); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-onA:
		if !errors.Is(err, ErrReflection) {
			t.Fatalf("a hello echoing the victim's nonce: %v, want ErrReflection", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the handshake did not end")
	}
}

func TestCertNamesNode(t *testing.T) {
	c := &x509.Certificate{Subject: pkix.Name{CommonName: "mq-0"}, DNSNames: []string{"mq-1.mq-headless.ns.svc", "mq-2"}}
	for node, want := range map[string]bool{"mq-0": true, "mq-1": true, "mq-2": true, "mq-3": false, "mq": false, "mq-1.mq-headless": false} {
		if got := certNamesNode(c, node); got != want {
			t.Errorf("node %q: %v, want %v", node, got, want)
		}
	}
}
