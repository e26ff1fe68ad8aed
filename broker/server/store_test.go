package server_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
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

func (brokenStore) PutRetained(*session.Message) error          { return errBroken }
func (brokenStore) DeleteRetained(string) error                 { return errBroken }
func (brokenStore) Retained() ([]*session.Message, error)       { return nil, errBroken }
func (brokenStore) WriteSession(session.Snapshot) *store.Commit { return store.Failed(errBroken) }
func (brokenStore) WriteQueued(string, *session.Delivery, []uint64) *store.Commit {
	return store.Failed(errBroken)
}
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

// TestOfflineQueueStoredPerMessage: each message queued for an offline persistent
// session is in the store (pebble, on disk) when the publisher gets its PUBACK, one
// record per message, the ones a full queue dropped gone, with no rewrite of the
// session in between; after a reconnect, a partial drain and a restart of the broker
// on the same store, the client gets what is left, in order.
func TestOfflineQueueStoredPerMessage(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := store.OpenPebble(dir, quiet)
	if err != nil {
		t.Fatal(err)
	}
	opts := server.Options{Store: st, MaxQueued: 10, DropPolicy: session.DropOldest}
	a := startBroker(t, opts)
	v3OfflineSubscriber(t, a, "capped", "cap/t")

	pub := v3RawConnect(t, a, "cap-pub", true, 0, false)
	publish := func(from, to int) {
		t.Helper()
		for i := from; i < to; i++ {
			pub.send(&packet.Packet{Type: packet.Publish, QoS: 1, PacketID: uint16(i + 1), Topic: "cap/t", Payload: []byte(strconv.Itoa(i))})
			v3RawExpect(t, pub, packet.Puback, uint16(i+1))
		}
	}
	stored := func(want ...int) {
		t.Helper()
		snaps, err := st.Sessions()
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, s := range snaps {
			if s.ID != "capped" {
				continue
			}
			for _, d := range s.Queue {
				got = append(got, string(d.Msg.Payload))
			}
		}
		var w []string
		for _, i := range want {
			w = append(w, strconv.Itoa(i))
		}
		if !slices.Equal(got, w) {
			t.Fatalf("stored queue %v, want %v", got, w)
		}
	}
	publish(0, 25)
	stored(15, 16, 17, 18, 19, 20, 21, 22, 23, 24) // acknowledged, so stored: the newest 10

	back := v3RawConnect(t, a, "capped", false, 0, true)
	for i := 15; i < 18; i++ {
		p := back.expect(packet.Publish)
		if string(p.Payload) != strconv.Itoa(i) {
			t.Fatalf("got %q, want %d", p.Payload, i)
		}
		back.send(&packet.Packet{Type: packet.Puback, PacketID: p.PacketID})
	}
	// The rest arrived too (unacknowledged, inflight); the client leaves with them.
	for i := 18; i < 25; i++ {
		if p := back.expect(packet.Publish); string(p.Payload) != strconv.Itoa(i) {
			t.Fatalf("got %q, want %d", p.Payload, i)
		}
	}
	back.send(&packet.Packet{Type: packet.Disconnect})
	expectClosed(t, back, v3Wait)
	v3WaitConnected(t, a, 1) // the publisher
	publish(25, 30)          // queued behind the 7 inflight (the limit counts queued ones only)
	stored(18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29)

	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if err := a.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	st, err = store.OpenPebble(dir, quiet)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	opts.Store = st
	b := startBroker(t, opts)
	again := v3RawConnect(t, b, "capped", false, 0, true)
	for i := 18; i < 30; i++ {
		p := again.expect(packet.Publish)
		if string(p.Payload) != strconv.Itoa(i) || p.Dup != (i < 25) {
			t.Fatalf("after the restart got %q dup %v, want %d dup %v", p.Payload, p.Dup, i, i < 25)
		}
		again.send(&packet.Packet{Type: packet.Puback, PacketID: p.PacketID})
	}
}

// TestMergeMovedKeepsStoreInStep: merging what a session's old node queued (here:
// nothing) numbers an offline session's queue afresh; the store is rewritten to
// match, so the records a full queue later drops are the ones deleted, and a
// restart finds exactly the queue (a review found ghosts of dropped messages).
func TestMergeMovedKeepsStoreInStep(t *testing.T) {
	t.Parallel()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := store.OpenPebble(t.TempDir(), quiet)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	b := startBroker(t, server.Options{Store: st, MaxQueued: 3, DropPolicy: session.DropOldest})
	v3OfflineSubscriber(t, b, "merged", "m/t")
	pub := v3RawConnect(t, b, "m-pub", true, 0, false)
	for i := range 6 {
		if i == 3 {
			b.MergeMoved("merged", nil) // nothing arrived on the old node
		}
		pub.send(&packet.Packet{Type: packet.Publish, QoS: 1, PacketID: uint16(i + 1), Topic: "m/t", Payload: []byte(strconv.Itoa(i))})
		v3RawExpect(t, pub, packet.Puback, uint16(i+1))
	}
	snaps, err := st.Sessions()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range snaps {
		for _, d := range s.Queue {
			got = append(got, s.ID+":"+string(d.Msg.Payload))
		}
	}
	if want := []string{"merged:3", "merged:4", "merged:5"}; !slices.Equal(got, want) {
		t.Fatalf("stored queue %v, want %v", got, want)
	}
}

// failOnce is an in-memory store whose next session write fails (a disk error).
type failOnce struct {
	*store.Memory
	fail atomic.Bool
}

func (f *failOnce) WriteSession(snap session.Snapshot) *store.Commit {
	if f.fail.CompareAndSwap(true, false) {
		return store.Failed(errBroken)
	}
	return f.Memory.WriteSession(snap)
}

// TestFailedSessionWriteHealed: a session whose store write failed when its client
// left is saved whole with the next message queued for it (its records alone would
// belong to no stored session), so what was acknowledged is in the store.
func TestFailedSessionWriteHealed(t *testing.T) {
	t.Parallel()
	st := &failOnce{Memory: store.NewMemory()}
	b := startBroker(t, server.Options{Store: st})
	sub := v3RawConnect(t, b, "stale", false, 0, false)
	v3RawSubscribe(t, sub, "s/t", 1)
	st.fail.Store(true)
	sub.send(&packet.Packet{Type: packet.Disconnect})
	expectClosed(t, sub, v3Wait)
	v3WaitConnected(t, b, 0)
	eventually(t, waitFor, "the failed write counted", func() bool { return b.Stats().StoreErrors == 1 })
	pub := v3RawConnect(t, b, "s-pub", true, 0, false)
	for i := range 3 {
		pub.send(&packet.Packet{Type: packet.Publish, QoS: 1, PacketID: uint16(i + 1), Topic: "s/t", Payload: []byte(strconv.Itoa(i))})
		v3RawExpect(t, pub, packet.Puback, uint16(i+1))
	}
	snaps, err := st.Sessions()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range snaps {
		for _, d := range s.Queue {
			got = append(got, s.ID+":"+string(d.Msg.Payload))
		}
	}
	if want := []string{"stale:0", "stale:1", "stale:2"}; !slices.Equal(got, want) {
		t.Fatalf("stored %v, want %v", got, want)
	}
}
