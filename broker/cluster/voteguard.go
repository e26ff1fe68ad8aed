package cluster

import (
	"github.com/hashicorp/raft"
)

// voteGuard is raft's transport with one rule added: while refuse says so (the node's
// store is empty: it never joined, or it was reset or lost its volume), the node
// grants no vote and no pre-vote. A voter that lost its store is still listed as a
// voter until its join demotes it; had it voted meanwhile, a candidate missing entries
// the node had acknowledged before could win with its vote and lose them (raft's
// hazard of a voter that lost its disk). hashicorp/raft grants votes whatever the
// voter's own log, so the refusal is made here, before raft sees the request.
type voteGuard struct {
	*raft.NetworkTransport
	refuse func() bool
	header raft.RPCHeader
	out    chan raft.RPC
}

// guardVotes wraps trans; it passes RPCs on until done is closed.
func guardVotes(trans *raft.NetworkTransport, id raft.ServerID, refuse func() bool, done <-chan struct{}) *voteGuard {
	g := &voteGuard{NetworkTransport: trans, refuse: refuse, out: make(chan raft.RPC),
		header: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte(id),
			Addr: trans.EncodePeer(id, trans.LocalAddr())}}
	go g.run(trans.Consumer(), done)
	return g
}

// Consumer implements raft.Transport: the RPCs the guard lets through.
func (g *voteGuard) Consumer() <-chan raft.RPC { return g.out }

func (g *voteGuard) run(in <-chan raft.RPC, done <-chan struct{}) {
	for {
		var rpc raft.RPC
		select {
		case rpc = <-in:
		case <-done:
			return
		}
		if resp := g.refusal(rpc.Command); resp != nil {
			rpc.Respond(resp, nil)
			continue
		}
		select {
		case g.out <- rpc:
		case <-done:
			return
		}
	}
}

// refusal is the answer to a vote or pre-vote request the node must not grant now,
// nil for anything else.
func (g *voteGuard) refusal(cmd any) any {
	switch req := cmd.(type) {
	case *raft.RequestVoteRequest:
		if g.refuse() {
			return &raft.RequestVoteResponse{RPCHeader: g.header, Term: req.Term}
		}
	case *raft.RequestPreVoteRequest:
		if g.refuse() {
			return &raft.RequestPreVoteResponse{RPCHeader: g.header, Term: req.Term}
		}
	}
	return nil
}
