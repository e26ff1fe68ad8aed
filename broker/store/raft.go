package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/hashicorp/raft"
)

// Key prefixes of the raft state in the node's pebble database. A log key is the
// prefix and the entry's index as 8 big-endian bytes, so keys sort by index.
const (
	prefixRaftLog    = "raft/log/"
	prefixRaftStable = "raft/stable/"
)

// raftLogFormat is the first byte of every stored log entry, so the encoding can
// change without guessing.
const raftLogFormat byte = 1

// ErrKeyNotFound is returned by the RaftStore's StableStore methods for a key that was
// never set. hashicorp/raft matches it by its text (err.Error() != "not found"), so the
// text must not change.
var ErrKeyNotFound = errors.New("not found")

var (
	_ raft.LogStore    = (*RaftStore)(nil)
	_ raft.StableStore = (*RaftStore)(nil)
)

// RaftStore is hashicorp/raft's log and stable store in the node's pebble database,
// next to the retained messages and sessions. It is safe for concurrent use.
type RaftStore struct {
	db *pebble.DB
}

// RaftStore returns the raft log and stable store kept in p's database. It shares p's
// lifetime: closing p closes it.
func (p *Pebble) RaftStore() *RaftStore { return &RaftStore{db: p.db} }

// FirstIndex implements raft.LogStore: the lowest stored index, 0 for an empty log.
func (s *RaftStore) FirstIndex() (uint64, error) {
	return s.edgeIndex(func(it *pebble.Iterator) bool { return it.First() })
}

// LastIndex implements raft.LogStore: the highest stored index, 0 for an empty log.
func (s *RaftStore) LastIndex() (uint64, error) {
	return s.edgeIndex(func(it *pebble.Iterator) bool { return it.Last() })
}

// edgeIndex positions an iterator over the log with seek and returns the index there.
func (s *RaftStore) edgeIndex(seek func(*pebble.Iterator) bool) (index uint64, err error) {
	it, err := s.db.NewIter(&pebble.IterOptions{
		LowerBound: []byte(prefixRaftLog),
		UpperBound: prefixEnd(prefixRaftLog),
	})
	if err != nil {
		return 0, err
	}
	defer func() { err = errors.Join(err, it.Close()) }()
	if !seek(it) {
		return 0, it.Error()
	}
	return logKeyIndex(it.Key())
}

// GetLog implements raft.LogStore. A missing index is raft.ErrLogNotFound.
func (s *RaftStore) GetLog(index uint64, log *raft.Log) (err error) {
	v, closer, err := s.db.Get(logKey(index))
	if errors.Is(err, pebble.ErrNotFound) {
		return raft.ErrLogNotFound
	}
	if err != nil {
		return fmt.Errorf("reading raft log entry %d: %w", index, err)
	}
	defer func() { err = errors.Join(err, closer.Close()) }()
	if err := decodeRaftLog(v, log); err != nil {
		return fmt.Errorf("raft log entry %d: %w", index, err)
	}
	if log.Index != index {
		return fmt.Errorf("raft log entry %d: record holds index %d", index, log.Index)
	}
	return nil
}

// StoreLog implements raft.LogStore.
func (s *RaftStore) StoreLog(log *raft.Log) error {
	return s.StoreLogs([]*raft.Log{log})
}

// StoreLogs implements raft.LogStore. All entries go into one batch committed with
// Sync: pebble commits concurrent synced batches as a group, one fsync for all. Each
// entry is encoded straight into the batch's memory, so a call allocates nothing per
// entry.
func (s *RaftStore) StoreLogs(logs []*raft.Log) (err error) {
	b := s.db.NewBatch()
	defer func() { err = errors.Join(err, b.Close()) }()
	var key [len(prefixRaftLog) + 8]byte
	copy(key[:], prefixRaftLog)
	for _, l := range logs {
		binary.BigEndian.PutUint64(key[len(prefixRaftLog):], l.Index)
		op := b.SetDeferred(len(key), raftLogSize(l))
		copy(op.Key, key[:])
		if enc := appendRaftLog(op.Value[:0], l); len(enc) != len(op.Value) {
			return fmt.Errorf("raft log entry %d: encoded %d bytes, sized %d", l.Index, len(enc), len(op.Value))
		}
		if err := op.Finish(); err != nil {
			return fmt.Errorf("storing raft log entry %d: %w", l.Index, err)
		}
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("storing %d raft log entries: %w", len(logs), err)
	}
	return nil
}

// DeleteRange implements raft.LogStore: it removes the entries min to max, both
// included, in one synced batch.
func (s *RaftStore) DeleteRange(minIndex, maxIndex uint64) (err error) {
	if minIndex > maxIndex {
		return nil
	}
	end := prefixEnd(prefixRaftLog) // past the whole log when maxIndex is the largest index
	if maxIndex < ^uint64(0) {
		end = logKey(maxIndex + 1)
	}
	b := s.db.NewBatch()
	defer func() { err = errors.Join(err, b.Close()) }()
	if err := b.DeleteRange(logKey(minIndex), end, nil); err != nil {
		return err
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("deleting raft log entries %d to %d: %w", minIndex, maxIndex, err)
	}
	return nil
}

// Set implements raft.StableStore.
func (s *RaftStore) Set(key, val []byte) error {
	return s.db.Set(stableKey(key), val, pebble.Sync)
}

// Get implements raft.StableStore. A key never set is ErrKeyNotFound.
func (s *RaftStore) Get(key []byte) (val []byte, err error) {
	v, closer, err := s.db.Get(stableKey(key))
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, ErrKeyNotFound
	}
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, closer.Close()) }()
	// The value is only valid until closer.Close.
	return append([]byte{}, v...), nil
}

// SetUint64 implements raft.StableStore; the value is stored as 8 big-endian bytes.
func (s *RaftStore) SetUint64(key []byte, val uint64) error {
	return s.Set(key, binary.BigEndian.AppendUint64(nil, val))
}

// GetUint64 implements raft.StableStore. A key never set is 0 and ErrKeyNotFound.
func (s *RaftStore) GetUint64(key []byte) (uint64, error) {
	v, err := s.Get(key)
	if err != nil {
		return 0, err
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("raft stable key %q holds %d bytes, not a uint64", key, len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}

func logKey(index uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte(prefixRaftLog), index)
}

func logKeyIndex(key []byte) (uint64, error) {
	if len(key) != len(prefixRaftLog)+8 {
		return 0, fmt.Errorf("malformed raft log key %q", key)
	}
	return binary.BigEndian.Uint64(key[len(prefixRaftLog):]), nil
}

func stableKey(key []byte) []byte {
	return append([]byte(prefixRaftStable), key...)
}

// appendRaftLog appends the stored form of l to b: the format byte, then index, term,
// type, AppendedAt (unix nanoseconds, 0 for the zero time), data and extensions, the
// numbers as varints and the byte strings behind their uvarint length.
func appendRaftLog(b []byte, l *raft.Log) []byte {
	b = append(b, raftLogFormat)
	b = binary.AppendUvarint(b, l.Index)
	b = binary.AppendUvarint(b, l.Term)
	b = binary.AppendUvarint(b, uint64(l.Type))
	b = binary.AppendVarint(b, appendedNanos(l))
	b = binary.AppendUvarint(b, uint64(len(l.Data)))
	b = append(b, l.Data...)
	b = binary.AppendUvarint(b, uint64(len(l.Extensions)))
	return append(b, l.Extensions...)
}

// raftLogSize is the length of appendRaftLog's output for l.
func raftLogSize(l *raft.Log) int {
	var scratch [binary.MaxVarintLen64]byte
	uvarintLen := func(v uint64) int { return len(binary.AppendUvarint(scratch[:0], v)) }
	return 1 + uvarintLen(l.Index) + uvarintLen(l.Term) + uvarintLen(uint64(l.Type)) +
		len(binary.AppendVarint(scratch[:0], appendedNanos(l))) +
		uvarintLen(uint64(len(l.Data))) + len(l.Data) +
		uvarintLen(uint64(len(l.Extensions))) + len(l.Extensions)
}

// appendedNanos is l.AppendedAt in unix nanoseconds, 0 for the zero time (whose
// UnixNano is undefined).
func appendedNanos(l *raft.Log) int64 {
	if l.AppendedAt.IsZero() {
		return 0
	}
	return l.AppendedAt.UnixNano()
}

// decodeRaftLog fills l from a record written by appendRaftLog. Data and Extensions
// are copied: b belongs to pebble. Anything malformed is an error, never a panic.
func decodeRaftLog(b []byte, l *raft.Log) error {
	if len(b) == 0 || b[0] != raftLogFormat {
		return errFormat
	}
	d := raftDecoder{b: b[1:]}
	index := d.uvarint("index")
	term := d.uvarint("term")
	typ := d.uvarint("type")
	appended := d.varint("appended at")
	data := d.bytes("data")
	ext := d.bytes("extensions")
	if d.err != nil {
		return d.err
	}
	if len(d.b) != 0 {
		return fmt.Errorf("%d trailing bytes", len(d.b))
	}
	if typ > 0xff {
		return fmt.Errorf("log type %d out of range", typ)
	}
	*l = raft.Log{Index: index, Term: term, Type: raft.LogType(typ), Data: data, Extensions: ext}
	if appended != 0 {
		l.AppendedAt = time.Unix(0, appended)
	}
	return nil
}

// raftDecoder reads the fields of a stored log entry; the first failure sticks and
// names the field.
type raftDecoder struct {
	b   []byte
	err error
}

func (d *raftDecoder) uvarint(field string) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = fmt.Errorf("malformed %s", field)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *raftDecoder) varint(field string) int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.err = fmt.Errorf("malformed %s", field)
		return 0
	}
	d.b = d.b[n:]
	return v
}

// bytes reads a length-prefixed byte string into a fresh slice (nil when empty).
func (d *raftDecoder) bytes(field string) []byte {
	n := d.uvarint(field + " length")
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)) {
		d.err = fmt.Errorf("truncated %s: %d bytes of %d", field, len(d.b), n)
		return nil
	}
	var out []byte
	if n > 0 {
		out = append([]byte(nil), d.b[:n]...)
	}
	d.b = d.b[n:]
	return out
}
