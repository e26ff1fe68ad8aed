package session

import (
	"sync/atomic"
	"time"

	"github.com/mqtt-operator/mqtt-operator/broker/internal/lockorder"
	"github.com/mqtt-operator/mqtt-operator/broker/topic"
)

// DropPolicy says which message a full queue gives up.
type DropPolicy int

const (
	// DropNewest refuses the message that does not fit (Mosquitto's behavior).
	DropNewest DropPolicy = iota
	// DropOldest discards the oldest queued message to make room.
	DropOldest
)

// Limits bound the memory a session may hold.
type Limits struct {
	MaxQueued      int // messages waiting to be sent (not yet inflight)
	MaxQueuedBytes int // payload bytes of those messages (0: no limit)
	Policy         DropPolicy
	// Drops, when set, counts every session's drops by the limit that caused them; the
	// server shares one between all its sessions for its metrics.
	Drops *Drops
}

// Drops counts the messages full queues dropped, by the limit that was reached.
type Drops struct {
	Messages atomic.Uint64 // MaxQueued
	Bytes    atomic.Uint64 // MaxQueuedBytes
}

func (d *Drops) add(overBytes bool) {
	switch {
	case d == nil:
	case overBytes:
		d.Bytes.Add(1)
	default:
		d.Messages.Add(1)
	}
}

// Session is the state of one client ID. Every method locks the session itself; the
// lock is never held while calling out (notify is a non-blocking signal).
type Session struct {
	ID string

	mu       lockorder.Mutex
	limits   Limits
	subs     subSet               // key: the filter as subscribed, $share prefix included
	queue    []*Delivery          // FIFO; head at index 0
	queued   int                  // payload bytes in queue
	inflight map[uint16]*Delivery // nil until the first
	order    []uint16             // inflight packet IDs in send order
	inbound  map[uint16]struct{}  // nil until the first
	nextID   uint16
	nextSeq  uint64 // the StoreSeq of the next queued delivery
	window   int
	notify   func()
	gen      uint64 // connection generation: a replaced connection's writer gets nothing
	dropped  uint64
	owner    string // the user whose session this is (see Owner)
	// restored counts the queued deliveries a moved session was restored with, until
	// MergeMoved puts what its old node received meanwhile after them.
	restored int
	// moved holds, until movedUntil, the IDs of the messages the session held when its
	// move finished: a copy of one that reaches this node late is not queued again.
	moved      map[deliveryKey]struct{}
	movedUntil time.Time
}

// New returns an empty session.
func New(id string, limits Limits) *Session {
	// The maps are made on first use: most sessions of a large fleet are idle, with
	// nothing in flight.
	return &Session{ID: id, limits: limits}
}

// addInflight records d as inflight under its packet ID. Lock held on entry.
func (s *Session) addInflight(d *Delivery) {
	if s.inflight == nil {
		s.inflight = make(map[uint16]*Delivery)
	}
	s.inflight[d.PacketID] = d
}

// addInbound records an inbound QoS 2 packet ID. Lock held on entry.
func (s *Session) addInbound(id uint16) {
	if s.inbound == nil {
		s.inbound = make(map[uint16]struct{})
	}
	s.inbound[id] = struct{}{}
}

// Attach connects the session to a connection whose writer is woken by notify, with the
// client's receive maximum as the outbound inflight window. Inflight deliveries are
// marked for retransmission (PUBLISH with DUP, or PUBREL) in their original order.
// The returned generation identifies the connection in NextBatch and Detach.
func (s *Session) Attach(notify func(), window int) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gen++
	s.notify = notify
	s.window = window
	for _, id := range s.order {
		d := s.inflight[id]
		d.resend = true
		if !d.Released {
			d.Dup = true
		}
	}
	s.signal()
	return s.gen
}

// Detach disconnects the session from connection gen (a no-op when another connection
// has attached since). QoS 0 messages still queued are dropped: they are only for
// connected clients.
func (s *Session) Detach(gen uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if gen != s.gen {
		return
	}
	s.notify = nil
	kept, restored := s.queue[:0], s.restored
	for i, d := range s.queue {
		if d.QoS > 0 {
			kept = append(kept, d)
		} else {
			s.queued -= d.size()
			if i < s.restored {
				restored--
			}
		}
	}
	s.restored = restored
	clear(s.queue[len(kept):])
	s.queue = kept
}

// Connected reports whether a connection is attached.
func (s *Session) Connected() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.notify != nil
}

// signal wakes the attached writer. Lock held on entry.
func (s *Session) signal() {
	if s.notify != nil {
		s.notify()
	}
}

// Enqueue queues a delivery. QoS 0 deliveries to a detached session are not kept. It
// reports whether d was queued, and how many messages a full queue (MaxQueued
// messages or MaxQueuedBytes payload bytes) dropped, counted: d itself under
// DropNewest, as many of the oldest queued ones as make room under DropOldest. A
// message larger than MaxQueuedBytes on its own never fits and is dropped itself.
func (s *Session) Enqueue(d *Delivery) (queued bool, dropped int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.enqueueLocked(d, nil)
}

// EnqueueStored is Enqueue for a session whose queue is kept in a store: record is
// called, with the session locked, with d when it was queued (else nil) and the
// StoreSeq of every delivery the full queue dropped for it, unless both are empty.
// Called under the lock, the store sees a session's changes in the order they
// happen; record must not call back into the session.
func (s *Session) EnqueueStored(d *Delivery, record func(added *Delivery, dropped []uint64)) (queued bool, dropped int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var seqs []uint64
	queued, dropped = s.enqueueLocked(d, &seqs)
	var added *Delivery
	if n := len(s.queue); n > 0 && s.queue[n-1] == d {
		added = d
	}
	if added != nil || len(seqs) > 0 {
		record(added, seqs)
	}
	return queued, dropped
}

// enqueueLocked queues d; the StoreSeq of each delivery dropped for it is appended to
// droppedSeqs unless that is nil. Lock held on entry.
func (s *Session) enqueueLocked(d *Delivery, droppedSeqs *[]uint64) (queued bool, dropped int) {
	if s.notify == nil && d.QoS == 0 {
		return true, 0
	}
	if s.moved != nil && d.Msg != nil && !d.Msg.ID.IsZero() {
		if time.Now().After(s.movedUntil) {
			s.moved = nil
		} else if _, dup := s.moved[keyOf(d)]; dup {
			return true, 0 // the session has it already: a late copy from the other node
		}
	}
	size := d.size()
	tooBig := s.limits.MaxQueuedBytes > 0 && size > s.limits.MaxQueuedBytes
	if s.limits.Policy == DropNewest || tooBig {
		if full, overBytes := s.full(size); full {
			s.dropped++
			s.limits.Drops.add(overBytes)
			return false, 1
		}
	}
	for {
		full, overBytes := s.full(size)
		if !full {
			break
		}
		s.dropped++
		s.limits.Drops.add(overBytes)
		dropped++
		s.restored = max(s.restored-1, 0)
		s.queued -= s.queue[0].size()
		if droppedSeqs != nil {
			*droppedSeqs = append(*droppedSeqs, s.queue[0].StoreSeq)
		}
		copy(s.queue, s.queue[1:])
		s.queue[len(s.queue)-1] = nil
		s.queue = s.queue[:len(s.queue)-1]
	}
	d.StoreSeq = s.nextSeq
	s.nextSeq++
	s.queue = append(s.queue, d)
	s.queued += size
	s.signal()
	return true, dropped
}

// full reports whether a delivery of size payload bytes does not fit in the queue now,
// and whether the byte limit is the reason. Lock held on entry.
func (s *Session) full(size int) (full, overBytes bool) {
	if s.limits.MaxQueued > 0 && len(s.queue) >= s.limits.MaxQueued {
		return true, false
	}
	if s.limits.MaxQueuedBytes > 0 && s.queued+size > s.limits.MaxQueuedBytes {
		return true, true
	}
	return false, false
}

// NextBatch appends to out what the connection should write now: first inflight
// deliveries marked for retransmission, then queued deliveries while the inflight
// window has room. QoS 1/2 deliveries get a packet ID and become inflight. Expired
// messages are discarded. expired counts the messages discarded because they expired.
// Deliveries are returned as copies so the writer reads them without the lock.
func (s *Session) NextBatch(gen uint64, out []Delivery, now time.Time) (batch []Delivery, expired int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if gen != s.gen || s.notify == nil {
		return out, 0
	}
	for _, id := range s.order {
		if d := s.inflight[id]; d.resend {
			d.resend = false
			out = append(out, *d)
		}
	}
	n := 0
	for ; n < len(s.queue); n++ {
		d := s.queue[n]
		if d.Msg.Expired(now) {
			expired++
			continue
		}
		if d.QoS > 0 {
			if len(s.inflight) >= s.window {
				break
			}
			d.PacketID = s.allocID()
			s.addInflight(d)
			s.order = append(s.order, d.PacketID)
		}
		out = append(out, *d)
	}
	for _, d := range s.queue[:n] {
		s.queued -= d.size()
	}
	s.restored = max(s.restored-n, 0)
	if s.moved != nil && now.After(s.movedUntil) {
		s.moved = nil
	}
	copy(s.queue, s.queue[n:])
	clear(s.queue[len(s.queue)-n:])
	s.queue = s.queue[:len(s.queue)-n]
	return out, expired
}

// allocID returns a packet ID not in use by an inflight delivery. Lock held on entry;
// the window (at most 65535) guarantees a free one exists.
func (s *Session) allocID() uint16 {
	for {
		s.nextID++
		if s.nextID == 0 {
			s.nextID = 1
		}
		if _, used := s.inflight[s.nextID]; !used {
			return s.nextID
		}
	}
}

// Acked handles PUBACK or PUBCOMP (and a failed PUBREC): the delivery with id is done.
// It reports whether id was inflight.
func (s *Session) Acked(id uint16) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.inflight[id]; !ok {
		return false
	}
	s.remove(id)
	s.signal() // the window has room again
	return true
}

// Received handles a successful PUBREC: the server now owes PUBREL. It reports whether
// id was an inflight QoS 2 delivery.
func (s *Session) Received(id uint16) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	d, ok := s.inflight[id]
	if !ok || d.QoS != 2 {
		return false
	}
	d.Released = true
	return true
}

// remove drops inflight id. Lock held on entry.
func (s *Session) remove(id uint16) {
	delete(s.inflight, id)
	for i, v := range s.order {
		if v == id {
			s.order = append(s.order[:i], s.order[i+1:]...)
			break
		}
	}
}

// AddInbound records an inbound QoS 2 packet ID until its PUBREL. It reports false when
// the ID was already recorded (a retransmission: the message must not be routed again).
func (s *Session) AddInbound(id uint16) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.inbound[id]; ok {
		return false
	}
	s.addInbound(id)
	return true
}

// ReleaseInbound handles PUBREL; it reports whether id was recorded.
func (s *Session) ReleaseInbound(id uint16) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.inbound[id]
	delete(s.inbound, id)
	return ok
}

// HasInbound reports whether inbound QoS 2 packet id awaits its PUBREL.
func (s *Session) HasInbound(id uint16) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.inbound[id]
	return ok
}

// InboundLen is the number of inbound QoS 2 messages awaiting PUBREL.
func (s *Session) InboundLen() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.inbound)
}

// Subscribe adds or replaces the subscription stored under key; it reports whether one
// existed.
func (s *Session) Subscribe(key string, sub topic.Subscription) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.subs.put(key, sub)
}

// MaySubscribe reports whether a subscription under key stays within max
// subscriptions: it replaces one, or there is room for one more.
func (s *Session) MaySubscribe(key string, limit int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, exists := s.subs.get(key)
	return exists || s.subs.len() < limit
}

// Unsubscribe removes the subscription stored under key.
func (s *Session) Unsubscribe(key string) (topic.Subscription, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.subs.remove(key)
}

// Subscriptions returns a copy of the session's subscriptions.
func (s *Session) Subscriptions() []topic.Subscription {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]topic.Subscription, 0, s.subs.len())
	for _, e := range s.subs.list {
		out = append(out, e.sub)
	}
	return out
}

// SubscriptionsByKey returns a copy of the session's subscriptions by the filter as
// subscribed ("$share/group/" prefix included), the key Unsubscribe takes.
func (s *Session) SubscriptionsByKey() map[string]topic.Subscription {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]topic.Subscription, s.subs.len())
	for _, e := range s.subs.list {
		out[e.key] = e.sub
	}
	return out
}

// SubscriptionCount returns how many subscriptions the session has.
func (s *Session) SubscriptionCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.subs.len()
}

// Dropped returns how many deliveries the full queue refused or discarded.
func (s *Session) Dropped() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dropped
}

// QueuedBytes returns the payload bytes of the queued deliveries.
func (s *Session) QueuedBytes() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queued
}

// Pending returns the number of queued and inflight deliveries.
func (s *Session) Pending() (queued, inflight int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.queue), len(s.inflight)
}

// Owner returns the user the session belongs to: a username, OwnerAnonymous, or ""
// when unknown (a session stored by a version that did not record it).
func (s *Session) Owner() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.owner
}

// SetOwner records the user the session belongs to.
func (s *Session) SetOwner(owner string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.owner = owner
}

// OwnerAnonymous is the owner of sessions created by clients without a username. It
// cannot be a username (usernames never start with '$').
const OwnerAnonymous = "$anonymous"

// Snapshot is a session's state as a store keeps it.
type Snapshot struct {
	ID string
	// Expiry is the session expiry interval in seconds and Disconnected when the client
	// left; the server fills both.
	Expiry        uint32
	Disconnected  time.Time
	Subscriptions map[string]topic.Subscription
	Queue         []*Delivery // inflight first, in order, then queued
	Inbound       []uint16
	// Owner is the user the session belongs to (see Session.Owner).
	Owner string
	// Partial marks a copy that was already handed over once and holds only what
	// arrived since (a kick of a session still moving): it adds to the full copy,
	// never replaces it.
	Partial bool
}

// Snapshot copies the session's state. Deliveries are shared, not deep-copied: their
// messages are immutable.
func (s *Session) Snapshot() Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.snapshotLocked()
}

// StoreSnapshot numbers the session's deliveries afresh (StoreSeq 0, 1, … in Snapshot's
// order; later ones continue from there) and calls save with the session's snapshot,
// with the session locked: a store that replaces every record of the session with it
// keeps one per delivery, in order, and sees this before any later EnqueueStored.
// save must not call back into the session.
func (s *Session) StoreSnapshot(save func(Snapshot)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nextSeq = 0
	for _, id := range s.order {
		s.inflight[id].StoreSeq = s.nextSeq
		s.nextSeq++
	}
	for _, d := range s.queue {
		d.StoreSeq = s.nextSeq
		s.nextSeq++
	}
	save(s.snapshotLocked())
}

func (s *Session) snapshotLocked() Snapshot {
	snap := Snapshot{ID: s.ID, Owner: s.owner, Subscriptions: make(map[string]topic.Subscription, s.subs.len())}
	for _, e := range s.subs.list {
		snap.Subscriptions[e.key] = e.sub
	}
	for _, id := range s.order {
		d := *s.inflight[id]
		snap.Queue = append(snap.Queue, &d)
	}
	for _, d := range s.queue {
		c := *d
		snap.Queue = append(snap.Queue, &c)
	}
	for id := range s.inbound {
		snap.Inbound = append(snap.Inbound, id)
	}
	return snap
}

// Restore builds a detached session from a snapshot: inflight deliveries keep their
// packet IDs and are retransmitted on the next Attach.
func Restore(snap Snapshot, limits Limits) *Session {
	s := New(snap.ID, limits)
	s.owner = snap.Owner
	for k, v := range snap.Subscriptions {
		s.subs.put(k, v)
	}
	for _, d := range snap.Queue {
		c := *d
		if c.PacketID != 0 {
			s.addInflight(&c)
			s.order = append(s.order, c.PacketID)
			if c.PacketID > s.nextID {
				s.nextID = c.PacketID
			}
			continue
		}
		s.queue = append(s.queue, &c)
		s.queued += c.size()
	}
	for _, d := range snap.Queue {
		s.nextSeq = max(s.nextSeq, d.StoreSeq+1)
	}
	s.restored = len(s.queue)
	for _, id := range snap.Inbound {
		s.addInbound(id)
	}
	return s
}

// Handover returns the session's state, like Snapshot, and empties its queue and
// inflight window in the same step: the state moves to another node, and what is
// enqueued afterwards is what arrived meanwhile (see Drain).
func (s *Session) Handover() Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	snap := s.snapshotLocked()
	clear(s.queue)
	s.queue = s.queue[:0]
	s.queued = 0
	clear(s.inflight)
	s.order = s.order[:0]
	return snap
}

// Prune removes the queued and inflight deliveries whose message keep refuses and
// returns how many it removed (a session changing hands keeps only what its new
// user may read). keep is called with the session locked: it must not call back.
func (s *Session) Prune(keep func(m *Message) bool) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n, restored := 0, s.restored
	kept := s.queue[:0]
	for i, d := range s.queue {
		if d.Msg != nil && !keep(d.Msg) {
			s.queued -= d.size()
			n++
			if i < s.restored {
				restored--
			}
			continue
		}
		kept = append(kept, d)
	}
	s.restored = restored
	clear(s.queue[len(kept):])
	s.queue = kept
	for _, id := range append([]uint16(nil), s.order...) {
		// A released QoS 2 delivery only owes its PUBREL, which shows nothing: it
		// stays, or the client would wait for that PUBREL forever.
		if d := s.inflight[id]; d.Msg != nil && !d.Released && !keep(d.Msg) {
			s.remove(id)
			n++
		}
	}
	if n > 0 {
		s.signal() // the window may have room for what is still queued
	}
	return n
}

// MergeMoved adds what a moved session's old node queued for it after the handover
// (extra, in the order it arrived there) to this copy, restored from the handover's
// state: after the restored deliveries and before what arrived here since, so older
// messages do not come after newer ones. A message can reach both nodes during the
// move (both had routes for the session): each message (by Message.ID) is kept once,
// the first copy in that order, and an inflight one is not queued again. It returns
// how many deliveries were added and how many a full queue dropped. For keep, a copy
// of one of the messages the session now holds that still reaches this node (a
// forward from a third node that was on its way) is not queued again.
func (s *Session) MergeMoved(extra []*Delivery, keep time.Duration) (added, dropped int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	mark := min(s.restored, len(s.queue))
	s.restored = 0
	s.moved = nil
	seen := make(map[deliveryKey]struct{}, len(s.inflight)+len(s.queue)+len(extra))
	defer func() {
		if len(seen) > 0 && keep > 0 {
			s.moved, s.movedUntil = seen, time.Now().Add(keep)
		}
	}()
	for _, d := range s.inflight {
		if d.Msg != nil && !d.Msg.ID.IsZero() {
			seen[keyOf(d)] = struct{}{}
		}
	}
	old := s.queue
	s.queue = make([]*Delivery, 0, len(old)+len(extra))
	s.queued = 0
	add := func(ds []*Delivery, counted bool) {
		for _, d := range ds {
			if d.Msg != nil && !d.Msg.ID.IsZero() {
				if _, dup := seen[keyOf(d)]; dup {
					continue
				}
				seen[keyOf(d)] = struct{}{}
			}
			queued, n := s.enqueueLocked(d, nil)
			dropped += n
			if queued && counted {
				added++
			}
		}
	}
	add(old[:mark], false)
	add(extra, true)
	add(old[mark:], false)
	return added, dropped
}

// deliveryKey tells one delivery of a message to a session from another: the message's
// ID, and whether it is for a shared subscription (a session may get both).
type deliveryKey struct {
	id     MessageID
	shared bool
}

func keyOf(d *Delivery) deliveryKey { return deliveryKey{d.Msg.ID, d.Shared} }

// Drain removes and returns the queued deliveries.
func (s *Session) Drain() []*Delivery {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*Delivery, len(s.queue))
	for i, d := range s.queue {
		c := *d
		out[i] = &c
	}
	clear(s.queue)
	s.queue = s.queue[:0]
	s.queued = 0
	return out
}
