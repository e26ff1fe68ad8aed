package cluster

import (
	"crypto/rand"
	"encoding/binary"

	"github.com/mqtt-operator/mqtt-operator/broker/internal/lockorder"
)

// randomID returns a random non-zero 64-bit ID.
func randomID() uint64 {
	var b [8]byte
	for {
		_, _ = rand.Read(b[:])
		if id := binary.LittleEndian.Uint64(b[:]); id != 0 {
			return id
		}
	}
}

// delivered is what this node delivered of one peer's link, and the lock its
// connections apply routes and deliver forwards under: the peer's link ID and the
// highest Seq of a forward from it delivered here. A peer's link writes its outbox in
// Seq order and writes it all again after a reconnect, so a forward whose Seq is not
// above the highest delivered one was delivered already (its ack was lost with the
// connection) and is only acknowledged. mu is held from the check to the update, across
// the delivery, so two connections of one peer (the old one not yet noticed dead)
// deliver each forward once.
type delivered struct {
	mu     lockorder.Mutex // taken before the server's locks (DeliverForwarded), never under them
	linkID uint64
	last   uint64
}

// deliveredFrom returns peer's record for its link linkID, started over when the
// link ID changed.
func (r *routing) deliveredFrom(peer string, linkID uint64) *delivered {
	r.mu.Lock()
	d := r.delivered[peer]
	if d == nil {
		d = &delivered{}
		r.delivered[peer] = d
	}
	r.mu.Unlock()
	d.mu.Lock()
	if d.linkID != linkID {
		d.linkID, d.last = linkID, 0
	}
	d.mu.Unlock()
	return d
}

// claim takes the peer's lock for the forward seq of link linkID and reports whether
// it is new: then the caller delivers it and calls release; a forward delivered
// already (false) leaves the lock free. A link ID of 0 (a peer of an older release) is
// not checked.
func (d *delivered) claim(linkID, seq uint64) bool {
	d.mu.Lock()
	if linkID != 0 && d.linkID == linkID {
		if seq <= d.last {
			d.mu.Unlock()
			return false
		}
		d.last = seq
	}
	return true
}

// release ends a claim.
func (d *delivered) release() { d.mu.Unlock() }

// locked runs fn holding the peer's lock: route changes of two connections of one
// peer apply one at a time, and never between a forward's check and its delivery.
func (d *delivered) locked(fn func()) {
	d.mu.Lock()
	defer d.mu.Unlock()
	fn()
}
