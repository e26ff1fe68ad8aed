package server_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/mqtt-operator/mqtt-operator/broker/packet"
	"github.com/mqtt-operator/mqtt-operator/broker/server"
	"github.com/mqtt-operator/mqtt-operator/broker/session"
	"github.com/mqtt-operator/mqtt-operator/broker/store"
)

// TestRestartKeepsState stops a broker and starts a new one on the same store: the
// persistent session comes back with its subscription and the message queued for it
// while it was offline, retained messages come back, and $SYS values are not stored.
func TestRestartKeepsState(t *testing.T) {
	t.Parallel()
	st := store.NewMemory()
	a := startBroker(t, server.Options{Store: st, SysInterval: 10 * time.Millisecond})

	sub := v3RawConnect(t, a, "persistent", false, 0, false)
	v3RawSubscribe(t, sub, "orders/#", 1)
	sub.send(&packet.Packet{Type: packet.Disconnect})
	eventually(t, waitFor, "the subscriber to be disconnected", func() bool { return a.Stats().ClientsConnected == 0 })

	pub := v3RawConnect(t, a, "publisher", true, 0, false)
	pub.send(&packet.Packet{Type: packet.Publish, QoS: 1, PacketID: 1, Topic: "orders/1", Payload: []byte("while offline")})
	v3RawExpect(t, pub, packet.Puback, 1)
	pub.send(&packet.Packet{Type: packet.Publish, QoS: 1, PacketID: 2, Retain: true, Topic: "config/mode", Payload: []byte("eco")})
	v3RawExpect(t, pub, packet.Puback, 2)
	eventually(t, waitFor, "$SYS values to be retained", func() bool { return a.Stats().Retained > 1 })

	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if err := a.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	msgs, err := st.Retained()
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 1 || msgs[0].Topic != "config/mode" {
		t.Fatalf("store holds retained %v, want only config/mode", topics(msgs))
	}

	b := startBroker(t, server.Options{Store: st})
	back := v3RawConnect(t, b, "persistent", false, 0, true)
	p := back.expect(packet.Publish)
	if p.Topic != "orders/1" || string(p.Payload) != "while offline" || p.QoS != 1 {
		t.Fatalf("after restart got %s %q qos %d, want orders/1 \"while offline\" qos 1", p.Topic, p.Payload, p.QoS)
	}
	back.send(&packet.Packet{Type: packet.Puback, PacketID: p.PacketID})
	// The restored subscription routes new messages too.
	pub = v3RawConnect(t, b, "publisher", true, 0, false)
	pub.send(&packet.Packet{Type: packet.Publish, Topic: "orders/2", Payload: []byte("after restart")})
	if p := back.expect(packet.Publish); p.Topic != "orders/2" {
		t.Fatalf("got %s, want orders/2", p.Topic)
	}

	fresh := v3RawConnect(t, b, "fresh", true, 0, false)
	v3RawSubscribe(t, fresh, "config/+", 0)
	if p := fresh.expect(packet.Publish); p.Topic != "config/mode" || string(p.Payload) != "eco" || !p.Retain {
		t.Fatalf("retained after restart: %s %q retain %v", p.Topic, p.Payload, p.Retain)
	}
}

func topics(msgs []*session.Message) []string {
	var out []string
	for _, m := range msgs {
		out = append(out, m.Topic)
	}
	return out
}

// brokenStore is a store whose disk has failed: every call returns an error.
type brokenStore struct{}

var errBroken = errors.New("disk on fire")

func (brokenStore) PutRetained(*session.Message) error    { return errBroken }
func (brokenStore) DeleteRetained(string) error           { return errBroken }
func (brokenStore) Retained() ([]*session.Message, error) { return nil, errBroken }
func (brokenStore) SaveSession(session.Snapshot) error    { return errBroken }
func (brokenStore) DeleteSession(string) error            { return errBroken }
func (brokenStore) Sessions() ([]session.Snapshot, error) { return nil, errBroken }
func (brokenStore) Close() error                          { return nil }

// failingWrites reads as empty but cannot write.
type failingWrites struct{ brokenStore }

func (failingWrites) Retained() ([]*session.Message, error) { return nil, nil }
func (failingWrites) Sessions() ([]session.Snapshot, error) { return nil, nil }

// TestBrokenStore checks that a store that cannot be read stops the broker from
// starting with a clear error, and that failed writes are counted while the broker
// keeps serving from memory.
func TestBrokenStore(t *testing.T) {
	t.Parallel()
	_, err := server.New(server.Options{Store: brokenStore{}})
	if !errors.Is(err, errBroken) || !strings.Contains(err.Error(), "store") {
		t.Fatalf("New with an unreadable store: %v, want an error naming the store", err)
	}

	b := startBroker(t, server.Options{Store: failingWrites{}})
	c := v3RawConnect(t, b, "writer", false, 0, false)
	c.send(&packet.Packet{Type: packet.Publish, QoS: 1, PacketID: 1, Retain: true, Topic: "a", Payload: []byte("x")})
	v3RawExpect(t, c, packet.Puback, 1)
	c.send(&packet.Packet{Type: packet.Disconnect})
	eventually(t, waitFor, "two store errors (retained message, session)", func() bool { return b.Stats().StoreErrors == 2 })

	// Still served from memory.
	r := v3RawConnect(t, b, "reader", true, 0, false)
	v3RawSubscribe(t, r, "a", 0)
	if p := r.expect(packet.Publish); string(p.Payload) != "x" {
		t.Fatalf("retained payload %q, want x", p.Payload)
	}
}
