package server

import (
	"context"
	"time"

	"github.com/mqtt-operator/mqtt-operator/broker/packet"
	"github.com/mqtt-operator/mqtt-operator/broker/session"
)

// Drain makes the server refuse new connections (v5: CONNACK 0x9C, use another
// server) and report not ready, without closing its listeners: the first step of an
// evacuation.
func (s *Server) Drain() {
	s.mu.Lock()
	s.draining = true
	s.mu.Unlock()
}

// DisconnectAll disconnects every client, at most rate per second (0: all at once),
// telling v5 clients to use another server (0x9C). It returns when all were told or
// ctx ends.
func (s *Server) DisconnectAll(ctx context.Context, rate int) {
	s.Drain()
	s.mu.RLock()
	clients := make([]*client, 0, len(s.clients))
	for c := range s.clients {
		clients = append(clients, c)
	}
	s.mu.RUnlock()
	var tick *time.Ticker
	if rate > 0 {
		tick = time.NewTicker(time.Second / time.Duration(rate))
		defer tick.Stop()
	}
	for _, c := range clients {
		if tick != nil {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
		c.shutdown(packet.UseAnotherServer, "this node is being evacuated: connect to another node")
	}
}

// LocalLoad returns the connected clients and the persistent sessions on this node.
func (s *Server) LocalLoad() (clients, sessions int) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, e := range s.sessions {
		if e.client != nil || e.expiry != 0 {
			sessions++
		}
	}
	return int(s.stats.connected.Load()), sessions
}

// DetachedSessions returns the client IDs of persistent sessions without a connection.
func (s *Server) DetachedSessions() []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []string
	for id, e := range s.sessions {
		if e.client == nil && !e.moving {
			out = append(out, id)
		}
	}
	return out
}

// Reset disconnects every client and forgets every session and retained message, in
// memory and in the store: the node's store is being wiped.
func (s *Server) Reset() {
	var routes uint64
	s.mu.Lock()
	for c := range s.clients {
		c.shutdown(packet.AdministrativeAction, "this node's store was reset")
	}
	for id, e := range s.sessions {
		if e.client != nil {
			e.client.takenOver.Store(true) // its end must not touch the session
			e.client = nil
		}
		stopTimer(e.expiryTimer)
		stopTimer(e.willTimer)
		routes = max(routes, s.dropSession(id, e))
	}
	clear(s.kicked)
	s.draining = false
	s.mu.Unlock()
	s.flushRoutes(routes)
	for _, m := range s.RetainedMessages() {
		s.setRetained(&session.Message{Topic: m.Topic})
	}
}
