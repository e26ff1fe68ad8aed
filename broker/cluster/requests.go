package cluster

import (
	"github.com/mqtt-operator/mqtt-operator/broker/apiv1"
	"github.com/mqtt-operator/mqtt-operator/broker/server"
	"github.com/mqtt-operator/mqtt-operator/broker/session"
	"github.com/mqtt-operator/mqtt-operator/broker/store"
)

// handleRequest answers a request from peer (or from this node itself), handing it
// to the part it concerns.
func (n *Node) handleRequest(peer string, req *request) *response {
	switch req.Op {
	case opJoin, opPromote, opRemove, opApply, opReadIndex:
		return n.mem.handleLeaderOp(req)
	case opTakeover:
		res, err := n.own.ownerTakeover(req.ClientID, req.Clean, peer, req.claim())
		if err != nil {
			return errResponse(err)
		}
		snap, turn := res.snap, res.turn
		if !req.Turns { // an older requester never ends the turn
			n.own.turns.release(req.ClientID, turn)
			turn = 0
		}
		resp := sessionResponse(&response{Epoch: res.epoch, Node: res.source, Also: res.also, Skipped: res.skipped, Turn: turn}, snap)
		if resp.Code != "" {
			n.own.turns.release(req.ClientID, turn)
		}
		return resp
	case opTurn:
		turn := n.own.turns.acquire(req.ClientID, turnWait, n.done)
		if turn == 0 {
			return errResponse(errorf(apiv1.CodeSessionMoving, "%v: another move of it is still running", server.ErrSessionMoving))
		}
		return &response{Turn: turn}
	case opTurnDone:
		n.own.turns.release(req.ClientID, req.Turn)
		return &response{}
	case opKick:
		kick := n.srv.Kick
		if req.Stale {
			kick = n.srv.KickStale
		}
		snap, err := kick(req.ClientID, req.Epoch, !req.Clean, req.claim())
		if err != nil {
			return errResponse(kickError(err))
		}
		return sessionResponse(&response{}, snap)
	case opRelease:
		// The new node's routes reached every peer (its barrier): what they forwarded
		// here before that is drained first, into this copy.
		n.routes.drainInbound()
		extra := n.srv.Release(req.ClientID, req.Epoch)
		return sessionResponse(&response{}, &session.Snapshot{ID: req.ClientID, Queue: extra})
	case opSync:
		return &response{}
	case opFlush:
		// A sync over this node's own link to the asker: answered there after every
		// forward this node sent it before.
		resp, err := n.routes.requestOn(peer, &request{Op: opSync}, true)
		if err == nil {
			err = resp.err()
		}
		if err != nil {
			return errResponse(err)
		}
		return &response{}
	case opAdopt:
		snap, err := store.DecodeSession(req.Data)
		if err != nil {
			return errResponse(errorf(apiv1.CodeBadRequest, "undecodable session: %v", err))
		}
		if !n.srv.AdoptSession(snap) {
			return &response{}
		}
		n.srv.MergeMoved(snap.ID, n.own.settle(snap.ID, peer, 0)) // an evacuation's move
		return &response{OK: true}
	case opManage:
		return n.answerManage(req)
	case opUnmove:
		snap, err := store.DecodeSession(req.Data)
		if err != nil {
			return errResponse(errorf(apiv1.CodeBadRequest, "undecodable session: %v", err))
		}
		n.srv.Unmove(snap, req.Epoch)
		return &response{}
	}
	return errResponse(errorf(apiv1.CodeBadRequest, "unknown request %q", req.Op))
}

func sessionResponse(resp *response, snap *session.Snapshot) *response {
	if snap == nil {
		return resp
	}
	b, err := store.EncodeSession(*snap)
	if err != nil {
		return errResponse(err)
	}
	resp.Data = b
	return resp
}
