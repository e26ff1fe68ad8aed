package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/mqtt-operator/mqtt-operator/broker/apiv1"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/mqtt-operator/mqtt-operator/broker/session"
	"github.com/mqtt-operator/mqtt-operator/broker/store"
)

// keyClusterID is where the stable store keeps the cluster ID this node belongs to.
var keyClusterID = []byte("mqttd/cluster_id")

func (n *Node) storedClusterID() (string, error) {
	v, err := n.cfg.Store.RaftStore().Get(keyClusterID)
	if err != nil && err.Error() == store.ErrKeyNotFound.Error() {
		return "", nil
	}
	return string(v), err
}

func (n *Node) storeClusterID(id string) error {
	return n.cfg.Store.RaftStore().Set(keyClusterID, []byte(id))
}

// startRaft starts this node's raft instance on its store. A node with no state waits
// to be added by a leader (join) or bootstrapped.
func (n *Node) startRaft() error {
	rs := n.cfg.Store.RaftStore()
	snaps, err := raft.NewFileSnapshotStoreWithLogger(n.cfg.SnapshotDir, 2, n.hclog())
	if err != nil {
		return fmt.Errorf("raft snapshots in %s: %w", n.cfg.SnapshotDir, err)
	}
	// The advertised address is a name other nodes resolve when they dial; this node
	// need not resolve it itself (its DNS record may appear after it starts).
	if _, _, err := net.SplitHostPort(n.cfg.Advertise); err != nil {
		return fmt.Errorf("cluster advertise address %q: %w", n.cfg.Advertise, err)
	}
	sl := &streamLayer{n: n, addr: advertised(n.cfg.Advertise), ch: make(chan net.Conn), closed: make(chan struct{})}
	trans := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{Stream: sl, MaxPool: 3,
		Timeout: 10 * time.Second, Logger: n.hclog()})
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(n.cfg.Name)
	rc.HeartbeatTimeout = n.cfg.HeartbeatTimeout
	rc.ElectionTimeout = n.cfg.HeartbeatTimeout
	rc.LeaderLeaseTimeout = n.cfg.HeartbeatTimeout / 2
	rc.CommitTimeout = 10 * time.Millisecond
	rc.Logger = n.hclog()
	idx, servers, err := latestConfig(rs, snaps)
	if err != nil {
		_ = trans.Close()
		return fmt.Errorf("reading the raft log: %w", err)
	}
	n.noteConfig(idx, servers)
	r, err := raft.NewRaft(rc, &fsm{n: n}, configLog{rs, n}, rs, snaps, trans)
	if err != nil {
		_ = trans.Close()
		return fmt.Errorf("starting raft: %w", err)
	}
	n.mu.Lock()
	n.raft, n.stream = r, sl
	n.mu.Unlock()
	return nil
}

// latestConfig finds the newest configuration this node's log or snapshots hold
// (committed or not) and its index: what a restarted node knows of the membership.
func latestConfig(logs raft.LogStore, snaps raft.SnapshotStore) (uint64, []raft.Server, error) {
	var floor, idx uint64
	var servers []raft.Server
	metas, err := snaps.List()
	if err != nil {
		return 0, nil, err
	}
	if len(metas) > 0 {
		floor, idx, servers = metas[0].Index, metas[0].ConfigurationIndex, metas[0].Configuration.Servers
	}
	if i, s, found, err := newestConfigEntry(logs, floor); err != nil || found {
		return i, s, err
	}
	return idx, servers, nil
}

// newestConfigEntry scans the log back from its last entry, down to (not including)
// floor, for the newest configuration entry. The scan ends at a gap: after a
// snapshot was installed, older entries may remain below it.
func newestConfigEntry(logs raft.LogStore, floor uint64) (uint64, []raft.Server, bool, error) {
	first, err := logs.FirstIndex()
	if err != nil {
		return 0, nil, false, err
	}
	last, err := logs.LastIndex()
	if err != nil {
		return 0, nil, false, err
	}
	for i := last; i >= first && i > floor && i > 0; i-- {
		var l raft.Log
		if err := logs.GetLog(i, &l); errors.Is(err, raft.ErrLogNotFound) {
			break
		} else if err != nil {
			return 0, nil, false, err
		}
		if l.Type == raft.LogConfiguration {
			return i, raft.DecodeConfiguration(l.Data).Servers, true, nil
		}
	}
	return 0, nil, false, nil
}

// configLog is the raft log store, noting each configuration entry written to it
// (by this node as leader, or replicated to it) as it is written, and taking the
// note back when a new leader truncates that entry. (raft also looks for optional
// interfaces on its log store, MonotonicLogStore and CommitTrackingLogStore;
// store.RaftStore implements neither, so embedding hides nothing.)
type configLog struct {
	raft.LogStore
	n *Node
}

func (l configLog) StoreLog(e *raft.Log) error { return l.StoreLogs([]*raft.Log{e}) }

func (l configLog) StoreLogs(logs []*raft.Log) error {
	if err := l.LogStore.StoreLogs(logs); err != nil {
		return err
	}
	for _, e := range logs {
		if e.Type == raft.LogConfiguration {
			l.n.noteConfig(e.Index, raft.DecodeConfiguration(e.Data).Servers)
		}
	}
	return nil
}

// DeleteRange removes entries: old ones after a snapshot, or a follower's
// uncommitted suffix that a new leader overwrites. When the noted configuration was
// in that suffix, the newest one left in the log (or the committed one) replaces it.
func (l configLog) DeleteRange(lo, hi uint64) error {
	if err := l.LogStore.DeleteRange(lo, hi); err != nil {
		return err
	}
	last, err := l.LastIndex()
	if err != nil {
		return err
	}
	n := l.n
	n.mu.Lock()
	noted, committed, servers := n.configIndex, n.committedIndex, n.committedServers
	n.mu.Unlock()
	if noted <= last {
		return nil
	}
	idx, found := committed, false
	if i, s, ok, err := newestConfigEntry(l.LogStore, committed); err != nil {
		return err
	} else if ok {
		idx, servers, found = i, s, true
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.configIndex != noted {
		return nil // noted anew meanwhile (the state machine applied a committed one)
	}
	n.configIndex, n.configServers = idx, servers
	n.log.Info("a new leader truncated this node's newest configuration entry", "index", noted, "now", idx, "fromLog", found)
	return nil
}

// stopRaft shuts raft down (stale, reset).
func (n *Node) stopRaft() {
	n.mu.Lock()
	r := n.raft
	n.raft = nil
	n.mu.Unlock()
	if r != nil {
		if err := r.Shutdown().Error(); err != nil {
			n.log.Warn("raft shutdown", "error", err)
		}
	}
}

// hclog gives raft a logger that writes through the node's: raft's debug lines when
// the node logs at debug level, otherwise its warnings and errors only.
func (n *Node) hclog() hclog.Logger {
	lvl := hclog.Warn
	if n.log.Enabled(context.Background(), slog.LevelDebug) {
		lvl = hclog.Debug
	}
	return hclog.New(&hclog.LoggerOptions{Name: "raft", Level: lvl, Output: slogWriter{n.log}, DisableTime: true})
}

// slogWriter passes hclog's lines to slog at their own level.
type slogWriter struct{ log *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	line := strings.TrimSpace(string(p))
	lvl := slog.LevelWarn
	for prefix, l := range map[string]slog.Level{"[ERROR]": slog.LevelError, "[INFO]": slog.LevelInfo,
		"[DEBUG]": slog.LevelDebug, "[TRACE]": slog.LevelDebug} {
		if strings.HasPrefix(line, prefix) {
			lvl = l
		}
	}
	w.log.Log(context.Background(), lvl, line, "component", "raft")
	return len(p), nil
}

// advertised is the node's cluster address as a net.Addr, unresolved.
type advertised string

func (a advertised) Network() string { return "tcp" }
func (a advertised) String() string  { return string(a) }

// streamLayer carries raft's transport over the cluster port: raft connections are
// authenticated with the cookie like every other, and refused between clusters.
type streamLayer struct {
	n      *Node
	addr   net.Addr
	ch     chan net.Conn
	closed chan struct{}
	once   bool
}

func (s *streamLayer) Accept() (net.Conn, error) {
	select {
	case c := <-s.ch:
		return c, nil
	case <-s.closed:
		return nil, net.ErrClosed
	}
}

func (s *streamLayer) Close() error {
	s.n.mu.Lock()
	defer s.n.mu.Unlock()
	if !s.once {
		s.once = true
		close(s.closed)
	}
	return nil
}

func (s *streamLayer) Addr() net.Addr { return s.addr }

func (s *streamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c, err := s.n.dial(ctx, string(address), chanRaft)
	if err != nil {
		return nil, err
	}
	var ok [1]byte
	_ = c.SetReadDeadline(time.Now().Add(timeout))
	if _, err := io.ReadFull(c, ok[:]); err != nil || ok[0] != 1 {
		s.n.untrack(c)
		return nil, fmt.Errorf("raft connection to %s refused (another cluster, or a stale node)", address)
	}
	_ = c.SetReadDeadline(time.Time{})
	return c, nil
}

// acceptRaft hands a raft connection to the running raft instance, unless the dialer
// belongs to another cluster or this node is stale.
func (n *Node) acceptRaft(c net.Conn, peer, theirID string) {
	n.mu.Lock()
	sl, mine, state := n.stream, n.clusterID, n.state
	n.mu.Unlock()
	if sl == nil || state == apiv1.StoreStale || (mine != "" && theirID != "" && mine != theirID) {
		n.log.Warn("raft connection refused", "peer", peer, "theirCluster", theirID, "ourCluster", mine, "storeState", state)
		_, _ = c.Write([]byte{0})
		n.untrack(c)
		return
	}
	if _, err := c.Write([]byte{1}); err != nil {
		n.untrack(c)
		return
	}
	select {
	case sl.ch <- c:
	case <-sl.closed:
		n.untrack(c)
	case <-n.done:
		n.untrack(c)
	}
}

// command is one entry of the replicated log.
type command struct {
	Op        string // "cluster_id", "retain"
	ClusterID string `json:",omitempty"`
	Msg       []byte `json:",omitempty"`
}

// fsm applies the replicated log: the cluster ID and the retained messages.
type fsm struct{ n *Node }

func (f *fsm) Apply(l *raft.Log) any {
	var c command
	if err := json.Unmarshal(l.Data, &c); err != nil {
		f.n.log.Error("undecodable raft log entry", "index", l.Index, "error", err)
		return err
	}
	switch c.Op {
	case "cluster_id":
		f.n.adoptClusterID(c.ClusterID)
	case "retain":
		m, err := store.DecodeMessage(c.Msg)
		if err != nil {
			f.n.log.Error("undecodable retained message in the raft log", "index", l.Index, "error", err)
			return err
		}
		f.n.srv.ApplyRetained(m)
	}
	return nil
}

// adoptClusterID records the cluster ID the log carries; a different one in this
// node's store makes the node stale.
func (n *Node) adoptClusterID(id string) {
	n.mu.Lock()
	mine := n.clusterID
	if mine == "" {
		n.clusterID = id
	}
	n.mu.Unlock()
	switch {
	case mine == "":
		if err := n.storeClusterID(id); err != nil {
			n.log.Error("storing the cluster ID", "error", err)
		}
	case mine != id:
		// Not from the FSM goroutine itself: stopping raft waits for it.
		go n.markStale(fmt.Sprintf("this node's store belongs to cluster %s, the cluster's log says %s", mine, id))
	}
}

// StoreConfiguration implements raft.ConfigurationStore: it records the latest
// committed configuration (snapshots carry it, for a node that catches up from one)
// and notes it for configView.
func (f *fsm) StoreConfiguration(index uint64, c raft.Configuration) {
	f.n.mu.Lock()
	if index >= f.n.committedIndex {
		f.n.committedIndex, f.n.committedServers = index, c.Servers
	}
	f.n.mu.Unlock()
	f.n.noteConfig(index, c.Servers)
}

type fsmState struct {
	ConfigIndex uint64
	Servers     []raft.Server // the committed configuration at ConfigIndex
	ClusterID   string
	Retained    [][]byte
}

func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	f.n.mu.Lock()
	st := fsmState{ClusterID: f.n.clusterID, ConfigIndex: f.n.committedIndex, Servers: f.n.committedServers}
	f.n.mu.Unlock()
	for _, m := range f.n.srv.RetainedMessages() {
		st.Retained = append(st.Retained, store.EncodeMessage(m))
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
		f.n.adoptClusterID(st.ClusterID)
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
	f.n.srv.ReplaceRetained(msgs)
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
func (n *Node) apply(c command) error {
	data, err := json.Marshal(c)
	if err != nil {
		return err
	}
	n.mu.Lock()
	r := n.raft
	n.mu.Unlock()
	if r == nil {
		return errorf(apiv1.CodeNotMember, "raft is not running")
	}
	if r.State() == raft.Leader {
		return applyErr(r.Apply(data, requestTimeout).Error())
	}
	resp, err := n.requestLeader(&request{Op: opApply, Data: data})
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
