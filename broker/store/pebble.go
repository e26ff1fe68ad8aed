package store

import (
	"errors"
	"fmt"
	"log/slog"
	"strconv"

	"github.com/cockroachdb/pebble/v2"

	"github.com/mqtt-operator/mqtt-operator/broker/session"
)

// Key prefixes in the node's pebble database.
const (
	prefixRetained = "retained/"
	prefixSession  = "session/"
	// keyFormat holds the store's Format, written when the store is created.
	keyFormat = "meta/format"
)

// Format is the layout of the keys and records this mqttd reads and writes. A store
// with a higher one was written by a newer mqttd: it is refused (ErrFormat), never
// read half-understood. Raise it with a change that an older mqttd cannot read.
const Format = 1

// ErrFormat means the store was written by a newer mqttd (its format is higher than Format).
var ErrFormat = errors.New("store format too new")

// Pebble is a Store in an embedded pebble database under one directory: the node's
// durable state across restarts. Writes are synced; pebble commits concurrent synced
// writes as one group, so many clients saving at once cost one fsync.
type Pebble struct {
	db  *pebble.DB
	dir string
}

// OpenPebble opens (or creates) the store in dir. An error means the directory cannot
// hold a store: mqttd must not start without its state.
func OpenPebble(dir string, log *slog.Logger) (*Pebble, error) {
	db, err := pebble.Open(dir, &pebble.Options{Logger: pebbleLogger{log}})
	if err != nil {
		return nil, fmt.Errorf("opening the store in %s: %w", dir, err)
	}
	p := &Pebble{db: db, dir: dir}
	if err := p.checkFormat(); err != nil {
		return nil, errors.Join(err, db.Close())
	}
	return p, nil
}

// checkFormat refuses a store of a newer format and records Format in one without
// any (a new store, or one from before formats were recorded: format 1).
func (p *Pebble) checkFormat() error {
	v, closer, err := p.db.Get([]byte(keyFormat))
	switch {
	case errors.Is(err, pebble.ErrNotFound):
		return p.writeFormat()
	case err != nil:
		return fmt.Errorf("reading the store format in %s: %w", p.dir, err)
	}
	defer func() { _ = closer.Close() }()
	f, err := strconv.Atoi(string(v))
	if err != nil {
		return fmt.Errorf("%w: the store in %s has format %q, not a number", ErrFormat, p.dir, v)
	}
	if f > Format {
		return fmt.Errorf("%w: the store in %s has format %d, written by a newer mqttd; this one reads up to %d", ErrFormat, p.dir, f, Format)
	}
	return nil
}

func (p *Pebble) writeFormat() error {
	if err := p.db.Set([]byte(keyFormat), []byte(strconv.Itoa(Format)), pebble.Sync); err != nil {
		return fmt.Errorf("writing the store format in %s: %w", p.dir, err)
	}
	return nil
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

// SaveSession implements Store.
func (p *Pebble) SaveSession(snap session.Snapshot) error {
	b, err := encodeSession(snap)
	if err != nil {
		return err
	}
	return p.db.Set([]byte(prefixSession+snap.ID), b, pebble.Sync)
}

// DeleteSession implements Store.
func (p *Pebble) DeleteSession(clientID string) error {
	return p.db.Delete([]byte(prefixSession+clientID), pebble.Sync)
}

// Sessions implements Store.
func (p *Pebble) Sessions() ([]session.Snapshot, error) {
	var out []session.Snapshot
	err := p.scan(prefixSession, func(key string, value []byte) error {
		s, err := decodeSession(value)
		if err != nil {
			return fmt.Errorf("session %q: %w", key, err)
		}
		out = append(out, s)
		return nil
	})
	return out, err
}

// Close implements Store.
func (p *Pebble) Close() error { return p.db.Close() }

// scan calls fn for every key with prefix, in key order.
func (p *Pebble) scan(prefix string, fn func(key string, value []byte) error) (err error) {
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
		if err := fn(string(it.Key()[len(prefix):]), v); err != nil {
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
