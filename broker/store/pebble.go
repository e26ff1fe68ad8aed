package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"

	"github.com/cockroachdb/pebble/v2"

	"github.com/mqtt-operator/mqtt-operator/broker/session"
)

// Key prefixes in the node's pebble database.
const (
	prefixRetained = "retained/"
	prefixSession  = "session/"
	// prefixQueued holds one record per delivery queued for a stored session:
	// queueKey(client ID, StoreSeq).
	prefixQueued = "queued/"
	// keyFormat holds the store's Format, written when the store is created.
	keyFormat = "meta/format"
)

// Format is the layout of the keys and records this mqttd reads and writes. A store
// with a higher one was written by a newer mqttd: it is refused (ErrFormat), never
// read half-understood. Raise it with a change that an older mqttd cannot read, and
// migrate the older formats in migrate.
//
//  1. A session is one record holding its whole queue.
//  2. A session record holds no queue: each queued delivery is its own record under
//     prefixQueued, written without rewriting the rest.
const Format = 2

// ErrFormat means the store was written by a newer mqttd (its format is higher than Format).
var ErrFormat = errors.New("store format too new")

// Pebble is a Store in an embedded pebble database under one directory: the node's
// durable state across restarts. Writes are synced; session writes go through one
// writer that commits whatever was handed to it while the previous commit synced as
// one batch (group commit), in the order it was handed over.
type Pebble struct {
	db  *pebble.DB
	dir string
	log *slog.Logger
	w   *writer
}

// OpenPebble opens (or creates) the store in dir. An error means the directory cannot
// hold a store: mqttd must not start without its state.
func OpenPebble(dir string, log *slog.Logger) (*Pebble, error) {
	db, err := pebble.Open(dir, &pebble.Options{Logger: pebbleLogger{log}})
	if err != nil {
		return nil, fmt.Errorf("opening the store in %s: %w", dir, err)
	}
	p := &Pebble{db: db, dir: dir, log: log}
	f, err := p.checkFormat()
	switch {
	case err != nil:
	case f == 0: // a new store
		err = p.writeFormat()
	case f < Format:
		err = p.migrate(f)
	}
	if err != nil {
		return nil, errors.Join(err, db.Close())
	}
	p.w = startWriter(db)
	return p, nil
}

// checkFormat returns the store's format, 0 for a new (empty) one, and refuses a
// newer one. A store with keys and no format is from before formats were recorded:
// format 1.
func (p *Pebble) checkFormat() (int, error) {
	v, closer, err := p.db.Get([]byte(keyFormat))
	switch {
	case errors.Is(err, pebble.ErrNotFound):
		it, err := p.db.NewIter(nil)
		if err != nil {
			return 0, err
		}
		empty := !it.First()
		if err := errors.Join(it.Error(), it.Close()); err != nil {
			return 0, fmt.Errorf("reading the store in %s: %w", p.dir, err)
		}
		if empty {
			return 0, nil
		}
		return 1, nil
	case err != nil:
		return 0, fmt.Errorf("reading the store format in %s: %w", p.dir, err)
	}
	defer func() { _ = closer.Close() }()
	f, err := strconv.Atoi(string(v))
	if err != nil || f < 1 {
		return 0, fmt.Errorf("%w: the store in %s has format %q, not one mqttd writes", ErrFormat, p.dir, v)
	}
	if f > Format {
		return 0, fmt.Errorf("%w: the store in %s has format %d, written by a newer mqttd; this one reads up to %d", ErrFormat, p.dir, f, Format)
	}
	return f, nil
}

// migrate rewrites a store of format from (older than Format) in this one's: one
// batch per session (a store may hold gigabytes of queued messages: never one
// batch), then the new format, synced. A crash leaves each session whole in one
// format or the other and the store at the old format: opening it again goes on
// where it stopped (a session already migrated holds no queue inside).
func (p *Pebble) migrate(from int) error {
	moved := 0
	if from < 2 { // sessions with their queue inside: the queue moves to its own records
		err := p.scan(prefixSession, func(key string, value []byte) error {
			snap, err := decodeSession(value)
			if err != nil {
				return fmt.Errorf("migrating session %q: %w", key, err)
			}
			if len(snap.Queue) == 0 {
				return nil
			}
			for i, d := range snap.Queue {
				d.StoreSeq = uint64(i)
			}
			recs, err := sessionRecords(snap)
			if err != nil {
				return fmt.Errorf("migrating session %q: %w", key, err)
			}
			b := p.db.NewBatch()
			err = recs.apply(b)
			if err == nil {
				err = b.Commit(pebble.NoSync) // synced with the format below
			}
			moved += len(snap.Queue)
			return errors.Join(err, b.Close())
		})
		if err != nil {
			return fmt.Errorf("migrating the store in %s to format %d: %w", p.dir, Format, err)
		}
	}
	if err := p.writeFormat(); err != nil {
		return err
	}
	p.log.Info("store migrated", "dir", p.dir, "from", from, "to", Format, "queuedMessages", moved)
	return nil
}

func (p *Pebble) writeFormat() error {
	if err := p.db.Set([]byte(keyFormat), []byte(strconv.Itoa(Format)), pebble.Sync); err != nil {
		return fmt.Errorf("writing the store format in %s: %w", p.dir, err)
	}
	return nil
}

// Compact compacts the whole database and returns when that is done: after a bulk
// load (a benchmark filling the store), so that what comes next does not pay for
// the load's compactions.
func (p *Pebble) Compact(ctx context.Context) error {
	if err := p.w.flush(); err != nil {
		return err
	}
	return p.db.Compact(ctx, []byte{0}, []byte{0xFF}, true)
}

// Dir returns the directory the store was opened in.
func (p *Pebble) Dir() string { return p.dir }

// Wipe deletes every key in the database, whatever its prefix (retained messages,
// sessions, raft state), in one synced range deletion: the cluster "reset" verb. The
// range runs from the first key to just past the last one, so it covers every key
// there is; a key written concurrently may survive, so the caller stops writers first.
// (The range does not start at the empty key: pebble v2.1.7 mishandles a range
// tombstone starting there when the iterator seeks to its end, an invariant failure
// under -race.)
func (p *Pebble) Wipe() (err error) {
	if err := p.w.flush(); err != nil { // nothing handed to the writer lands after the wipe
		return err
	}
	it, err := p.db.NewIter(nil)
	if err != nil {
		return err
	}
	var start, end []byte
	if it.First() {
		start = append([]byte{}, it.Key()...)
	}
	if it.Last() {
		end = append(append([]byte{}, it.Key()...), 0) // the smallest key after the last one
	}
	if err := errors.Join(it.Error(), it.Close()); err != nil || end == nil {
		return err
	}
	b := p.db.NewBatch()
	defer func() { err = errors.Join(err, b.Close()) }()
	if err := b.DeleteRange(start, end, nil); err != nil {
		return err
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("wiping the store in %s: %w", p.dir, err)
	}
	return p.writeFormat() // the range took the format key along
}

// PutRetained implements Store.
func (p *Pebble) PutRetained(msg *session.Message) error {
	return p.db.Set([]byte(prefixRetained+msg.Topic), encodeMessage(msg), pebble.Sync)
}

// DeleteRetained implements Store.
func (p *Pebble) DeleteRetained(topic string) error {
	return p.db.Delete([]byte(prefixRetained+topic), pebble.Sync)
}

// Retained implements Store. A record that does not decode is an error naming it: a
// broken store is reported, not silently skipped.
func (p *Pebble) Retained() ([]*session.Message, error) {
	var out []*session.Message
	err := p.scan(prefixRetained, func(key string, value []byte) error {
		m, err := decodeMessage(value)
		if err != nil {
			return fmt.Errorf("retained message %q: %w", key, err)
		}
		out = append(out, m)
		return nil
	})
	return out, err
}

// WriteSession implements Store: the session record and its queue replace
// everything stored for the session. The records are encoded before they are
// handed to the writer: its lock is held only to add them to the batch.
func (p *Pebble) WriteSession(snap session.Snapshot) *Commit {
	recs, err := sessionRecords(snap)
	if err != nil {
		return Failed(fmt.Errorf("session %q: %w", snap.ID, err))
	}
	return p.w.submit(recs.apply)
}

// records are the writes that replace every record of one session.
type records struct {
	id    string
	meta  []byte
	queue [][2][]byte // key, value
}

// sessionRecords encodes snap as records: the session without its queue, and one
// record per queued delivery under its StoreSeq.
func sessionRecords(snap session.Snapshot) (records, error) {
	queue := snap.Queue
	snap.Queue = nil
	meta, err := encodeSession(snap)
	if err != nil {
		return records{}, err
	}
	r := records{id: snap.ID, meta: meta, queue: make([][2][]byte, len(queue))}
	for i, d := range queue {
		r.queue[i] = [2][]byte{queueKey(snap.ID, d.StoreSeq), encodeDelivery(d)}
	}
	return r, nil
}

// apply adds r to b: the session's range deleted first.
func (r records) apply(b *pebble.Batch) error {
	lo, hi := queueRange(r.id)
	if err := errors.Join(b.Set([]byte(prefixSession+r.id), r.meta, nil), b.DeleteRange(lo, hi, nil)); err != nil {
		return err
	}
	for _, kv := range r.queue {
		if err := b.Set(kv[0], kv[1], nil); err != nil {
			return err
		}
	}
	return nil
}

// WriteQueued implements Store. The records are encoded now: the session goes on
// changing added.
func (p *Pebble) WriteQueued(clientID string, added *session.Delivery, dropped []uint64) *Commit {
	var rec []byte
	if added != nil {
		rec = encodeDelivery(added)
	}
	return p.w.submit(func(b *pebble.Batch) error {
		for _, seq := range dropped {
			if err := b.Delete(queueKey(clientID, seq), nil); err != nil {
				return err
			}
		}
		if added == nil {
			return nil
		}
		return b.Set(queueKey(clientID, added.StoreSeq), rec, nil)
	})
}

// DeleteSession implements Store.
func (p *Pebble) DeleteSession(clientID string) error {
	return p.w.submit(func(b *pebble.Batch) error {
		lo, hi := queueRange(clientID)
		return errors.Join(b.Delete([]byte(prefixSession+clientID), nil), b.DeleteRange(lo, hi, nil))
	}).Wait()
}

// Sessions implements Store. Queued records of no stored session (a session whose
// save failed went on queueing) are skipped and logged, and left on disk. It reads sessions and
// queued records in two passes, not from one snapshot: it is for the start, before
// anything writes.
func (p *Pebble) Sessions() ([]session.Snapshot, error) {
	if err := p.w.flush(); err != nil {
		return nil, err
	}
	var out []session.Snapshot
	index := make(map[string]int)
	err := p.scan(prefixSession, func(key string, value []byte) error {
		s, err := decodeSession(value)
		if err != nil {
			return fmt.Errorf("session %q: %w", key, err)
		}
		if len(s.Queue) > 0 {
			return fmt.Errorf("session %q: %w: a queue inside the session record in a format %d store", key, errFormat, Format)
		}
		index[s.ID] = len(out)
		out = append(out, s)
		return nil
	})
	if err != nil {
		return nil, err
	}
	orphans := 0
	err = p.scanRaw(prefixQueued, func(key, value []byte) error {
		id, seq, ok := parseQueueKey(key)
		if !ok {
			return fmt.Errorf("queued record %q: %w: a malformed key", key, errFormat)
		}
		i, ok := index[id]
		if !ok {
			orphans++
			return nil
		}
		d, err := decodeDelivery(value)
		if err != nil {
			return fmt.Errorf("session %q, queued message %d: %w", id, seq, err)
		}
		d.StoreSeq = seq
		out[i].Queue = append(out[i].Queue, d)
		return nil
	})
	if err == nil && orphans > 0 {
		// Kept, not deleted: nothing a single failed write did is undone by a rule
		// at start; DeleteSession of that client ID removes them.
		p.log.Warn("queued messages of no stored session in the store, left in place", "dir", p.dir, "records", orphans)
	}
	return out, err
}

// Close implements Store: what was handed to the writer is committed first.
func (p *Pebble) Close() error {
	return errors.Join(p.w.close(), p.db.Close())
}

// queueKey is the key of the record of session id's delivery seq: the client ID
// behind its length, so one session's keys are a range no other's falls into, and
// the number big-endian, so they sort in queue order.
func queueKey(id string, seq uint64) []byte {
	k := make([]byte, 0, len(prefixQueued)+binary.MaxVarintLen64+len(id)+8)
	k = append(k, prefixQueued...)
	k = binary.AppendUvarint(k, uint64(len(id)))
	k = append(k, id...)
	return binary.BigEndian.AppendUint64(k, seq)
}

// queueRange is the key range of session id's queue, [lo, hi).
func queueRange(id string) (lo, hi []byte) {
	lo = queueKey(id, 0)
	hi = slices.Concat(lo[:len(lo)-8], []byte{0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF})
	return lo, hi
}

func parseQueueKey(k []byte) (id string, seq uint64, ok bool) {
	k = k[len(prefixQueued):]
	n, w := binary.Uvarint(k)
	var canonical [binary.MaxVarintLen64]byte
	if w <= 0 || w != binary.PutUvarint(canonical[:], n) || n > uint64(len(k)-w) || uint64(len(k)-w)-n != 8 {
		return "", 0, false
	}
	return string(k[w : w+int(n)]), binary.BigEndian.Uint64(k[w+int(n):]), true
}

// scan calls fn for every key with prefix (and the key without it), in key order.
func (p *Pebble) scan(prefix string, fn func(key string, value []byte) error) error {
	return p.scanRaw(prefix, func(key, value []byte) error { return fn(string(key[len(prefix):]), value) })
}

// scanRaw calls fn for every key with prefix, in key order; key and value are valid
// only during the call.
func (p *Pebble) scanRaw(prefix string, fn func(key, value []byte) error) (err error) {
	it, err := p.db.NewIter(&pebble.IterOptions{LowerBound: []byte(prefix), UpperBound: prefixEnd(prefix)})
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, it.Close()) }()
	for ok := it.First(); ok; ok = it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			return err
		}
		if err := fn(it.Key(), v); err != nil {
			return err
		}
	}
	return it.Error()
}

// prefixEnd is the smallest key greater than every key with prefix (prefix ends in
// '/', so incrementing its last byte is enough).
func prefixEnd(prefix string) []byte {
	b := []byte(prefix)
	b[len(b)-1]++
	return b
}

// pebbleLogger sends pebble's log lines to slog.
type pebbleLogger struct{ log *slog.Logger }

func (l pebbleLogger) Infof(format string, args ...any) {
	l.log.Debug(fmt.Sprintf(format, args...), "component", "pebble")
}

func (l pebbleLogger) Errorf(format string, args ...any) {
	l.log.Error(fmt.Sprintf(format, args...), "component", "pebble")
}

func (l pebbleLogger) Fatalf(format string, args ...any) {
	l.log.Error(fmt.Sprintf(format, args...), "component", "pebble")
	panic(fmt.Sprintf(format, args...))
}
