// Package cluster lets several mqttd nodes act as one broker: membership through raft,
// route replication and forwarding, client-ID takeover and evacuation (see
// docs/clustering.md). This file is the mutual authentication every cluster
// connection starts with, so that only nodes that know the cluster cookie talk.
package cluster

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// The handshake, run by both ends at once over a fresh connection:
//
//  1. each end sends hello: magic "MQCL", protocol version, a 32-byte random nonce and
//     its node name;
//  2. each end sends its proof: HMAC-SHA256 keyed with the cookie over a label naming
//     its role (dialer or listener), both nonces and both names;
//  3. each end checks the other's proof in constant time.
//
// Fresh nonces on both sides make a recorded proof useless on another connection, and
// the role label stops a proof from being reflected back to its sender on the same
// connection. Across two connections in opposite directions the labels line up (the
// node dials on one, listens on the other), so a hello that carries this node's own
// name or echoes a nonce of one of its handshakes in progress is refused before any
// proof is sent (ErrReflection). The cookie
// itself never crosses the wire. Both ends reach the same verdict: with different
// cookies neither proof checks, so both refuse.

const (
	magic           = "MQCL"
	version    byte = 1
	nonceSize       = 32
	maxNameLen      = 253 // a DNS name
)

// Role is which end of the connection a node is.
type Role byte

// Roles.
const (
	Dialer   Role = 'D'
	Listener Role = 'L'
)

func (r Role) peer() Role {
	if r == Dialer {
		return Listener
	}
	return Dialer
}

// Errors of the handshake; match with errors.Is.
var (
	// ErrCookieMismatch: the peer does not know this cluster's cookie.
	ErrCookieMismatch = errors.New("cluster cookie mismatch")
	// ErrProtocol: the peer does not speak the cluster protocol (or another version).
	ErrProtocol = errors.New("not an mqttd cluster peer")
	// ErrReflection: the peer's hello carries this node's own name or one of its own
	// nonces: a relay of this node's handshake back to itself (or a node dialing
	// itself). It wraps ErrProtocol.
	ErrReflection = fmt.Errorf("%w: the hello carries this node's own", ErrProtocol)
)

// Authenticator runs handshakes with one cookie and counts how they end.
type Authenticator struct {
	cookie   []byte
	name     string
	timeout  time.Duration
	ok       atomic.Uint64
	mismatch atomic.Uint64
	failed   atomic.Uint64
	reflect  atomic.Uint64

	mu     sync.Mutex
	nonces map[[nonceSize]byte]struct{} // of the handshakes in progress
}

// NewAuthenticator returns an Authenticator for node name with cookie. A handshake
// that takes longer than timeout fails.
func NewAuthenticator(name string, cookie []byte, timeout time.Duration) (*Authenticator, error) {
	if len(cookie) < 16 {
		return nil, errors.New("the cluster cookie must be at least 16 bytes")
	}
	if name == "" || len(name) > maxNameLen {
		return nil, fmt.Errorf("node name %q: must be 1 to %d bytes", name, maxNameLen)
	}
	return &Authenticator{cookie: append([]byte(nil), cookie...), name: name, timeout: timeout,
		nonces: map[[nonceSize]byte]struct{}{}}, nil
}

// HandshakeStats counts handshakes by outcome: Reflected is a hello that carried this
// node's own name or nonce, Failed every other failure but a cookie mismatch.
type HandshakeStats struct {
	OK, CookieMismatch, Failed, Reflected uint64
}

// Stats returns the counters.
func (a *Authenticator) Stats() HandshakeStats {
	return HandshakeStats{OK: a.ok.Load(), CookieMismatch: a.mismatch.Load(), Failed: a.failed.Load(), Reflected: a.reflect.Load()}
}

// Handshake authenticates conn as role and returns the peer's node name. On error
// the caller closes conn; errors wrap ErrCookieMismatch or ErrProtocol when the peer
// answered, or the I/O error.
func (a *Authenticator) Handshake(conn net.Conn, role Role) (peer string, err error) {
	defer func() {
		switch {
		case err == nil:
			a.ok.Add(1)
		case errors.Is(err, ErrCookieMismatch):
			a.mismatch.Add(1)
		case errors.Is(err, ErrReflection):
			a.reflect.Add(1)
		default:
			a.failed.Add(1)
		}
	}()
	if err := conn.SetDeadline(time.Now().Add(a.timeout)); err != nil {
		return "", err
	}
	defer func() { _ = conn.SetDeadline(time.Time{}) }()

	var nonce [nonceSize]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return "", err
	}
	a.mu.Lock()
	a.nonces[nonce] = struct{}{}
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		delete(a.nonces, nonce)
		a.mu.Unlock()
	}()
	// Write and read concurrently: both ends speak first.
	werr := make(chan error, 1)
	go func() { werr <- writeHello(conn, nonce[:], a.name) }()
	peerNonce, peer, rerr := readHello(conn)
	werrHello := <-werr
	if rerr != nil { // says more than the write error a closing peer also causes
		return "", rerr
	}
	if werrHello != nil {
		return "", fmt.Errorf("sending hello: %w", werrHello)
	}
	// Before any proof: a hello with this node's name or one of its nonces is a
	// reflection (its proof on another connection would be the one expected here).
	if peer == a.name {
		return peer, fmt.Errorf("%w name %q (another node with the same cluster.node_name, this node dialing itself, or a relay)", ErrReflection, peer)
	}
	a.mu.Lock()
	_, ours := a.nonces[[nonceSize]byte(peerNonce)]
	a.mu.Unlock()
	if ours {
		return peer, fmt.Errorf("%w nonce (peer %q)", ErrReflection, peer)
	}

	mine := a.proof(role, nonce[:], peerNonce, a.name, peer)
	go func() { _, err := conn.Write(mine); werr <- err }()
	theirs := make([]byte, sha256.Size)
	_, rerr = io.ReadFull(conn, theirs)
	if err := <-werr; err != nil {
		// The peer may already have closed after checking our proof.
		if rerr == nil {
			return "", fmt.Errorf("sending proof: %w", err)
		}
	}
	if rerr != nil {
		if errors.Is(rerr, io.EOF) || errors.Is(rerr, io.ErrUnexpectedEOF) {
			return peer, fmt.Errorf("%w: %s closed the connection before proving it knows the cookie", ErrCookieMismatch, peer)
		}
		return "", fmt.Errorf("reading proof: %w", rerr)
	}
	want := a.proof(role.peer(), peerNonce, nonce[:], peer, a.name)
	if !hmac.Equal(theirs, want) {
		return peer, fmt.Errorf("%w: %s", ErrCookieMismatch, peer)
	}
	return peer, nil
}

// proof is the HMAC of the cookie over the sender's role, the sender's nonce, the
// receiver's nonce and both names (length-prefixed, so fields cannot run together).
func (a *Authenticator) proof(sender Role, senderNonce, receiverNonce []byte, senderName, receiverName string) []byte {
	m := hmac.New(sha256.New, a.cookie)
	m.Write([]byte{version, byte(sender)})
	m.Write(senderNonce)
	m.Write(receiverNonce)
	for _, s := range []string{senderName, receiverName} {
		var n [2]byte
		binary.BigEndian.PutUint16(n[:], uint16(len(s)))
		m.Write(n[:])
		m.Write([]byte(s))
	}
	return m.Sum(nil)
}

func writeHello(w io.Writer, nonce []byte, name string) error {
	b := make([]byte, 0, len(magic)+1+nonceSize+1+len(name))
	b = append(b, magic...)
	b = append(b, version)
	b = append(b, nonce...)
	b = append(b, byte(len(name)))
	b = append(b, name...)
	_, err := w.Write(b)
	return err
}

func readHello(r io.Reader) (nonce []byte, name string, err error) {
	head := make([]byte, len(magic)+1+nonceSize+1)
	if _, err := io.ReadFull(r, head); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.ErrClosedPipe) {
			return nil, "", fmt.Errorf("%w: connection closed during hello", ErrProtocol)
		}
		return nil, "", fmt.Errorf("reading hello: %w", err)
	}
	if string(head[:len(magic)]) != magic {
		return nil, "", fmt.Errorf("%w: bad magic %q", ErrProtocol, head[:len(magic)])
	}
	if v := head[len(magic)]; v != version {
		return nil, "", fmt.Errorf("%w: protocol version %d, want %d", ErrProtocol, v, version)
	}
	nonce = head[len(magic)+1 : len(magic)+1+nonceSize]
	n := int(head[len(head)-1])
	if n == 0 || n > maxNameLen {
		return nil, "", fmt.Errorf("%w: node name of %d bytes", ErrProtocol, n)
	}
	nameBuf := make([]byte, n)
	if _, err := io.ReadFull(r, nameBuf); err != nil {
		return nil, "", fmt.Errorf("%w: truncated hello: %w", ErrProtocol, err)
	}
	return nonce, string(nameBuf), nil
}
