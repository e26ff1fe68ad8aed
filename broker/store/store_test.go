package store

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"
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
			{Msg: plain, QoS: 1, Retain: true, StoreSeq: 1},
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
		if err := SaveSession(s, snap); err != nil {
			t.Fatal(err)
		}
		if err := SaveSession(s, session.Snapshot{ID: "short-lived"}); err != nil {
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
	good, err := encodeSession(session.Snapshot{ID: "good-client"})
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string][]byte{
		prefixRetained + "bad/topic":  {messageFormat, 0, 0},
		prefixSession + "bad-client":  []byte("{not json"),
		prefixSession + "good-client": good,
	} {
		if err := db.Set([]byte(k), v, pebble.Sync); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	// A format 1 store is migrated when opened: its broken session stops that.
	if _, err := OpenPebble(dir, quiet); err == nil || errors.Is(err, ErrFormat) || !strings.Contains(err.Error(), `"bad-client"`) {
		t.Fatalf("OpenPebble of a format 1 store with a broken session: %v, want an error naming it", err)
	}

	db, err = pebble.Open(dir, &pebble.Options{Logger: pebbleLogger{quiet}})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Set([]byte(keyFormat), []byte(strconv.Itoa(Format)), pebble.Sync); err != nil {
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
	if err := p.DeleteSession("bad-client"); err != nil {
		t.Fatal(err)
	}
	// A broken queued message is named by its session and number.
	if err := p.db.Set(queueKey("good-client", 7), []byte{deliveryFormat, 1, 0, 0}, pebble.Sync); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Sessions(); err == nil || !strings.Contains(err.Error(), `"good-client", queued message 7`) {
		t.Fatalf("Sessions with a broken queued record: %v", err)
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
		p = &Pebble{db: db, dir: dir, log: quiet, w: startWriter(db)}
		if v, closer, err := db.Get([]byte(keyFormat)); err != nil || string(v) != f {
			t.Fatalf("the refused store's format became %q (%v)", v, err)
		} else {
			_ = closer.Close()
		}
	}
	_ = p.Close()
}

// TestQueuedRecords: messages queued for a stored session are written one by one
// (WriteQueued), the ones dropped deleted, and read back after a reopen in order
// with the rest of the session; a rewrite replaces them all, a delete removes them.
func TestQueuedRecords(t *testing.T) {
	stores(t, func(t *testing.T, s Store, reopen func() Store) {
		snap := richSession() // StoreSeq 0 and 1
		if err := SaveSession(s, snap); err != nil {
			t.Fatal(err)
		}
		msg := func(i int) *session.Delivery {
			return &session.Delivery{Msg: &session.Message{Topic: "q/" + strconv.Itoa(i), Payload: []byte{byte(i)}, QoS: 1,
				ID: session.MessageID{Origin: 99, Seq: uint64(i)}}, QoS: 1, SubIDs: []uint32{uint32(i + 1)}, StoreSeq: uint64(i)}
		}
		var commits []*Commit
		for i := 2; i < 6; i++ {
			var dropped []uint64
			if i == 4 {
				dropped = []uint64{0, 1} // a full queue made room for 4
			}
			commits = append(commits, s.WriteQueued(snap.ID, msg(i), dropped))
		}
		commits = append(commits, s.WriteQueued(snap.ID, nil, []uint64{2}), s.WriteQueued("not-stored", msg(1), nil))
		for _, c := range commits {
			if err := c.Wait(); err != nil {
				t.Fatal(err)
			}
		}
		want := snap
		want.Queue = []*session.Delivery{msg(3), msg(4), msg(5)}
		s = reopen()
		got, err := s.Sessions()
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 1 || !reflect.DeepEqual(got[0], want) {
			t.Fatalf("after queueing and a reopen:\n%+v\nwant\n%+v", got, want)
		}

		// A rewrite replaces every queued record; nothing of the session is left after a delete.
		want.Queue = []*session.Delivery{msg(0)}
		if err := SaveSession(s, want); err != nil {
			t.Fatal(err)
		}
		s = reopen()
		if got, err := s.Sessions(); err != nil || len(got) != 1 || !reflect.DeepEqual(got[0], want) {
			t.Fatalf("after a rewrite: %+v, %v; want %+v", got, err, want)
		}
		if err := s.DeleteSession(want.ID); err != nil {
			t.Fatal(err)
		}
		s = reopen()
		if got, err := s.Sessions(); err != nil || len(got) != 0 {
			t.Fatalf("after a delete: %+v, %v", got, err)
		}
		if p, ok := s.(*Pebble); ok {
			lo, _ := queueRange(want.ID)
			if n := countKeys(t, p, string(lo[:len(lo)-8])); n != 0 {
				t.Fatalf("%d queued records of the deleted session left", n)
			}
		}
	})
}

func countKeys(t *testing.T, p *Pebble, prefix string) int {
	t.Helper()
	n := 0
	if err := p.scanRaw(prefix, func(_, _ []byte) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestWriterOrderAndConcurrency: writes from many goroutines all land, each caller's
// in the order made, a later rewrite wins over earlier queued records, and a queued
// record of no stored session is not read back, and not deleted either.
func TestWriterOrderAndConcurrency(t *testing.T) {
	dir := t.TempDir()
	p, err := OpenPebble(dir, quiet)
	if err != nil {
		t.Fatal(err)
	}
	const sessions, perSession = 16, 50
	var wg sync.WaitGroup
	errs := make(chan error, sessions*perSession)
	for i := range sessions {
		wg.Go(func() {
			id := "s" + strconv.Itoa(i)
			if err := SaveSession(p, session.Snapshot{ID: id}); err != nil {
				errs <- err
				return
			}
			for j := range perSession {
				d := &session.Delivery{Msg: &session.Message{Topic: "t", QoS: 1}, QoS: 1, StoreSeq: uint64(j)}
				var drop []uint64
				if j >= 10 {
					drop = []uint64{uint64(j - 10)} // keeps the last 10
				}
				if err := p.WriteQueued(id, d, drop).Wait(); err != nil {
					errs <- err
				}
			}
			if i%2 == 0 { // a rewrite after the queued records: they go
				if err := SaveSession(p, session.Snapshot{ID: id}); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// An orphan: queued for a session that was never stored.
	if err := p.WriteQueued("ghost", &session.Delivery{Msg: &session.Message{Topic: "t", QoS: 1}, QoS: 1}, nil).Wait(); err != nil {
		t.Fatal(err)
	}
	snaps, err := p.Sessions()
	if err != nil {
		t.Fatal(err)
	}
	if len(snaps) != sessions {
		t.Fatalf("%d sessions, want %d", len(snaps), sessions)
	}
	for _, s := range snaps {
		i, _ := strconv.Atoi(s.ID[1:])
		want := 10
		if i%2 == 0 {
			want = 0
		}
		if len(s.Queue) != want {
			t.Fatalf("session %s: %d queued, want %d", s.ID, len(s.Queue), want)
		}
		for k, d := range s.Queue {
			if d.StoreSeq != uint64(perSession-want+k) {
				t.Fatalf("session %s: queue position %d holds %d", s.ID, k, d.StoreSeq)
			}
		}
	}
	if n := countKeys(t, p, prefixQueued); n != sessions/2*10+1 {
		t.Fatalf("%d queued records, want %d (the orphan kept, not read back)", n, sessions/2*10+1)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.WriteQueued("s1", nil, []uint64{1}).Wait(); !errors.Is(err, errClosed) {
		t.Fatalf("a write after Close: %v, want errClosed", err)
	}
}

// TestMigrateFormat1: a store of format 1 (each session one record with its queue
// inside, no format key) is rewritten at open: the queue becomes records numbered
// in order, the session reads back the same, the store says Format, and opening it
// again changes nothing.
func TestMigrateFormat1(t *testing.T) {
	dir := t.TempDir()
	db, err := pebble.Open(dir, &pebble.Options{Logger: pebbleLogger{quiet}})
	if err != nil {
		t.Fatal(err)
	}
	legacy := richSession()
	for _, d := range legacy.Queue {
		d.StoreSeq = 0 // format 1 has no numbers
	}
	v, err := encodeSession(legacy) // the queue inside, as format 1 wrote it
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Set([]byte(prefixSession+legacy.ID), v, pebble.Sync); err != nil {
		t.Fatal(err)
	}
	// A session an interrupted migration had moved already: left as it is.
	done := session.Snapshot{ID: "done", Queue: []*session.Delivery{{Msg: &session.Message{Topic: "d", QoS: 1}, QoS: 1, StoreSeq: 7}}}
	recs, err := sessionRecords(done)
	if err != nil {
		t.Fatal(err)
	}
	b := db.NewBatch()
	if err := recs.apply(b); err != nil {
		t.Fatal(err)
	}
	if err := errors.Join(b.Commit(pebble.Sync), b.Close(), db.Close()); err != nil {
		t.Fatal(err)
	}
	want := richSession() // numbered 0 and 1
	for range 2 {
		p, err := OpenPebble(dir, quiet)
		if err != nil {
			t.Fatal(err)
		}
		if f, err := p.checkFormat(); err != nil || f != Format {
			t.Fatalf("format after migration: %d, %v", f, err)
		}
		got, err := p.Sessions()
		if err != nil {
			t.Fatal(err)
		}
		sort.Slice(got, func(i, j int) bool { return got[i].ID < got[j].ID })
		if len(got) != 2 || !reflect.DeepEqual(got[0], want) || got[1].ID != "done" || len(got[1].Queue) != 1 ||
			got[1].Queue[0].StoreSeq != 7 || got[1].Queue[0].Msg.Topic != "d" {
			t.Fatalf("migrated sessions:\n%+v\nwant\n%+v\nand the one migrated before as it was", got, want)
		}
		if n := countKeys(t, p, prefixQueued); n != 3 {
			t.Fatalf("%d queued records, want 3", n)
		}
		if err := p.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestDeliveryCodec: a delivery record reads back as written; truncated or
// altered ones are errors, never a panic.
func TestDeliveryCodec(t *testing.T) {
	d := richSession().Queue[0]
	d.Shared = true
	d.Msg.ID = session.MessageID{Origin: 1 << 60, Seq: 12345}
	b := encodeDelivery(d)
	got, err := decodeDelivery(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, d) {
		t.Fatalf("decoded\n%+v\nwant\n%+v", got, d)
	}
	for i := range b {
		if _, err := decodeDelivery(b[:i]); err == nil {
			t.Fatalf("a record cut to %d of %d bytes decoded", i, len(b))
		}
	}
	for _, bad := range [][]byte{
		append([]byte{deliveryFormat + 1}, b[1:]...),        // unknown format
		append([]byte{deliveryFormat, 3}, b[2:]...),         // QoS 3
		append(b[:5:5], 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F), // 2^32-1 subscription identifiers
	} {
		if _, err := decodeDelivery(bad); err == nil {
			t.Fatalf("decoded %x", bad)
		}
	}
}

// FuzzParseQueueKey: any key under the prefix parses or is refused, never panics,
// and what parses is what queueKey writes.
func FuzzParseQueueKey(f *testing.F) {
	f.Add(queueKey("client-1", 42)[len(prefixQueued):])
	f.Add([]byte{0xf8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}) // a length near 2^64
	f.Fuzz(func(t *testing.T, rest []byte) {
		key := append([]byte(prefixQueued), rest...)
		id, seq, ok := parseQueueKey(key)
		if ok && !bytes.Equal(queueKey(id, seq), key) {
			t.Fatalf("%x parsed as %q %d, which is written %x", key, id, seq, queueKey(id, seq))
		}
	})
}

func FuzzDecodeDelivery(f *testing.F) {
	f.Add(encodeDelivery(richSession().Queue[0]))
	f.Add(encodeDelivery(richSession().Queue[1]))
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := decodeDelivery(b)
		if err != nil {
			return
		}
		again, err := decodeDelivery(encodeDelivery(d))
		if err != nil {
			t.Fatalf("a decoded record does not decode once re-encoded: %v", err)
		}
		if again.QoS != d.QoS || again.Msg.Topic != d.Msg.Topic || len(again.SubIDs) != len(d.SubIDs) {
			t.Fatalf("re-encoded %+v as %+v", d, again)
		}
	})
}

// TestMigrationLogged: opening an older store logs its migration; a new store has
// nothing to migrate and logs none (the e2e upgrade spec relies on the line).
func TestMigrationLogged(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	fresh, err := OpenPebble(t.TempDir(), log)
	if err != nil {
		t.Fatal(err)
	}
	if err := fresh.Close(); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(buf.String(), "store migrated") {
		t.Fatalf("a new store logged a migration:\n%s", buf.String())
	}
	dir := t.TempDir()
	db, err := pebble.Open(dir, &pebble.Options{Logger: pebbleLogger{quiet}})
	if err != nil {
		t.Fatal(err)
	}
	if err := errors.Join(db.Set([]byte(keyFormat), []byte("1"), pebble.Sync), db.Close()); err != nil {
		t.Fatal(err)
	}
	old, err := OpenPebble(dir, log)
	if err != nil {
		t.Fatal(err)
	}
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "store migrated") || !strings.Contains(buf.String(), "from=1") {
		t.Fatalf("a format 1 store's migration was not logged:\n%s", buf.String())
	}
}
