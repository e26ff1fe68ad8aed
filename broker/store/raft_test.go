package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// raftFixture is a pebble store in a fresh directory with its raft store, closed
// when the test ends.
type raftFixture struct {
	t testing.TB
	p *Pebble
	s *RaftStore
}

func openRaftStore(t testing.TB) *raftFixture {
	t.Helper()
	f := &raftFixture{t: t}
	f.open(t.TempDir())
	t.Cleanup(func() {
		if f.p != nil {
			_ = f.p.Close()
		}
	})
	return f
}

func (f *raftFixture) open(dir string) {
	f.t.Helper()
	p, err := OpenPebble(dir, quiet)
	if err != nil {
		f.t.Fatal(err)
	}
	f.p, f.s = p, p.RaftStore()
}

// reopen closes the store and opens its directory again.
func (f *raftFixture) reopen() {
	f.t.Helper()
	p := f.p
	f.p = nil
	if err := p.Close(); err != nil {
		f.t.Fatal(err)
	}
	f.open(p.Dir())
}

func testLog(index uint64) *raft.Log {
	return &raft.Log{
		Index:      index,
		Term:       index/10 + 1,
		Type:       raft.LogCommand,
		Data:       []byte("cmd-" + strconv.FormatUint(index, 10)),
		AppendedAt: time.Unix(1800000000, int64(index)),
	}
}

func storeRange(t *testing.T, s *RaftStore, first, last uint64) {
	t.Helper()
	var logs []*raft.Log
	for i := first; i <= last; i++ {
		logs = append(logs, testLog(i))
	}
	if err := s.StoreLogs(logs); err != nil {
		t.Fatal(err)
	}
}

func checkBounds(t *testing.T, s *RaftStore, first, last uint64) {
	t.Helper()
	gotFirst, err := s.FirstIndex()
	if err != nil {
		t.Fatal(err)
	}
	gotLast, err := s.LastIndex()
	if err != nil {
		t.Fatal(err)
	}
	if gotFirst != first || gotLast != last {
		t.Fatalf("FirstIndex, LastIndex = %d, %d, want %d, %d", gotFirst, gotLast, first, last)
	}
}

func logsEqual(a, b *raft.Log) bool {
	return a.Index == b.Index && a.Term == b.Term && a.Type == b.Type &&
		bytes.Equal(a.Data, b.Data) && bytes.Equal(a.Extensions, b.Extensions) &&
		a.AppendedAt.Equal(b.AppendedAt)
}

func TestRaftLogRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		log  raft.Log
	}{
		{"zero", raft.Log{}},
		{"command", *testLog(7)},
		{"everything", raft.Log{Index: 1<<64 - 1, Term: 1 << 40, Type: raft.LogConfiguration,
			Data: bytes.Repeat([]byte{0, 0xff}, 300), Extensions: []byte("ext"),
			AppendedAt: time.Unix(-5, 999999999)}},
		{"extensions only", raft.Log{Index: 3, Type: raft.LogNoop, Extensions: []byte{1}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			enc := appendRaftLog(nil, &tt.log)
			if len(enc) != raftLogSize(&tt.log) {
				t.Fatalf("encoded %d bytes, raftLogSize says %d", len(enc), raftLogSize(&tt.log))
			}
			var got raft.Log
			got.Data = []byte("stale") // decoding replaces every field
			if err := decodeRaftLog(enc, &got); err != nil {
				t.Fatal(err)
			}
			if !logsEqual(&got, &tt.log) {
				t.Fatalf("got %+v, want %+v", got, tt.log)
			}
		})
	}
}

func TestRaftLogStore(t *testing.T) {
	tests := []struct {
		name string
		// stored in this order: each slice is one StoreLogs call (a single entry uses StoreLog)
		batches      [][2]uint64
		deleteRanges [][2]uint64
		first, last  uint64
		missing      []uint64
	}{
		{name: "empty", first: 0, last: 0, missing: []uint64{0, 1, 100}},
		{name: "one entry", batches: [][2]uint64{{1, 1}}, first: 1, last: 1, missing: []uint64{0, 2}},
		{name: "batch", batches: [][2]uint64{{1, 64}}, first: 1, last: 64, missing: []uint64{65}},
		{name: "batches", batches: [][2]uint64{{5, 9}, {10, 300}}, first: 5, last: 300, missing: []uint64{4, 301}},
		{name: "index beyond one byte sorts numerically", batches: [][2]uint64{{250, 260}}, first: 250, last: 260},
		{name: "overwrite", batches: [][2]uint64{{1, 10}, {5, 10}}, first: 1, last: 10},
		{name: "compact head", batches: [][2]uint64{{1, 20}}, deleteRanges: [][2]uint64{{1, 10}},
			first: 11, last: 20, missing: []uint64{1, 10}},
		{name: "truncate tail", batches: [][2]uint64{{1, 20}}, deleteRanges: [][2]uint64{{15, 20}},
			first: 1, last: 14, missing: []uint64{15, 20}},
		{name: "delete middle", batches: [][2]uint64{{1, 20}}, deleteRanges: [][2]uint64{{5, 5}, {8, 9}},
			first: 1, last: 20, missing: []uint64{5, 8, 9}},
		{name: "delete everything", batches: [][2]uint64{{1, 20}}, deleteRanges: [][2]uint64{{0, 1<<64 - 1}},
			first: 0, last: 0, missing: []uint64{1, 20}},
		{name: "delete beyond the log", batches: [][2]uint64{{10, 20}}, deleteRanges: [][2]uint64{{1, 12}, {19, 1000}},
			first: 13, last: 18, missing: []uint64{12, 19}},
		{name: "empty delete range", batches: [][2]uint64{{1, 5}}, deleteRanges: [][2]uint64{{4, 3}},
			first: 1, last: 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := openRaftStore(t)
			s := f.s
			for _, b := range tt.batches {
				if b[0] == b[1] {
					if err := s.StoreLog(testLog(b[0])); err != nil {
						t.Fatal(err)
					}
					continue
				}
				storeRange(t, s, b[0], b[1])
			}
			for _, d := range tt.deleteRanges {
				if err := s.DeleteRange(d[0], d[1]); err != nil {
					t.Fatal(err)
				}
			}
			check := func(t *testing.T, s *RaftStore) {
				t.Helper()
				checkBounds(t, s, tt.first, tt.last)
				for _, i := range tt.missing {
					var l raft.Log
					if err := s.GetLog(i, &l); !errors.Is(err, raft.ErrLogNotFound) {
						t.Fatalf("GetLog(%d) = %v, want raft.ErrLogNotFound", i, err)
					}
				}
				for _, i := range []uint64{tt.first, tt.last} {
					if i == 0 {
						continue
					}
					var l raft.Log
					if err := s.GetLog(i, &l); err != nil {
						t.Fatalf("GetLog(%d): %v", i, err)
					}
					if !logsEqual(&l, testLog(i)) {
						t.Fatalf("GetLog(%d) = %+v, want %+v", i, l, *testLog(i))
					}
				}
			}
			check(t, s)
			f.reopen()
			check(t, f.s)
		})
	}
}

func TestRaftStableStore(t *testing.T) {
	tests := []struct {
		name string
		run  func(t *testing.T, s *RaftStore)
	}{
		{"missing key", func(t *testing.T, s *RaftStore) {
			v, err := s.Get([]byte("nope"))
			// hashicorp/raft matches the text, not the value.
			if err == nil || err.Error() != "not found" || !errors.Is(err, ErrKeyNotFound) || v != nil {
				t.Fatalf("Get = %q, %v; want nil, %q", v, err, "not found")
			}
		}},
		{"missing uint64", func(t *testing.T, s *RaftStore) {
			v, err := s.GetUint64([]byte("CurrentTerm"))
			if err == nil || err.Error() != "not found" || v != 0 {
				t.Fatalf("GetUint64 = %d, %v; want 0, %q", v, err, "not found")
			}
		}},
		{"bytes", func(t *testing.T, s *RaftStore) {
			if err := s.Set([]byte("k"), []byte("v1")); err != nil {
				t.Fatal(err)
			}
			if err := s.Set([]byte("k"), []byte("v2\x00")); err != nil {
				t.Fatal(err)
			}
			v, err := s.Get([]byte("k"))
			if err != nil || string(v) != "v2\x00" {
				t.Fatalf("Get = %q, %v", v, err)
			}
		}},
		{"empty value is set, not missing", func(t *testing.T, s *RaftStore) {
			if err := s.Set([]byte("k"), nil); err != nil {
				t.Fatal(err)
			}
			if v, err := s.Get([]byte("k")); err != nil || len(v) != 0 {
				t.Fatalf("Get = %q, %v", v, err)
			}
		}},
		{"uint64", func(t *testing.T, s *RaftStore) {
			for _, want := range []uint64{0, 1, 255, 256, 1<<64 - 1} {
				if err := s.SetUint64([]byte("LastVoteTerm"), want); err != nil {
					t.Fatal(err)
				}
				if got, err := s.GetUint64([]byte("LastVoteTerm")); err != nil || got != want {
					t.Fatalf("GetUint64 = %d, %v; want %d", got, err, want)
				}
			}
		}},
		{"uint64 of a non-uint64 value", func(t *testing.T, s *RaftStore) {
			if err := s.Set([]byte("k"), []byte("abc")); err != nil {
				t.Fatal(err)
			}
			if _, err := s.GetUint64([]byte("k")); err == nil || err.Error() == "not found" {
				t.Fatalf("GetUint64 = %v, want a format error", err)
			}
		}},
		{"stable keys do not touch the log", func(t *testing.T, s *RaftStore) {
			if err := s.SetUint64([]byte("CurrentTerm"), 3); err != nil {
				t.Fatal(err)
			}
			checkBounds(t, s, 0, 0)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.run(t, openRaftStore(t).s)
		})
	}
}

func TestRaftStoreReopen(t *testing.T) {
	f := openRaftStore(t)
	p, s := f.p, f.s
	storeRange(t, s, 1, 100)
	if err := s.SetUint64([]byte("CurrentTerm"), 42); err != nil {
		t.Fatal(err)
	}
	if err := s.Set([]byte("LastVoteCand"), []byte("node-2")); err != nil {
		t.Fatal(err)
	}
	if err := p.PutRetained(richMessage()); err != nil {
		t.Fatal(err)
	}
	f.reopen()
	p, s = f.p, f.s
	checkBounds(t, s, 1, 100)
	for i := uint64(1); i <= 100; i++ {
		var l raft.Log
		if err := s.GetLog(i, &l); err != nil || !logsEqual(&l, testLog(i)) {
			t.Fatalf("GetLog(%d) = %+v, %v", i, l, err)
		}
	}
	if v, err := s.GetUint64([]byte("CurrentTerm")); err != nil || v != 42 {
		t.Fatalf("GetUint64 = %d, %v", v, err)
	}
	if v, err := s.Get([]byte("LastVoteCand")); err != nil || string(v) != "node-2" {
		t.Fatalf("Get = %q, %v", v, err)
	}
	// The raft keys live beside the broker's: neither scan sees the other.
	if msgs, err := p.Retained(); err != nil || len(msgs) != 1 {
		t.Fatalf("Retained = %d messages, %v", len(msgs), err)
	}
}

func TestRaftStoreCorruptRecord(t *testing.T) {
	valid := appendRaftLog(nil, &raft.Log{Index: 5, Term: 2, Data: []byte("data"), Extensions: []byte("ext")})
	overlong := binary.AppendUvarint([]byte{raftLogFormat}, 5)
	overlong = append(overlong, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01)
	tests := []struct {
		name  string
		value []byte
	}{
		{"empty", nil},
		{"unknown format", append([]byte{99}, valid[1:]...)},
		{"truncated header", valid[:3]},
		{"truncated data", valid[:len(valid)-5]},
		{"trailing bytes", append(append([]byte{}, valid...), 0)},
		{"overlong varint", overlong},
		{"huge data length", append(append([]byte{}, valid[:5]...), 0xff, 0xff, 0xff, 0xff, 0x0f)},
		{"type out of range", appendTypeOutOfRange()},
		{"index of another entry", appendRaftLog(nil, &raft.Log{Index: 6})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := openRaftStore(t)
			p, s := f.p, f.s
			storeRange(t, s, 4, 6)
			if err := p.db.Set(logKey(5), tt.value, pebble.Sync); err != nil {
				t.Fatal(err)
			}
			var l raft.Log
			err := s.GetLog(5, &l)
			if err == nil || errors.Is(err, raft.ErrLogNotFound) || !strings.Contains(err.Error(), "entry 5") {
				t.Fatalf("GetLog of a corrupt record = %v, want an error naming entry 5", err)
			}
			// The entries around it still read.
			if err := s.GetLog(6, &l); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func appendTypeOutOfRange() []byte {
	b := []byte{raftLogFormat}
	b = binary.AppendUvarint(b, 5)   // index
	b = binary.AppendUvarint(b, 1)   // term
	b = binary.AppendUvarint(b, 300) // type
	b = binary.AppendVarint(b, 0)    // appended at
	b = binary.AppendUvarint(b, 0)   // data
	return binary.AppendUvarint(b, 0)
}

func TestPebbleWipe(t *testing.T) {
	f := openRaftStore(t)
	p, s := f.p, f.s
	storeRange(t, s, 1, 10)
	if err := s.SetUint64([]byte("CurrentTerm"), 1); err != nil {
		t.Fatal(err)
	}
	if err := p.PutRetained(richMessage()); err != nil {
		t.Fatal(err)
	}
	if err := SaveSession(p, richSession()); err != nil {
		t.Fatal(err)
	}
	// Keys outside every known prefix go too, a small and a large one.
	for _, k := range []string{"\x00", "\xff\xff\xff"} {
		if err := p.db.Set([]byte(k), []byte("x"), pebble.Sync); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Wipe(); err != nil {
		t.Fatal(err)
	}
	f.reopen()
	p, s = f.p, f.s
	checkBounds(t, s, 0, 0)
	it, err := p.db.NewIter(nil)
	if err != nil {
		t.Fatal(err)
	}
	// Only the store's format is written again (a wiped store is still a store of
	// this format).
	var left []string
	for ok := it.First(); ok; ok = it.Next() {
		left = append(left, string(it.Key()))
	}
	if len(left) != 1 || left[0] != keyFormat {
		t.Errorf("keys after Wipe: %q, want only %q", left, keyFormat)
	}
	if err := it.Close(); err != nil {
		t.Fatal(err)
	}
	// Wiping an empty store is fine, and the store stays usable.
	if err := p.Wipe(); err != nil {
		t.Fatal(err)
	}
	storeRange(t, s, 1, 1)
	checkBounds(t, s, 1, 1)
}

// countingFSM counts the distinct commands applied to it. Distinct, because a client
// retrying after a lost leadership may apply a command twice.
type countingFSM struct {
	mu   sync.Mutex
	seen map[string]bool
}

func (f *countingFSM) Apply(l *raft.Log) any {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seen[string(l.Data)] = true
	return nil
}

func (f *countingFSM) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.seen)
}

func (f *countingFSM) Snapshot() (raft.FSMSnapshot, error) {
	return nil, errors.New("snapshots are not used in this test")
}

func (f *countingFSM) Restore(rc io.ReadCloser) error {
	return errors.Join(errors.New("snapshots are not used in this test"), rc.Close())
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.After(timeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline:
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		case <-tick.C:
		}
	}
}

// TestRaftClusterOnRaftStore runs a real three-node hashicorp/raft cluster over
// in-memory transports with its logs and stable state in RaftStores.
func TestRaftClusterOnRaftStore(t *testing.T) {
	const nodes, commands = 3, 100
	type node struct {
		pebble *Pebble
		fsm    *countingFSM
		trans  *raft.InmemTransport
		raft   *raft.Raft
	}
	ns := make([]*node, nodes)
	var servers []raft.Server
	for i := range ns {
		p, err := OpenPebble(t.TempDir(), quiet)
		if err != nil {
			t.Fatal(err)
		}
		addr, trans := raft.NewInmemTransport(raft.ServerAddress(fmt.Sprintf("node-%d", i+1)))
		ns[i] = &node{pebble: p, fsm: &countingFSM{seen: map[string]bool{}}, trans: trans}
		servers = append(servers, raft.Server{ID: raft.ServerID(addr), Address: addr})
	}
	for _, a := range ns {
		for _, b := range ns {
			if a != b {
				a.trans.Connect(b.trans.LocalAddr(), b.trans)
			}
		}
	}
	shutdown := func() {
		for _, n := range ns {
			if n.raft != nil {
				if err := n.raft.Shutdown().Error(); err != nil {
					t.Errorf("shutting down %s: %v", n.trans.LocalAddr(), err)
				}
				n.raft = nil
			}
			if n.pebble != nil {
				if err := n.pebble.Close(); err != nil {
					t.Errorf("closing the store of %s: %v", n.trans.LocalAddr(), err)
				}
				n.pebble = nil
			}
		}
	}
	defer shutdown()
	for i, n := range ns {
		conf := raft.DefaultConfig()
		conf.LocalID = servers[i].ID
		conf.HeartbeatTimeout = 100 * time.Millisecond
		conf.ElectionTimeout = 100 * time.Millisecond
		conf.LeaderLeaseTimeout = 50 * time.Millisecond
		conf.CommitTimeout = 5 * time.Millisecond
		conf.Logger = hclog.NewNullLogger()
		rs := n.pebble.RaftStore()
		r, err := raft.NewRaft(conf, n.fsm, rs, rs, raft.NewInmemSnapshotStore(), n.trans)
		if err != nil {
			t.Fatal(err)
		}
		n.raft = r
	}
	if err := ns[0].raft.BootstrapCluster(raft.Configuration{Servers: servers}).Error(); err != nil {
		t.Fatal(err)
	}
	leader := func() *raft.Raft {
		for _, n := range ns {
			if n.raft.State() == raft.Leader {
				return n.raft
			}
		}
		return nil
	}
	waitFor(t, "a leader", 10*time.Second, func() bool { return leader() != nil })

	for i := range commands {
		cmd := []byte("cmd-" + strconv.Itoa(i))
		// A leader can lose its lease on a busy machine: apply again on the next one.
		waitFor(t, fmt.Sprintf("command %d to commit", i), 10*time.Second, func() bool {
			r := leader()
			return r != nil && r.Apply(cmd, time.Second).Error() == nil
		})
	}
	for _, n := range ns {
		waitFor(t, fmt.Sprintf("%s to apply every command", n.trans.LocalAddr()), 10*time.Second,
			func() bool { return n.fsm.count() == commands })
	}

	dir := ns[0].pebble.Dir()
	shutdown()
	p, err := OpenPebble(dir, quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = p.Close() }()
	s := p.RaftStore()
	first, err := s.FirstIndex()
	if err != nil {
		t.Fatal(err)
	}
	last, err := s.LastIndex()
	if err != nil {
		t.Fatal(err)
	}
	if last < commands {
		t.Fatalf("LastIndex = %d after %d commands", last, commands)
	}
	applied := map[string]bool{}
	for i := first; i <= last; i++ {
		var l raft.Log
		if err := s.GetLog(i, &l); err != nil {
			t.Fatalf("GetLog(%d): %v", i, err)
		}
		if l.Index != i || l.Term == 0 || l.AppendedAt.IsZero() && l.Type == raft.LogCommand {
			t.Fatalf("entry %d decodes as %+v", i, l)
		}
		if l.Type == raft.LogCommand {
			applied[string(l.Data)] = true
		}
	}
	if len(applied) != commands {
		t.Fatalf("the reopened log holds %d distinct commands, want %d", len(applied), commands)
	}
	if term, err := s.GetUint64([]byte("CurrentTerm")); err != nil || term == 0 {
		t.Fatalf("CurrentTerm = %d, %v", term, err)
	}
}

func BenchmarkRaftStoreLogs(b *testing.B) {
	s := openRaftStore(b).s
	logs := make([]*raft.Log, 64)
	for i := range logs {
		logs[i] = &raft.Log{Term: 1, Type: raft.LogCommand, Data: bytes.Repeat([]byte{'x'}, 256),
			AppendedAt: time.Now()}
	}
	b.SetBytes(int64(len(logs) * 256))
	b.ReportAllocs()
	var index uint64
	for b.Loop() {
		for _, l := range logs {
			index++
			l.Index = index
		}
		if err := s.StoreLogs(logs); err != nil {
			b.Fatal(err)
		}
	}
}
