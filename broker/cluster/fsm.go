package cluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/hashicorp/raft"

	"github.com/mqtt-operator/mqtt-operator/broker/apiv1"
	"github.com/mqtt-operator/mqtt-operator/broker/session"
	"github.com/mqtt-operator/mqtt-operator/broker/store"
)

// command is one entry of the replicated log.
type command struct {
	Op        string // "cluster_id", "retain"
	ClusterID string `json:",omitempty"`
	Msg       []byte `json:",omitempty"`
}

// fsm applies the replicated log: the cluster ID and the retained messages.
type fsm struct{ m *membership }

func (f *fsm) Apply(l *raft.Log) any {
	defer f.m.applied.Store(l.Index)
	var c command
	if err := json.Unmarshal(l.Data, &c); err != nil {
		f.m.log.Error("undecodable raft log entry", "index", l.Index, "error", err)
		return err
	}
	switch c.Op {
	case "cluster_id":
		f.m.adoptClusterID(c.ClusterID)
	case "retain":
		msg, err := store.DecodeMessage(c.Msg)
		if err != nil {
			f.m.log.Error("undecodable retained message in the raft log", "index", l.Index, "error", err)
			return err
		}
		f.m.srv.ApplyRetained(msg)
	}
	return nil
}

// adoptClusterID records the cluster ID the log carries; a different one in this
// node's store makes the node stale (judgeClusterID).
func (m *membership) adoptClusterID(id string) {
	m.mu.Lock()
	verdict, reason := judgeClusterID(m.clusterID, id)
	if verdict == adoptStore {
		m.clusterID = id
	}
	m.mu.Unlock()
	switch verdict {
	case adoptStore:
		if err := m.storeClusterID(id); err != nil {
			m.log.Error("storing the cluster ID", "error", err)
		}
	case adoptStale:
		// Not from the FSM goroutine itself: stopping raft waits for it.
		go m.markStale(reason)
	}
}

// StoreConfiguration implements raft.ConfigurationStore: it records the latest
// committed configuration (snapshots carry it, for a node that catches up from one)
// and notes it for configView.
func (f *fsm) StoreConfiguration(index uint64, c raft.Configuration) {
	if index > f.m.applied.Load() { // Restore notes an older one too
		f.m.applied.Store(index)
	}
	f.m.mu.Lock()
	if index >= f.m.committedIndex {
		f.m.committedIndex, f.m.committedServers = index, c.Servers
	}
	f.m.mu.Unlock()
	f.m.noteConfig(index, c.Servers)
}

type fsmState struct {
	Applied     uint64 // the last entry the state machine applied (0 in snapshots of older versions)
	ConfigIndex uint64
	Servers     []raft.Server // the committed configuration at ConfigIndex
	ClusterID   string
	Retained    [][]byte
}

func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	f.m.mu.Lock()
	st := fsmState{ClusterID: f.m.clusterID, ConfigIndex: f.m.committedIndex, Servers: f.m.committedServers, Applied: f.m.applied.Load()}
	f.m.mu.Unlock()
	for _, msg := range f.m.srv.RetainedMessages() {
		st.Retained = append(st.Retained, store.EncodeMessage(msg))
	}
	return &st, nil
}

func (f *fsm) Restore(rc io.ReadCloser) error {
	defer func() { _ = rc.Close() }()
	var st fsmState
	if err := json.NewDecoder(rc).Decode(&st); err != nil {
		return fmt.Errorf("decoding a raft snapshot: %w", err)
	}
	if st.ClusterID != "" {
		f.m.adoptClusterID(st.ClusterID)
	}
	if st.ConfigIndex > 0 && len(st.Servers) > 0 {
		f.StoreConfiguration(st.ConfigIndex, raft.Configuration{Servers: st.Servers})
	}
	msgs := make([]*session.Message, 0, len(st.Retained))
	for _, b := range st.Retained {
		m, err := store.DecodeMessage(b)
		if err != nil {
			return fmt.Errorf("retained message in a raft snapshot: %w", err)
		}
		msgs = append(msgs, m)
	}
	f.m.srv.ReplaceRetained(msgs)
	// The snapshot covers every entry up to its raft index (raft writes it to the
	// store before restoring it, so it is the newest there); a snapshot of an older
	// version has no Applied.
	applied := st.Applied
	f.m.mu.Lock()
	snaps := f.m.snaps
	f.m.mu.Unlock()
	if snaps != nil {
		if metas, err := snaps.List(); err == nil && len(metas) > 0 && metas[0].Index > applied {
			applied = metas[0].Index
		}
	}
	f.m.applied.Store(applied)
	return nil
}

func (s *fsmState) Persist(sink raft.SnapshotSink) error {
	if err := json.NewEncoder(sink).Encode(s); err != nil {
		_ = sink.Cancel()
		return err
	}
	return sink.Close()
}

func (s *fsmState) Release() {}

// apply replicates a command: on the leader directly, elsewhere through the leader.
func (m *membership) apply(c command) error {
	data, err := json.Marshal(c)
	if err != nil {
		return err
	}
	m.mu.Lock()
	r := m.raft
	m.mu.Unlock()
	if r == nil {
		return errorf(apiv1.CodeNotMember, "raft is not running")
	}
	if r.State() == raft.Leader {
		return applyErr(r.Apply(data, requestTimeout).Error())
	}
	resp, err := m.requestLeader(&request{Op: opApply, Data: data})
	if err != nil {
		return err
	}
	return resp.err()
}

func applyErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipLost), errors.Is(err, raft.ErrLeadershipTransferInProgress):
		return errorf(apiv1.CodeNoLeader, "%v", err)
	}
	return err
}

// Ensure the snapshot directory exists before raft opens it.
func ensureDir(dir string) error { return os.MkdirAll(dir, 0o750) }

// retain replicates a retained message through the raft log; a node that is not a
// member applies it alone.
func (m *membership) retain(msg *session.Message) error {
	if !m.isMember() {
		m.srv.ApplyRetained(msg)
		return nil
	}
	return m.apply(command{Op: "retain", Msg: store.EncodeMessage(msg)})
}
