// Package store defines what the broker persists per node and an in-memory
// implementation. The [cluster] work backs the same interface with an embedded
// on-disk store (pebble) under the data dir.
package store

import (
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
	// SaveSession stores a persistent session's state, replacing an older one.
	SaveSession(snap session.Snapshot) error
	// DeleteSession forgets a session.
	DeleteSession(clientID string) error
	// Sessions returns every stored session.
	Sessions() ([]session.Snapshot, error)
	// Close releases the store.
	Close() error
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

// SaveSession implements Store.
func (m *Memory) SaveSession(snap session.Snapshot) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.sessions[snap.ID] = snap
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
