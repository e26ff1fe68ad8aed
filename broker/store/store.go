// Package store defines what the broker persists per node and an in-memory
// implementation. The [cluster] work backs the same interface with an embedded
// on-disk store (pebble) under the data dir.
package store

import (
	"slices"

	"github.com/mqtt-operator/mqtt-operator/broker/internal/lockorder"
	"github.com/mqtt-operator/mqtt-operator/broker/session"
)

// Store keeps retained messages and the state of persistent sessions. Implementations
// are safe for concurrent use.
type Store interface {
	// PutRetained stores msg as the retained message of its topic.
	PutRetained(msg *session.Message) error
	// DeleteRetained clears the retained message of topic.
	DeleteRetained(topic string) error
	// Retained returns every retained message.
	Retained() ([]*session.Message, error)
	// WriteSession stores a persistent session's state, replacing everything stored
	// for it, each queued delivery as its own record under its StoreSeq (numbered
	// afresh by session.StoreSnapshot). It returns at once: the Commit tells when the
	// write is durable.
	WriteSession(snap session.Snapshot) *Commit
	// WriteQueued records that a stored session queued added (nil: nothing) and
	// dropped the queued deliveries numbered dropped (see session.EnqueueStored),
	// without rewriting the rest of it: the cost does not grow with the queue. For a
	// session not stored, what it writes is not read back (Memory drops it; Pebble
	// keeps the records and Sessions reports them).
	WriteQueued(clientID string, added *session.Delivery, dropped []uint64) *Commit
	// DeleteSession forgets a session.
	DeleteSession(clientID string) error
	// Sessions returns every stored session, its queue in StoreSeq order.
	Sessions() ([]session.Snapshot, error)
	// Close releases the store.
	Close() error
}

// Commit is a write a Store has taken: the writes of one store take effect in the
// order they were called (a later WriteQueued never lands before an earlier
// WriteSession of the same session, nor the other way round), several at a time.
// The nil Commit is one already durable.
type Commit struct {
	done chan struct{}
	err  error
}

// Wait blocks until the write is durable, or failed.
func (c *Commit) Wait() error {
	if c == nil {
		return nil
	}
	<-c.done
	return c.err
}

// SaveSession writes snap and waits for it (WriteSession, then Wait).
func SaveSession(s Store, snap session.Snapshot) error {
	return s.WriteSession(snap).Wait()
}

// Memory is a Store in process memory: state survives a broker restart inside one
// process (tests, embedding) but not the process.
type Memory struct {
	mu       lockorder.Mutex
	retained map[string]*session.Message
	sessions map[string]session.Snapshot
}

// NewMemory returns an empty in-memory store.
func NewMemory() *Memory {
	return &Memory{retained: make(map[string]*session.Message), sessions: make(map[string]session.Snapshot)}
}

// PutRetained implements Store.
func (m *Memory) PutRetained(msg *session.Message) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.retained[msg.Topic] = msg
	return nil
}

// DeleteRetained implements Store.
func (m *Memory) DeleteRetained(topic string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.retained, topic)
	return nil
}

// Retained implements Store.
func (m *Memory) Retained() ([]*session.Message, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]*session.Message, 0, len(m.retained))
	for _, msg := range m.retained {
		out = append(out, msg)
	}
	return out, nil
}

// WriteSession implements Store.
func (m *Memory) WriteSession(snap session.Snapshot) *Commit {
	m.mu.Lock()
	defer m.mu.Unlock()
	snap.Queue = append([]*session.Delivery(nil), snap.Queue...)
	m.sessions[snap.ID] = snap
	return nil
}

// WriteQueued implements Store. added is copied: the session goes on changing it.
func (m *Memory) WriteQueued(clientID string, added *session.Delivery, dropped []uint64) *Commit {
	m.mu.Lock()
	defer m.mu.Unlock()
	snap, ok := m.sessions[clientID]
	if !ok {
		return nil
	}
	if len(dropped) > 0 {
		snap.Queue = slices.DeleteFunc(slices.Clone(snap.Queue), func(d *session.Delivery) bool {
			return slices.Contains(dropped, d.StoreSeq)
		})
	}
	if added != nil {
		c := *added
		snap.Queue = append(snap.Queue[:len(snap.Queue):len(snap.Queue)], &c)
	}
	m.sessions[clientID] = snap
	return nil
}

// DeleteSession implements Store.
func (m *Memory) DeleteSession(clientID string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.sessions, clientID)
	return nil
}

// Sessions implements Store.
func (m *Memory) Sessions() ([]session.Snapshot, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]session.Snapshot, 0, len(m.sessions))
	for _, s := range m.sessions {
		out = append(out, s)
	}
	return out, nil
}

// Close implements Store.
func (m *Memory) Close() error { return nil }
