// Package server is the MQTT broker engine: it accepts connections, runs the protocol
// for each client, keeps sessions and retained messages and routes publications.
package server

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mqtt-operator/mqtt-operator/broker/auth"
	"github.com/mqtt-operator/mqtt-operator/broker/internal/lockorder"
	"github.com/mqtt-operator/mqtt-operator/broker/session"
	"github.com/mqtt-operator/mqtt-operator/broker/store"
	"github.com/mqtt-operator/mqtt-operator/broker/topic"
)

// Options configures a Server. Zero values take the defaults of DefaultOptions.
type Options struct {
	// MaxPacketSize is the largest packet accepted from clients (announced to v5 clients).
	MaxPacketSize uint32
	// ReceiveMaximum is how many inbound QoS 2 messages a client may have unreleased.
	ReceiveMaximum uint16
	// MaxInflight caps the outbound QoS 1/2 window per client (v5: also capped by the
	// client's Receive Maximum).
	MaxInflight int
	// MaxQueued bounds the messages queued per session; DropPolicy picks the victim.
	MaxQueued  int
	DropPolicy session.DropPolicy
	// MaxKeepAlive is the longest keepalive accepted, in seconds (0: any). Clients asking
	// for more, or for none, get this value as Server Keep Alive (v5).
	MaxKeepAlive uint16
	// ConnectTimeout is how long a new connection may take to send CONNECT.
	ConnectTimeout time.Duration
	// TopicAliasMaximum is the number of topic aliases a client may use towards us.
	TopicAliasMaximum uint16
	// MaxSessionExpiry caps the session expiry interval in seconds (0: no cap).
	MaxSessionExpiry uint32
	// MaxConnections refuses connections beyond this count (0: no limit).
	MaxConnections int
	// Abuse limits (see limits.go); 0 means no limit. mqttd's configuration gives
	// each a default that protects a small node.
	//
	// MaxConnectionsPerListener refuses connections beyond this count on one listener.
	MaxConnectionsPerListener int
	// ConnectionRate is the new connections per second each listener accepts, with
	// bursts of ConnectionBurst; beyond it accepting waits.
	ConnectionRate  int
	ConnectionBurst int
	// MaxQueuedBytes bounds the payload bytes queued per session (with DropPolicy).
	MaxQueuedBytes int
	// MaxRetained and MaxRetainedBytes (topic + payload) bound the retained messages.
	MaxRetained      int
	MaxRetainedBytes int
	// MaxSubscriptions bounds the subscriptions of one session.
	MaxSubscriptions int
	// MaxTopicLength (bytes) and MaxTopicLevels bound topic names and filters.
	MaxTopicLength int
	MaxTopicLevels int
	// PublishRate (messages) and PublishByteRate (payload bytes) per second and
	// client: beyond them the client's next packet is read later.
	PublishRate     int
	PublishByteRate int
	// SysInterval is how often $SYS topics are published (0: never).
	SysInterval time.Duration
	// WriteTimeout bounds one write to a client.
	WriteTimeout time.Duration
	// ParkAfter is how long a plain TCP connection's reader waits for input before
	// the connection parks (park.go). 0: 500 ms; negative: connections never park.
	ParkAfter time.Duration
	// Auth authenticates clients and applies the ACL (nil: everyone may do
	// everything, as an embedded broker without auth).
	Auth *auth.Authenticator
	// Store persists retained messages and sessions (default: in memory).
	Store store.Store
	// Logger receives structured logs (default: slog.Default()).
	Logger *slog.Logger
	// Version is reported in $SYS/broker/version.
	Version string
}

// DefaultOptions returns the defaults used for zero fields.
func DefaultOptions() Options {
	return Options{
		MaxPacketSize:     1 << 20,
		ReceiveMaximum:    1024,
		MaxInflight:       1024,
		MaxQueued:         10000,
		MaxKeepAlive:      0,
		ConnectTimeout:    10 * time.Second,
		TopicAliasMaximum: 1024,
		SysInterval:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		Version:           "dev",
	}
}

func (o *Options) fillDefaults() {
	d := DefaultOptions()
	if o.MaxPacketSize == 0 {
		o.MaxPacketSize = d.MaxPacketSize
	}
	if o.ReceiveMaximum == 0 {
		o.ReceiveMaximum = d.ReceiveMaximum
	}
	if o.MaxInflight <= 0 {
		o.MaxInflight = d.MaxInflight
	}
	if o.MaxQueued <= 0 {
		o.MaxQueued = d.MaxQueued
	}
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = d.ConnectTimeout
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = d.WriteTimeout
	}
	if o.Version == "" {
		o.Version = d.Version
	}
	if o.Store == nil {
		o.Store = store.NewMemory()
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// Server is one MQTT broker node.
type Server struct {
	opts  Options
	log   *slog.Logger
	trie  *topic.Trie
	stats Stats

	// Message IDs (session.MessageID) of the messages this process routes first.
	msgOrigin uint64
	msgSeq    atomic.Uint64
	start     time.Time

	// moveTimeout bounds how long a session handed to another node waits for its
	// release (the constant; tests shorten it).
	moveTimeout time.Duration

	mu        lockorder.RWMutex // guards sessions, clients, listeners, closing
	sessions  map[string]*entry
	clients   map[*client]struct{}
	listeners map[net.Listener]struct{}
	closing   bool
	draining  bool // evacuating: new connections go elsewhere

	retainedMu    lockorder.RWMutex
	retained      map[string]*session.Message
	retainedBytes int // topic + payload bytes of retained; guarded by retainedMu

	admission admission     // connection counts against the connection caps
	limits    limitCounters // refusals and throttles by limit
	authLog   logGate       // login failures: info level at most every logEvery
	// aclMu orders SUBSCRIBEs (read) against a reload's re-check (write): a verdict
	// and the subscription it grants are never split by a change of rules.
	aclMu lockorder.RWMutex

	cluster atomic.Pointer[Cluster] // nil: a single node; set before serving (the $SYS loop may already run)

	routesMu    lockorder.Mutex
	routeRefs   map[Route]int // local subscriptions per route
	routeOutbox []routeChange // route changes not yet handed to the cluster, oldest first; guarded by routesMu
	// routesQueued numbers the route changes (guarded by routesMu); routesHanded is the
	// number of the last one handed to the cluster.
	routesQueued uint64
	routesHanded atomic.Uint64
	// routesFlushMu serializes handing route changes to the cluster (flushRoutes) and
	// the links' route snapshots (WithLocalRoutes). Never taken with Server.mu held.
	routesFlushMu lockorder.Mutex

	remoteMu lockorder.Mutex
	remote   map[string]map[Route]struct{} // peer node -> its routes (in the trie)

	kicked map[string]uint64 // client ID -> epoch of the last takeover by another node; guarded by mu

	// The dashboard's watchers (watch.go): pseudo-client ID -> *watcher. watchMu is
	// held (read) while route hands a watcher a message and (write) while one closes.
	watchers   sync.Map
	watchMu    lockorder.RWMutex
	watchCount atomic.Int64

	shareMu lockorder.Mutex
	shareRR map[string]uint32 // round-robin position per "group\x00filter"

	conns sync.WaitGroup // connections, parked or not

	parkOnce sync.Once
	parkPoll *parker // nil: connections never park (not Linux, or the poller failed)
	done     chan struct{}
	loops    sync.WaitGroup // housekeeping
}

// entry is the server's view of one session: the session itself plus the connection
// attached to it and the timers of its will and expiry. Guarded by Server.mu.
type entry struct {
	sess         *session.Session
	client       *client
	expiry       uint32 // session expiry interval in seconds, once disconnected
	expiryTimer  *time.Timer
	will         *session.Message // pending delayed will
	willBy       auth.Principal   // its client, for the ACL check when it is due
	willTimer    *time.Timer
	disconnected time.Time
	moving       bool        // handed to another node, kept until it releases it
	moveTimer    *time.Timer // keeps a moving session nobody released here again (moveExpired)
	moveGen      uint64      // counts the session's moves: a timer of an earlier one does nothing
	moveEpoch    uint64      // the epoch of the kick that started the current move (0: an evacuation's)
	// epoch is the cluster's order of the last connect that attached here (kept once
	// it disconnects): a stale kick of an earlier connect leaves the session (KickStale).
	epoch uint64
	// storeStale: a write of this session to the store failed, so its records there
	// may not match it; until a whole-session save succeeds, every message queued
	// for it while offline saves it whole (not one record), and shutdown does too.
	storeStale atomic.Bool
}

// New creates a server and restores the retained messages and sessions in its store.
func New(opts Options) (*Server, error) {
	opts.fillDefaults()
	s := &Server{
		opts:      opts,
		log:       opts.Logger,
		trie:      topic.New(),
		start:     time.Now(),
		sessions:  make(map[string]*entry),
		clients:   make(map[*client]struct{}),
		listeners: make(map[net.Listener]struct{}),
		retained:  make(map[string]*session.Message),
		shareRR:   make(map[string]uint32),
		routeRefs: make(map[Route]int),
		remote:    make(map[string]map[Route]struct{}),
		kicked:    make(map[string]uint64),
		done:      make(chan struct{}),
		msgOrigin: newMessageOrigin(),

		moveTimeout: moveTimeout,
	}
	if err := s.restore(); err != nil {
		return nil, err
	}
	if opts.Auth != nil {
		// The rules may have changed while the broker was down, and may change at
		// any reload: subscriptions they no longer allow go.
		opts.Auth.OnChange(s.recheckSubscriptions) // first: a reload meanwhile is not missed
		s.recheckSubscriptions()
	}
	if opts.SysInterval > 0 {
		s.loops.Add(1)
		go s.sysLoop()
	}
	return s, nil
}

// restore loads retained messages and persistent sessions from the store.
func (s *Server) restore() error {
	msgs, err := s.opts.Store.Retained()
	if err != nil {
		return fmt.Errorf("reading retained messages from the store: %w", err)
	}
	for _, m := range msgs {
		s.retained[m.Topic] = m
		s.retainedBytes += retainedSize(m)
	}
	snaps, err := s.opts.Store.Sessions()
	if err != nil {
		return fmt.Errorf("reading sessions from the store: %w", err)
	}
	now := time.Now()
	for _, snap := range snaps {
		if snap.Expiry != ExpiryNever && now.Sub(snap.Disconnected) >= time.Duration(snap.Expiry)*time.Second {
			_ = s.opts.Store.DeleteSession(snap.ID)
			continue
		}
		e := &entry{sess: session.Restore(snap, s.sessionLimits()), expiry: snap.Expiry, disconnected: snap.Disconnected}
		for _, sub := range snap.Subscriptions {
			s.addSub(sub) // no cluster yet: nothing is queued, a link's snapshot carries them
		}
		s.sessions[snap.ID] = e
		s.armExpiry(snap.ID, e, now)
	}
	return nil
}

// ExpiryNever is the session expiry interval that never expires.
const ExpiryNever = 0xFFFFFFFF

func (s *Server) sessionLimits() session.Limits {
	return session.Limits{MaxQueued: s.opts.MaxQueued, MaxQueuedBytes: s.opts.MaxQueuedBytes,
		Policy: s.opts.DropPolicy, Drops: &s.limits.drops}
}

// Serve accepts connections on l until l is closed or the server shuts down, as the
// listener "tcp" (see ServeListener).
func (s *Server) Serve(l net.Listener) error { return s.ServeListener(l, "tcp") }

// ServeListener accepts connections on l until l is closed or the server shuts down.
// The listener's name selects its per-listener limits (connection cap and rate) and
// appears in logs.
func (s *Server) ServeListener(l net.Listener, name string) error {
	l = s.ThrottleAccept(l, name)
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return ErrServerClosed
	}
	s.listeners[l] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, l)
		s.mu.Unlock()
	}()
	var delay time.Duration
	for {
		conn, err := l.Accept()
		if err != nil {
			select {
			case <-s.done:
				return ErrServerClosed
			default:
			}
			// Timeouts and a lack of file descriptors or buffers pass: accept again
			// after a pause, rather than stop the listener (and with it the broker).
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
				errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENOMEM) || errors.Is(err, syscall.ECONNABORTED) {
				delay = min(max(delay*2, 5*time.Millisecond), time.Second)
				time.Sleep(delay)
				continue
			}
			return err
		}
		delay = 0
		go s.ServeConnOn(conn, name)
	}
}

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("mqtt server closed")

// ServeConn runs the protocol on one connection as a connection of the listener
// "default" (see ServeConnOn).
func (s *Server) ServeConn(conn net.Conn) { s.ServeConnOn(conn, "default") }

// ServeConnOn runs the protocol on one connection of the listener called listener
// (its per-listener limits apply) and returns when the connection is closed, or when
// it parks (a plain TCP connection idle for a while; see park.go): other goroutines
// serve it from then on. The server closes conn; the caller must not.
func (s *Server) ServeConnOn(conn net.Conn, listener string) {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		_ = conn.Close()
		return
	}
	s.conns.Add(1) // done when the connection ends (connDone), parked in between or not
	s.mu.Unlock()
	c := newClient(s, conn)
	c.listener = listener
	c.serve()
}

// Shutdown stops accepting connections, sends v5 clients DISCONNECT 0x8B (server
// shutting down), flushes what is queued for them and closes every connection. It
// returns when all connections are closed or ctx is done.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return nil
	}
	s.closing = true
	close(s.done)
	for l := range s.listeners {
		_ = l.Close()
	}
	clients := make([]*client, 0, len(s.clients))
	for c := range s.clients {
		clients = append(clients, c)
	}
	s.mu.Unlock()
	for _, c := range clients {
		c.shutdown(serverShuttingDown, "the server is shutting down")
	}
	s.stopWatchers() // their streams end instead of holding up the dashboard's shutdown
	s.loops.Wait()
	finished := make(chan struct{})
	go func() {
		s.conns.Wait()
		close(finished)
	}()
	select {
	case <-finished:
	case <-ctx.Done():
		for _, c := range clients {
			c.closeConn()
		}
		<-finished
	}
	// Every connection is gone, and each persistent session was stored when its
	// client left; what was queued for it since went to the store one message at a
	// time (enqueue): only a session whose store write failed is written again.
	s.parkOnce.Do(func() {}) // no poller from now on
	if s.parkPoll != nil {
		s.parkPoll.stop()
	}
	s.mu.Lock()
	for _, e := range s.sessions {
		stopTimer(e.expiryTimer)
		stopTimer(e.willTimer)
		if e.storeStale.Load() && e.client == nil && e.expiry != 0 && !e.moving {
			s.saveSession(e) // a last try for a session whose store write failed
		}
	}
	s.mu.Unlock()
	return ctx.Err()
}

func stopTimer(t *time.Timer) {
	if t != nil {
		t.Stop()
	}
}

// Ready reports whether the server accepts new connections: false once Shutdown or
// an evacuation began.
func (s *Server) Ready() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return !s.closing && !s.draining
}

// Stats returns a snapshot of the server's counters.
func (s *Server) Stats() StatsSnapshot {
	s.mu.RLock()
	sessions := len(s.sessions)
	s.mu.RUnlock()
	s.retainedMu.RLock()
	retained := len(s.retained)
	s.retainedMu.RUnlock()
	return StatsSnapshot{
		Uptime:           time.Since(s.start),
		ClientsConnected: s.stats.connected.Load(),
		ClientsParked:    s.stats.parked.Load(),
		ClientsTotal:     s.stats.connectsTotal.Load(),
		Sessions:         sessions,
		Subscriptions:    s.trie.Len(),
		Retained:         retained,
		MessagesReceived: s.stats.msgsIn.Load(),
		MessagesSent:     s.stats.msgsOut.Load(),
		MessagesDropped:  s.stats.dropped.Load(),
		MessagesExpired:  s.stats.expired.Load(),
		BytesReceived:    s.stats.bytesIn.Load(),
		BytesSent:        s.stats.bytesOut.Load(),
		MalformedPackets: s.stats.malformed.Load(),
		ProtocolErrors:   s.stats.protocolErrors.Load(),
		StoreErrors:      s.stats.storeErrors.Load(),
		RetainedRefused:  s.stats.retainedUnreplicated.Load(),
		MovesExpired:     s.stats.movesExpired.Load(),
		Limits:           s.limits.snapshot(),
	}
}

// Stats are the server's counters (atomics: updated on the hot path without locks).
type Stats struct {
	connected      atomic.Int64
	parked         atomic.Int64
	connectsTotal  atomic.Uint64
	msgsIn         atomic.Uint64
	msgsOut        atomic.Uint64
	dropped        atomic.Uint64
	expired        atomic.Uint64
	bytesIn        atomic.Uint64
	bytesOut       atomic.Uint64
	malformed      atomic.Uint64
	protocolErrors atomic.Uint64
	storeErrors    atomic.Uint64
	clusterErrors  atomic.Uint64
	// retainedUnreplicated counts retained publishes refused because the cluster
	// could not replicate them (no raft majority).
	retainedUnreplicated atomic.Uint64
	// movesExpired counts sessions handed to another node that nobody released in
	// time, kept on this node again (moveExpired).
	movesExpired atomic.Uint64
}

// StatsSnapshot is a point-in-time copy of the counters.
type StatsSnapshot struct {
	Uptime           time.Duration
	ClientsConnected int64
	ClientsParked    int64 // connected clients whose idle connection waits in the poller (park.go)
	ClientsTotal     uint64
	Sessions         int
	Subscriptions    int
	Retained         int
	MessagesReceived uint64
	MessagesSent     uint64
	MessagesDropped  uint64
	MessagesExpired  uint64
	BytesReceived    uint64
	BytesSent        uint64
	MalformedPackets uint64
	ProtocolErrors   uint64
	MovesExpired     uint64 // sessions handed away, never released, kept here again
	StoreErrors      uint64 // failed writes to the session and retained-message store
	// RetainedRefused counts retained publishes refused because the cluster could not
	// replicate them (no raft majority): neither stored nor delivered.
	RetainedRefused uint64
	Limits          []LimitCount // refusals (or throttle waits) by abuse limit, in Limit order
}

// newMessageOrigin draws the Origin of this process's message IDs: random, never zero.
func newMessageOrigin() uint64 {
	var b [8]byte
	for {
		_, _ = rand.Read(b[:])
		if o := binary.BigEndian.Uint64(b[:]); o != 0 {
			return o
		}
	}
}

// tlsVersioned is a connection that reports its negotiated TLS version.
type tlsVersioned interface{ TLSVersion() uint16 }

// tlsVersionOf is the TLS version of c's connection: "1.2", "1.3", or "" when it is
// not TLS.
func tlsVersionOf(c *client) string {
	if tv, ok := c.conn.(tlsVersioned); ok {
		switch tv.TLSVersion() {
		case tls.VersionTLS12:
			return "1.2"
		case tls.VersionTLS13:
			return "1.3"
		}
	}
	return ""
}

// parker returns the server's poller for idle connections, started at the first call
// (nil when connections cannot park here).
func (s *Server) parker() *parker {
	s.parkOnce.Do(func() {
		p, err := newParker(func(c *client) { c.resume() })
		if err != nil {
			s.log.Debug("idle connections do not park", "error", err)
			return
		}
		s.parkPoll = p
	})
	return s.parkPoll
}
