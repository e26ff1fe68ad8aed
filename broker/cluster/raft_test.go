package cluster

import (
	"log/slog"
	"slices"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/mqtt-operator/mqtt-operator/broker/store"
)

func openLog(t *testing.T) *store.RaftStore {
	t.Helper()
	p, err := store.OpenPebble(t.TempDir(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p.RaftStore()
}

func configEntry(index uint64, names ...string) *raft.Log {
	var c raft.Configuration
	for _, name := range names {
		c.Servers = append(c.Servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(name), Address: raft.ServerAddress(name + ":4370")})
	}
	return &raft.Log{Index: index, Term: 1, Type: raft.LogConfiguration, Data: raft.EncodeConfiguration(c)}
}

func commandEntry(index uint64) *raft.Log {
	return &raft.Log{Index: index, Term: 1, Type: raft.LogCommand, Data: []byte(`{"Op":"noop"}`)}
}

func names(servers []raft.Server) []string {
	var out []string
	for _, s := range servers {
		out = append(out, string(s.ID))
	}
	return out
}

// TestConfigLogNotesAndTruncation: the node's membership notes each configuration entry as it is
// written, keeps it through compaction of older entries, and falls back to the newest
// one left when a new leader truncates the suffix holding it.
func TestConfigLogNotesAndTruncation(t *testing.T) {
	n := &membership{log: slog.New(slog.DiscardHandler)}
	l := configLog{openLog(t), n}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	expect := func(what string, index uint64, servers ...string) {
		t.Helper()
		got, idx := n.configView()
		if idx != index || !slices.Equal(names(got), servers) {
			t.Fatalf("%s: noted %v at %d, want %v at %d", what, names(got), idx, servers, index)
		}
	}
	must(l.StoreLogs([]*raft.Log{configEntry(1, "a"), commandEntry(2), configEntry(3, "a", "b"), commandEntry(4)}))
	expect("after the first entries", 3, "a", "b")
	must(l.StoreLog(configEntry(5, "a", "b", "c")))
	must(l.StoreLog(commandEntry(6)))
	expect("after a third server", 5, "a", "b", "c")

	must(l.DeleteRange(1, 2)) // compaction
	expect("after compaction", 5, "a", "b", "c")

	// A new leader overwrites entries 5 and 6: the entry adding c never commits.
	must(l.DeleteRange(5, 6))
	expect("after the truncation", 3, "a", "b")
	must(l.StoreLogs([]*raft.Log{commandEntry(5), configEntry(6, "a")}))
	expect("after the new leader's entries", 6, "a")
}

// TestNewestConfigEntryStopsAtGap: after a snapshot was installed, entries older than
// it may remain below a gap; they are not the newest configuration.
func TestNewestConfigEntryStopsAtGap(t *testing.T) {
	logs := openLog(t)
	if err := logs.StoreLogs([]*raft.Log{configEntry(1, "a"), commandEntry(2)}); err != nil {
		t.Fatal(err)
	}
	if err := logs.StoreLogs([]*raft.Log{commandEntry(10), commandEntry(11)}); err != nil {
		t.Fatal(err)
	}
	if _, _, found, err := newestConfigEntry(logs, 0); err != nil || found {
		t.Fatalf("found %v, err %v: the scan went past the gap", found, err)
	}
	if err := logs.StoreLog(configEntry(12, "a", "b")); err != nil {
		t.Fatal(err)
	}
	idx, servers, found, err := newestConfigEntry(logs, 9)
	if err != nil || !found || idx != 12 || !slices.Equal(names(servers), []string{"a", "b"}) {
		t.Fatalf("got %d %v %v %v, want 12 [a b]", idx, names(servers), found, err)
	}
}
