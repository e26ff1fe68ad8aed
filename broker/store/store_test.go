package store

import (
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/mqtt-operator/mqtt-operator/broker/packet"
	"github.com/mqtt-operator/mqtt-operator/broker/session"
	"github.com/mqtt-operator/mqtt-operator/broker/topic"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func richMessage() *session.Message {
	m := &session.Message{Topic: "a/b", Payload: []byte("payload\x00bin"), QoS: 2, Retain: true,
		Expiry: time.Unix(1900000000, 123).UTC(), Publisher: "pub-1"}
	m.Properties.ContentType = "text/plain"
	m.Properties.Set(packet.PropContentType)
	m.Properties.ResponseTopic = "reply/here"
	m.Properties.Set(packet.PropResponseTopic)
	m.Properties.CorrelationData = []byte{1, 2, 3}
	m.Properties.Set(packet.PropCorrelationData)
	m.Properties.PayloadFormat = 1
	m.Properties.Set(packet.PropPayloadFormat)
	m.Properties.User = []packet.UserProperty{{Key: "k", Value: "v"}, {Key: "k", Value: "v2"}}
	return m
}

func richSession() session.Snapshot {
	m := richMessage()
	plain := &session.Message{Topic: "q/1", Payload: []byte("x"), QoS: 1}
	return session.Snapshot{
		ID: "client-1", Expiry: 3600, Disconnected: time.Unix(1800000000, 0).UTC(),
		Subscriptions: map[string]topic.Subscription{
			"a/+":          {ClientID: "client-1", Filter: "a/+", QoS: 2, NoLocal: true, RetainAsPublished: true, RetainHandling: 1, Identifier: 7},
			"$share/g/q/#": {ClientID: "client-1", Filter: "q/#", ShareGroup: "g", QoS: 1},
		},
		Queue: []*session.Delivery{
			{Msg: m, QoS: 2, PacketID: 5, Dup: true, Released: true, SubIDs: []uint32{7}},
			{Msg: plain, QoS: 1, Retain: true},
		},
		Inbound: []uint16{9, 10},
	}
}

// stores runs a test against every implementation, each opened fresh.
func stores(t *testing.T, test func(t *testing.T, s Store, reopen func() Store)) {
	t.Run("memory", func(t *testing.T) {
		m := NewMemory()
		test(t, m, func() Store { return m })
	})
	t.Run("pebble", func(t *testing.T) {
		dir := t.TempDir()
		p, err := OpenPebble(dir, quiet)
		if err != nil {
			t.Fatal(err)
		}
		cur := Store(p)
		t.Cleanup(func() { _ = cur.Close() })
		test(t, p, func() Store {
			if err := cur.Close(); err != nil {
				t.Fatal(err)
			}
			p, err := OpenPebble(dir, quiet)
			if err != nil {
				t.Fatal(err)
			}
			cur = p
			return p
		})
	})
}

// TestStoreRoundTrip writes retained messages and sessions, reopens the store (a
// process restart for pebble) and reads back exactly what was written.
func TestStoreRoundTrip(t *testing.T) {
	stores(t, func(t *testing.T, s Store, reopen func() Store) {
		m := richMessage()
		other := &session.Message{Topic: "z", Payload: []byte("1"), Retain: true}
		for _, msg := range []*session.Message{m, other, {Topic: "gone", Payload: []byte("x"), Retain: true}} {
			if err := s.PutRetained(msg); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.DeleteRetained("gone"); err != nil {
			t.Fatal(err)
		}
		snap := richSession()
		if err := s.SaveSession(snap); err != nil {
			t.Fatal(err)
		}
		if err := s.SaveSession(session.Snapshot{ID: "short-lived"}); err != nil {
			t.Fatal(err)
		}
		if err := s.DeleteSession("short-lived"); err != nil {
			t.Fatal(err)
		}

		s = reopen()
		got, err := s.Retained()
		if err != nil {
			t.Fatal(err)
		}
		sort.Slice(got, func(i, j int) bool { return got[i].Topic < got[j].Topic })
		if len(got) != 2 || !reflect.DeepEqual(got[0], m) || !reflect.DeepEqual(got[1], other) {
			t.Fatalf("retained after reopen:\n%+v\n%+v\nwant\n%+v\n%+v", got[0], got[1], m, other)
		}
		sessions, err := s.Sessions()
		if err != nil {
			t.Fatal(err)
		}
		if len(sessions) != 1 || !reflect.DeepEqual(sessions[0], snap) {
			t.Fatalf("sessions after reopen:\n%+v\nwant\n%+v", sessions, snap)
		}
	})
}

// TestPebbleBrokenRecord: a record that does not decode makes the read fail with an
// error naming it (mqttd then refuses to start) instead of being skipped.
func TestPebbleBrokenRecord(t *testing.T) {
	dir := t.TempDir()
	db, err := pebble.Open(dir, &pebble.Options{Logger: pebbleLogger{quiet}})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Set([]byte(prefixRetained+"bad/topic"), []byte{messageFormat, 0, 0}, pebble.Sync); err != nil {
		t.Fatal(err)
	}
	if err := db.Set([]byte(prefixSession+"bad-client"), []byte("{not json"), pebble.Sync); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	p, err := OpenPebble(dir, quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = p.Close() }()
	if _, err := p.Retained(); err == nil || !strings.Contains(err.Error(), `"bad/topic"`) {
		t.Fatalf("Retained with a broken record: %v", err)
	}
	if _, err := p.Sessions(); err == nil || !strings.Contains(err.Error(), `"bad-client"`) {
		t.Fatalf("Sessions with a broken record: %v", err)
	}
}

// TestPebbleOpenFails: a directory that cannot hold a store is an error naming it.
func TestPebbleOpenFails(t *testing.T) {
	file := filepath.Join(t.TempDir(), "not-a-dir")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenPebble(file, quiet); err == nil || !strings.Contains(err.Error(), file) {
		t.Fatalf("OpenPebble on a file: %v", err)
	}
	// A store in use by another process (pebble's lock file) cannot be opened twice.
	dir := t.TempDir()
	p, err := OpenPebble(dir, quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = p.Close() }()
	if _, err := OpenPebble(dir, quiet); err == nil {
		t.Fatal("opened a store that is already open")
	}
}

func TestMessageCodecRejectsGarbage(t *testing.T) {
	good := encodeMessage(richMessage())
	for name, b := range map[string][]byte{
		"empty":          nil,
		"unknown format": append([]byte{99}, good[1:]...),
		"truncated":      good[:len(good)-3],
		"trailing bytes": append(append([]byte{}, good...), 0),
	} {
		if _, err := decodeMessage(b); err == nil {
			t.Errorf("%s: decoded", name)
		}
	}
}

// TestPebbleFormat: a new store records its format; a store of a newer format (a newer
// mqttd wrote it) is refused with ErrFormat and left as it was; a wipe keeps the format.
func TestPebbleFormat(t *testing.T) {
	dir := t.TempDir()
	p, err := OpenPebble(dir, quiet)
	if err != nil {
		t.Fatal(err)
	}
	v, closer, err := p.db.Get([]byte(keyFormat))
	if err != nil || string(v) != strconv.Itoa(Format) {
		t.Fatalf("format key %q, %v; want %d", v, err, Format)
	}
	_ = closer.Close()
	if err := p.Wipe(); err != nil {
		t.Fatal(err)
	}
	if v, closer, err := p.db.Get([]byte(keyFormat)); err != nil || string(v) != strconv.Itoa(Format) {
		t.Fatalf("after a wipe: format key %q, %v", v, err)
	} else {
		_ = closer.Close()
	}
	for _, f := range []string{strconv.Itoa(Format + 1), "x"} {
		if err := p.db.Set([]byte(keyFormat), []byte(f), pebble.Sync); err != nil {
			t.Fatal(err)
		}
		if err := p.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := OpenPebble(dir, quiet); !errors.Is(err, ErrFormat) || !strings.Contains(err.Error(), dir) {
			t.Fatalf("format %q: OpenPebble error %v, want ErrFormat naming %s", f, err, dir)
		}
		// Refused without a write: reopening the database shows the same format.
		db, err := pebble.Open(dir, &pebble.Options{Logger: pebbleLogger{quiet}})
		if err != nil {
			t.Fatal(err)
		}
		p = &Pebble{db: db, dir: dir}
		if v, closer, err := db.Get([]byte(keyFormat)); err != nil || string(v) != f {
			t.Fatalf("the refused store's format became %q (%v)", v, err)
		} else {
			_ = closer.Close()
		}
	}
	_ = p.Close()
}
