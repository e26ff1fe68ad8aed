package cluster

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// TestVoteGuard: while the store is empty the node grants no vote and no pre-vote
// (raft never sees the request); otherwise, and for every other RPC, raft gets it.
func TestVoteGuard(t *testing.T) {
	var empty atomic.Bool
	in, done := make(chan raft.RPC), make(chan struct{})
	defer close(done)
	g := &voteGuard{refuse: empty.Load, out: make(chan raft.RPC)}
	go g.run(in, done)
	send := func(cmd any) (passed bool, resp any) {
		t.Helper()
		respCh := make(chan raft.RPCResponse, 1)
		in <- raft.RPC{Command: cmd, RespChan: respCh}
		select {
		case rpc := <-g.out:
			if rpc.Command != cmd {
				t.Fatalf("raft got %T, want %T", rpc.Command, cmd)
			}
			return true, nil
		case r := <-respCh:
			return false, r.Response
		case <-time.After(10 * time.Second):
			t.Fatal("the RPC was neither passed on nor answered")
		}
		return false, nil
	}
	for _, tc := range []struct {
		name   string
		empty  bool
		cmd    any
		passed bool
	}{
		{"vote, store holds the cluster", false, &raft.RequestVoteRequest{Term: 7}, true},
		{"pre-vote, store holds the cluster", false, &raft.RequestPreVoteRequest{Term: 7}, true},
		{"vote, empty store", true, &raft.RequestVoteRequest{Term: 7}, false},
		{"pre-vote, empty store", true, &raft.RequestPreVoteRequest{Term: 7}, false},
		{"entries, empty store", true, &raft.AppendEntriesRequest{Term: 7}, true},
		{"snapshot, empty store", true, &raft.InstallSnapshotRequest{Term: 7}, true},
	} {
		empty.Store(tc.empty)
		passed, resp := send(tc.cmd)
		if passed != tc.passed {
			t.Fatalf("%s: passed to raft %v, want %v", tc.name, passed, tc.passed)
		}
		switch r := resp.(type) {
		case *raft.RequestVoteResponse:
			if r.Granted || r.Term != 7 {
				t.Fatalf("%s: %+v", tc.name, r)
			}
		case *raft.RequestPreVoteResponse:
			if r.Granted || r.Term != 7 {
				t.Fatalf("%s: %+v", tc.name, r)
			}
		}
	}
}
