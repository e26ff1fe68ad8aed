package cluster

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"
	"time"
)

// Node owns the cluster port: it accepts connections from other nodes and dials the
// seeds, authenticating every connection with the cookie. For now an authenticated
// connection is only held open and reported; membership and routing over it come with
// the rest of the cluster work.
type Node struct {
	auth *Authenticator
	log  *slog.Logger

	mu     sync.Mutex
	peers  map[string]net.Conn // authenticated peers by node name
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
	done   chan struct{}
}

// NewNode returns a node that authenticates with auth.
func NewNode(auth *Authenticator, log *slog.Logger) *Node {
	return &Node{auth: auth, log: log, peers: map[string]net.Conn{}, conns: map[net.Conn]struct{}{}, done: make(chan struct{})}
}

// Auth returns the node's authenticator (for its counters).
func (n *Node) Auth() *Authenticator { return n.auth }

// Peers returns the names of the authenticated peers.
func (n *Node) Peers() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]string, 0, len(n.peers))
	for name := range n.peers {
		out = append(out, name)
	}
	return out
}

// Serve accepts cluster connections on l until Close.
func (n *Node) Serve(l net.Listener) error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return net.ErrClosed
	}
	n.mu.Unlock()
	go func() {
		<-n.done
		_ = l.Close()
	}()
	for {
		c, err := l.Accept()
		if err != nil {
			select {
			case <-n.done:
				return nil
			default:
				return err
			}
		}
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			_ = n.handle(c, Listener) // handle logs and counts the outcome
		}()
	}
}

// Join dials seed until a handshake succeeds, a cookie mismatch shows the seed belongs
// to another cluster, or ctx ends. It retries connection failures every interval.
func (n *Node) Join(ctx context.Context, seed string, interval time.Duration) error {
	var d net.Dialer
	for {
		c, err := d.DialContext(ctx, "tcp", seed)
		if err == nil {
			err = n.handle(c, Dialer)
			if err == nil || errors.Is(err, ErrCookieMismatch) {
				return err
			}
		}
		n.log.Debug("cluster seed not reachable yet", "seed", seed, "error", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-n.done:
			return net.ErrClosed
		case <-time.After(interval):
		}
	}
}

// handle authenticates c and, on success, holds it as the connection to that peer.
func (n *Node) handle(c net.Conn, role Role) error {
	peer, err := n.auth.Handshake(c, role)
	if err != nil {
		_ = c.Close()
		if errors.Is(err, ErrCookieMismatch) {
			n.log.Warn("cluster connection refused: cookie mismatch", "remote", c.RemoteAddr().String(), "peer", peer)
		} else {
			n.log.Warn("cluster connection refused", "remote", c.RemoteAddr().String(), "error", err)
		}
		return err
	}
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		_ = c.Close()
		return net.ErrClosed
	}
	if old, ok := n.peers[peer]; ok {
		_ = old.Close() // the newer connection wins
	}
	n.peers[peer] = c
	n.conns[c] = struct{}{}
	n.mu.Unlock()
	n.log.Info("cluster peer connected", "peer", peer, "remote", c.RemoteAddr().String(), "role", string(role))
	return nil
}

// Close stops accepting and closes every cluster connection.
func (n *Node) Close() {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return
	}
	n.closed = true
	close(n.done)
	for c := range n.conns {
		_ = c.Close()
	}
	n.mu.Unlock()
	n.wg.Wait()
}
