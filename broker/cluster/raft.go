package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/mqtt-operator/mqtt-operator/broker/store"
)

// keyClusterID is where the stable store keeps the cluster ID this node belongs to.
var keyClusterID = []byte("mqttd/cluster_id")

func (m *membership) storedClusterID() (string, error) {
	v, err := m.cfg.Store.RaftStore().Get(keyClusterID)
	if err != nil && err.Error() == store.ErrKeyNotFound.Error() {
		return "", nil
	}
	return string(v), err
}

func (m *membership) storeClusterID(id string) error {
	return m.cfg.Store.RaftStore().Set(keyClusterID, []byte(id))
}

// startRaft starts this node's raft instance on its store. A node with no state waits
// to be added by a leader (join) or bootstrapped.
func (m *membership) startRaft() error {
	rs := m.cfg.Store.RaftStore()
	snaps, err := raft.NewFileSnapshotStoreWithLogger(m.cfg.SnapshotDir, 2, m.hclog())
	if err != nil {
		return fmt.Errorf("raft snapshots in %s: %w", m.cfg.SnapshotDir, err)
	}
	// The advertised address is a name other nodes resolve when they dial; this node
	// need not resolve it itself (its DNS record may appear after it starts).
	if _, _, err := net.SplitHostPort(m.cfg.Advertise); err != nil {
		return fmt.Errorf("cluster advertise address %q: %w", m.cfg.Advertise, err)
	}
	sl := &streamLayer{tr: m.tr, addr: advertised(m.cfg.Advertise), ch: make(chan net.Conn), closed: make(chan struct{})}
	trans := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{Stream: sl, MaxPool: 3,
		Timeout: 10 * time.Second, Logger: m.hclog()})
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(m.cfg.Name)
	rc.HeartbeatTimeout = m.cfg.HeartbeatTimeout
	rc.ElectionTimeout = m.cfg.HeartbeatTimeout
	rc.LeaderLeaseTimeout = m.cfg.HeartbeatTimeout / 2
	rc.CommitTimeout = 10 * time.Millisecond
	rc.Logger = m.hclog()
	idx, servers, err := latestConfig(rs, snaps)
	if err != nil {
		_ = trans.Close()
		return fmt.Errorf("reading the raft log: %w", err)
	}
	m.noteConfig(idx, servers)
	m.mu.Lock()
	m.snaps = snaps
	m.mu.Unlock()
	guarded := guardVotes(trans, rc.LocalID, m.storeEmpty, sl.closed)
	r, err := raft.NewRaft(rc, &fsm{m: m}, configLog{rs, m}, rs, snaps, guarded)
	if err != nil {
		_ = trans.Close()
		return fmt.Errorf("starting raft: %w", err)
	}
	m.mu.Lock()
	m.raft, m.stream = r, sl
	m.mu.Unlock()
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
	m *membership
}

func (l configLog) StoreLog(e *raft.Log) error { return l.StoreLogs([]*raft.Log{e}) }

func (l configLog) StoreLogs(logs []*raft.Log) error {
	if err := l.LogStore.StoreLogs(logs); err != nil {
		return err
	}
	for _, e := range logs {
		if e.Type == raft.LogConfiguration {
			l.m.noteConfig(e.Index, raft.DecodeConfiguration(e.Data).Servers)
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
	m := l.m
	m.mu.Lock()
	noted, committed, servers := m.configIndex, m.committedIndex, m.committedServers
	m.mu.Unlock()
	if noted <= last {
		return nil
	}
	idx, found := committed, false
	if i, s, ok, err := newestConfigEntry(l.LogStore, committed); err != nil {
		return err
	} else if ok {
		idx, servers, found = i, s, true
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.configIndex != noted {
		return nil // noted anew meanwhile (the state machine applied a committed one)
	}
	m.configIndex, m.configServers = idx, servers
	m.log.Info("a new leader truncated this node's newest configuration entry", "index", noted, "now", idx, "fromLog", found)
	return nil
}

// stopRaft shuts raft down (stale, reset).
func (m *membership) stopRaft() {
	m.mu.Lock()
	r := m.raft
	m.raft = nil
	m.mu.Unlock()
	if r != nil {
		if err := r.Shutdown().Error(); err != nil {
			m.log.Warn("raft shutdown", "error", err)
		}
	}
}

// hclog gives raft a logger that writes through the node's: raft's debug lines when
// the node logs at debug level, otherwise its warnings and errors only.
func (m *membership) hclog() hclog.Logger {
	lvl := hclog.Warn
	if m.log.Enabled(context.Background(), slog.LevelDebug) {
		lvl = hclog.Debug
	}
	return hclog.New(&hclog.LoggerOptions{Name: "raft", Level: lvl, Output: slogWriter{m.log}, DisableTime: true})
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
	tr     *transport
	addr   net.Addr
	ch     chan net.Conn
	closed chan struct{}
	once   sync.Once
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
	s.once.Do(func() { close(s.closed) })
	return nil
}

func (s *streamLayer) Addr() net.Addr { return s.addr }

func (s *streamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c, err := s.tr.dial(ctx, string(address), chanRaft)
	if err != nil {
		return nil, err
	}
	var ok [1]byte
	_ = c.SetReadDeadline(time.Now().Add(timeout))
	if _, err := io.ReadFull(c, ok[:]); err != nil || ok[0] != 1 {
		s.tr.untrack(c)
		return nil, fmt.Errorf("raft connection to %s refused (another cluster, or a stale node)", address)
	}
	_ = c.SetReadDeadline(time.Time{})
	return c, nil
}

// acceptRaft hands a raft connection to the running raft instance, unless the dialer
// belongs to another cluster or this node is stale (judgeRaftConn).
func (m *membership) acceptRaft(c net.Conn, peer, theirID string) {
	m.mu.Lock()
	sl, v := m.stream, m.viewLocked()
	m.mu.Unlock()
	if !judgeRaftConn(v, sl != nil, theirID) {
		m.log.Warn("raft connection refused", "peer", peer, "theirCluster", theirID, "ourCluster", v.ClusterID, "storeState", v.State)
		_, _ = c.Write([]byte{0})
		m.tr.untrack(c)
		return
	}
	if _, err := c.Write([]byte{1}); err != nil {
		m.tr.untrack(c)
		return
	}
	select {
	case sl.ch <- c:
	case <-sl.closed:
		m.tr.untrack(c)
	case <-m.done:
		m.tr.untrack(c)
	}
}
