package session

import (
	"runtime"
	"strings"
	"testing"
	"time"
)

func msg(topic string, qos byte) *Message { return &Message{Topic: topic, QoS: qos} }

func attach(s *Session, window int) uint64 {
	return s.Attach(func() {}, window)
}

func TestWindowAndAcks(t *testing.T) {
	s := New("c", Limits{MaxQueued: 100})
	gen := attach(s, 2)
	for i := 0; i < 5; i++ {
		s.Enqueue(&Delivery{Msg: msg("t", 1), QoS: 1})
	}
	batch, _ := s.NextBatch(gen, nil, time.Now())
	if len(batch) != 2 {
		t.Fatalf("window 2: got %d deliveries", len(batch))
	}
	if batch[0].PacketID == 0 || batch[0].PacketID == batch[1].PacketID {
		t.Fatalf("packet ids %d %d", batch[0].PacketID, batch[1].PacketID)
	}
	if more, _ := s.NextBatch(gen, nil, time.Now()); len(more) != 0 {
		t.Fatalf("window full but got %d more", len(more))
	}
	if !s.Acked(batch[0].PacketID) || s.Acked(batch[0].PacketID) {
		t.Fatal("ack must succeed once")
	}
	if more, _ := s.NextBatch(gen, nil, time.Now()); len(more) != 1 {
		t.Fatalf("one slot freed, got %d", len(more))
	}
	if q, in := s.Pending(); q != 2 || in != 2 {
		t.Fatalf("pending q=%d inflight=%d", q, in)
	}
}

func TestQoS0NotQueuedOffline(t *testing.T) {
	s := New("c", Limits{MaxQueued: 10})
	s.Enqueue(&Delivery{Msg: msg("t", 0)})
	s.Enqueue(&Delivery{Msg: msg("t", 1), QoS: 1})
	if q, _ := s.Pending(); q != 1 {
		t.Fatalf("queued %d, want only the QoS 1 one", q)
	}
	gen := attach(s, 10)
	s.Enqueue(&Delivery{Msg: msg("t", 0)})
	s.Detach(gen)
	if q, _ := s.Pending(); q != 1 {
		t.Fatalf("detach must drop queued QoS 0: queued %d", q)
	}
}

func TestDropPolicies(t *testing.T) {
	for _, tc := range []struct {
		policy DropPolicy
		first  string
	}{{DropNewest, "m0"}, {DropOldest, "m2"}} {
		s := New("c", Limits{MaxQueued: 3, Policy: tc.policy})
		for i := 0; i < 5; i++ {
			s.Enqueue(&Delivery{Msg: msg("m"+string(rune('0'+i)), 1), QoS: 1})
		}
		if s.Dropped() != 2 {
			t.Fatalf("policy %d: dropped %d", tc.policy, s.Dropped())
		}
		gen := attach(s, 10)
		batch, _ := s.NextBatch(gen, nil, time.Now())
		if len(batch) != 3 || batch[0].Msg.Topic != tc.first {
			t.Fatalf("policy %d: got %d, first %s", tc.policy, len(batch), batch[0].Msg.Topic)
		}
	}
}

func TestResendAfterReattach(t *testing.T) {
	s := New("c", Limits{MaxQueued: 10})
	gen := attach(s, 10)
	s.Enqueue(&Delivery{Msg: msg("a", 2), QoS: 2})
	s.Enqueue(&Delivery{Msg: msg("b", 1), QoS: 1})
	first, _ := s.NextBatch(gen, nil, time.Now())
	if !s.Received(first[0].PacketID) {
		t.Fatal("PUBREC for the QoS 2 delivery refused")
	}
	s.Detach(gen)
	gen2 := attach(s, 10)
	if old, _ := s.NextBatch(gen, nil, time.Now()); len(old) != 0 {
		t.Fatal("a replaced connection must get nothing")
	}
	again, _ := s.NextBatch(gen2, nil, time.Now())
	if len(again) != 2 {
		t.Fatalf("resend %d, want 2", len(again))
	}
	if !again[0].Released || again[0].Dup || again[0].PacketID != first[0].PacketID {
		t.Fatalf("QoS 2 after PUBREC must be resent as PUBREL: %+v", again[0])
	}
	if again[1].Released || !again[1].Dup || again[1].PacketID != first[1].PacketID {
		t.Fatalf("unacked QoS 1 must be resent with DUP and its id: %+v", again[1])
	}
}

func TestExpiredNotSent(t *testing.T) {
	s := New("c", Limits{MaxQueued: 10})
	gen := attach(s, 10)
	now := time.Now()
	s.Enqueue(&Delivery{Msg: &Message{Topic: "old", QoS: 1, Expiry: now.Add(-time.Second)}, QoS: 1})
	s.Enqueue(&Delivery{Msg: &Message{Topic: "new", QoS: 1, Expiry: now.Add(time.Minute)}, QoS: 1})
	batch, expired := s.NextBatch(gen, nil, now)
	if expired != 1 || len(batch) != 1 || batch[0].Msg.Topic != "new" {
		t.Fatalf("expired=%d batch=%v", expired, batch)
	}
	if rem, ok := batch[0].Msg.RemainingExpiry(now); !ok || rem != 60 {
		t.Fatalf("remaining %d %v", rem, ok)
	}
}

func TestInboundQoS2(t *testing.T) {
	s := New("c", Limits{})
	if !s.AddInbound(7) || s.AddInbound(7) {
		t.Fatal("a retransmitted id must be recognized")
	}
	if s.InboundLen() != 1 || !s.ReleaseInbound(7) || s.ReleaseInbound(7) {
		t.Fatal("release must succeed once")
	}
}

func TestSnapshotRestore(t *testing.T) {
	s := New("c", Limits{MaxQueued: 10})
	gen := attach(s, 1)
	s.Enqueue(&Delivery{Msg: msg("a", 1), QoS: 1})
	s.Enqueue(&Delivery{Msg: msg("b", 1), QoS: 1})
	inflight, _ := s.NextBatch(gen, nil, time.Now())
	s.AddInbound(9)
	s.Detach(gen)
	r := Restore(s.Snapshot(), Limits{MaxQueued: 10})
	gen2 := attach(r, 10)
	batch, _ := r.NextBatch(gen2, nil, time.Now())
	if len(batch) != 2 || batch[0].PacketID != inflight[0].PacketID || !batch[0].Dup || batch[1].Msg.Topic != "b" {
		t.Fatalf("restored batch %+v", batch)
	}
	if batch[1].PacketID == batch[0].PacketID {
		t.Fatal("restored session reused an inflight packet id")
	}
	if r.AddInbound(9) {
		t.Fatal("inbound QoS 2 state lost")
	}
}

func TestQueuedBytesLimit(t *testing.T) {
	payload := func(topic string, n int) *Delivery {
		return &Delivery{Msg: &Message{Topic: topic, QoS: 1, Payload: make([]byte, n)}, QoS: 1}
	}
	for _, tc := range []struct {
		name    string
		policy  DropPolicy
		sizes   []int
		queued  []string // topics left in the queue
		dropped uint64
	}{
		{"drop-newest refuses what does not fit", DropNewest, []int{40, 40, 30, 10}, []string{"m0", "m1", "m3"}, 1},
		{"drop-oldest makes room", DropOldest, []int{40, 40, 30}, []string{"m1", "m2"}, 1},
		{"drop-oldest drops several for a big one", DropOldest, []int{20, 20, 20, 90}, []string{"m3"}, 3},
		{"a message over the limit never fits", DropOldest, []int{20, 101}, []string{"m0"}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var drops Drops
			s := New("c", Limits{MaxQueued: 100, MaxQueuedBytes: 100, Policy: tc.policy, Drops: &drops})
			for i, n := range tc.sizes {
				s.Enqueue(payload("m"+string(rune('0'+i)), n))
			}
			var got []string
			for _, d := range s.Drain() {
				got = append(got, d.Msg.Topic)
			}
			if strings.Join(got, ",") != strings.Join(tc.queued, ",") {
				t.Errorf("queued %v, want %v", got, tc.queued)
			}
			if s.Dropped() != tc.dropped || drops.Bytes.Load() != tc.dropped || drops.Messages.Load() != 0 {
				t.Errorf("dropped %d (bytes %d, messages %d), want %d by bytes", s.Dropped(), drops.Bytes.Load(), drops.Messages.Load(), tc.dropped)
			}
			if s.QueuedBytes() != 0 {
				t.Errorf("%d bytes counted after Drain", s.QueuedBytes())
			}
		})
	}
}

func TestQueuedBytesFollowTheQueue(t *testing.T) {
	s := New("c", Limits{MaxQueued: 100, MaxQueuedBytes: 1000})
	gen := attach(s, 1)
	s.Enqueue(&Delivery{Msg: &Message{Topic: "a", Payload: make([]byte, 10)}})
	s.Enqueue(&Delivery{Msg: &Message{Topic: "b", QoS: 1, Payload: make([]byte, 20)}, QoS: 1})
	s.Enqueue(&Delivery{Msg: &Message{Topic: "c", QoS: 1, Payload: make([]byte, 40)}, QoS: 1})
	if got := s.QueuedBytes(); got != 70 {
		t.Fatalf("%d bytes queued, want 70", got)
	}
	s.NextBatch(gen, nil, time.Now()) // a and b go out (window 1), c waits
	if got := s.QueuedBytes(); got != 40 {
		t.Fatalf("%d bytes queued after a batch, want 40", got)
	}
	s.Enqueue(&Delivery{Msg: &Message{Topic: "d", Payload: make([]byte, 5)}})
	s.Detach(gen) // QoS 0 goes
	if got := s.QueuedBytes(); got != 40 {
		t.Fatalf("%d bytes queued after detach, want 40", got)
	}
	r := Restore(s.Handover(), s.limits)
	if s.QueuedBytes() != 0 || r.QueuedBytes() != 40 {
		t.Fatalf("after handover: %d bytes left, %d restored; want 0 and 40", s.QueuedBytes(), r.QueuedBytes())
	}
}

// TestMergeMoved: what a moved session's old node queued meanwhile goes after the
// restored state and before what arrived at the new node since, each message once
// (by ID); an inflight message is not queued again; messages without an ID are never
// taken for one another; a prune at install keeps the boundary.
func TestMergeMoved(t *testing.T) {
	id := func(n uint64) *Delivery {
		return &Delivery{Msg: &Message{Topic: "t", QoS: 1, Payload: []byte{byte(n)}, ID: MessageID{Origin: 7, Seq: n}}, QoS: 1}
	}
	noID := func(p byte) *Delivery {
		return &Delivery{Msg: &Message{Topic: "t", QoS: 1, Payload: []byte{p}}, QoS: 1}
	}
	for _, tc := range []struct {
		name             string
		inflight         []uint64 // restored with packet IDs
		restored, direct []*Delivery
		extra            []*Delivery
		prune            byte // payload byte pruned after the restore (0: none)
		want             []byte
		added            int
	}{
		{name: "extras between restored and direct", restored: []*Delivery{id(1), id(2)}, direct: []*Delivery{id(5)},
			extra: []*Delivery{id(3), id(4)}, want: []byte{1, 2, 3, 4, 5}, added: 2},
		{name: "a message on both nodes comes once, in the old node's place", restored: []*Delivery{id(1)},
			direct: []*Delivery{id(3), id(4)}, extra: []*Delivery{id(2), id(3)}, want: []byte{1, 2, 3, 4}, added: 2},
		{name: "a restored message that also reached the new node", restored: []*Delivery{id(1), id(2)},
			direct: []*Delivery{id(2), id(3)}, want: []byte{1, 2, 3}},
		{name: "inflight is not queued again", inflight: []uint64{1}, restored: []*Delivery{id(2)},
			extra: []*Delivery{id(1), id(3)}, want: []byte{2, 3}, added: 1},
		{name: "messages without an ID are all kept", restored: []*Delivery{noID(1)}, direct: []*Delivery{noID(1)},
			extra: []*Delivery{noID(1)}, want: []byte{1, 1, 1}, added: 1},
		{name: "a prune at install keeps the boundary", restored: []*Delivery{id(1), id(2)}, prune: 1,
			direct: []*Delivery{id(4)}, extra: []*Delivery{id(3)}, want: []byte{2, 3, 4}, added: 1},
		{name: "nothing arrived on the old node", restored: []*Delivery{id(1)}, direct: []*Delivery{id(2)},
			want: []byte{1, 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			snap := Snapshot{ID: "c"}
			for i, n := range tc.inflight {
				d := id(n)
				d.PacketID = uint16(i + 1)
				snap.Queue = append(snap.Queue, d)
			}
			snap.Queue = append(snap.Queue, tc.restored...)
			s := Restore(snap, Limits{MaxQueued: 100})
			if tc.prune != 0 {
				s.Prune(func(m *Message) bool { return m.Payload[0] != tc.prune })
			}
			for _, d := range tc.direct {
				s.Enqueue(d)
			}
			added, dropped := s.MergeMoved(tc.extra, time.Hour)
			if added != tc.added || dropped != 0 {
				t.Fatalf("added %d dropped %d, want %d and 0", added, dropped, tc.added)
			}
			var got []byte
			for _, d := range s.Snapshot().Queue {
				if d.PacketID == 0 {
					got = append(got, d.Msg.Payload[0])
				}
			}
			if string(got) != string(tc.want) {
				t.Fatalf("queue %v, want %v", got, tc.want)
			}
			// A late copy of a message the session held is not queued again; a new one is.
			before := len(s.Snapshot().Queue)
			for _, d := range append(append([]*Delivery(nil), tc.restored...), tc.extra...) {
				if !d.Msg.ID.IsZero() && d.Msg.Payload[0] != tc.prune {
					s.Enqueue(d)
				}
			}
			s.Enqueue(id(99))
			if after := len(s.Snapshot().Queue); after != before+1 {
				t.Fatalf("%d deliveries after late copies and one new message, want %d", after, before+1)
			}
		})
	}
}

// TestMovedWindowEnds: once the window after a move is over, the same ID is queued
// again (an ID is only remembered for the window).
func TestMovedWindowEnds(t *testing.T) {
	m := &Message{Topic: "t", QoS: 1, ID: MessageID{Origin: 1, Seq: 1}}
	s := Restore(Snapshot{ID: "c", Queue: []*Delivery{{Msg: m, QoS: 1}}}, Limits{})
	s.MergeMoved(nil, time.Nanosecond)
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) && !time.Now().After(s.movedUntil) {
		runtime.Gosched()
	}
	if queued, _ := s.Enqueue(&Delivery{Msg: m, QoS: 1}); !queued || len(s.queue) != 2 {
		t.Fatalf("after the window: queued %v, %d deliveries, want the copy queued", queued, len(s.queue))
	}
}

// TestMergeMovedAfterDrops: deliveries a full queue dropped, or the writer took, before
// the merge move its boundary along: the old node's messages still go before what
// arrived here since.
func TestMergeMovedAfterDrops(t *testing.T) {
	id := func(n uint64) *Delivery {
		return &Delivery{Msg: &Message{Topic: "t", QoS: 1, Payload: []byte{byte(n)}, ID: MessageID{Origin: 7, Seq: n}}, QoS: 1}
	}
	queue := func(s *Session) (out []byte) {
		for _, d := range s.Snapshot().Queue {
			if d.PacketID == 0 {
				out = append(out, d.Msg.Payload[0])
			}
		}
		return out
	}
	// Drop-oldest made room for a direct arrival.
	s := Restore(Snapshot{ID: "c", Queue: []*Delivery{id(1), id(2), id(3), id(4)}}, Limits{MaxQueued: 4, Policy: DropOldest})
	s.Enqueue(id(10))
	s.MergeMoved([]*Delivery{id(5)}, time.Hour)
	if got := queue(s); string(got) != string([]byte{3, 4, 5, 10}) {
		t.Fatalf("after a drop: %v, want [3 4 5 10]", got)
	}
	// The writer took restored deliveries before the merge.
	s = Restore(Snapshot{ID: "c", Queue: []*Delivery{id(1), id(2), id(3)}}, Limits{MaxQueued: 100})
	gen := s.Attach(func() {}, 2)
	s.NextBatch(gen, nil, time.Now()) // 1 and 2 go inflight
	s.Enqueue(id(10))
	s.MergeMoved([]*Delivery{id(4), id(2)}, time.Hour)
	if got := queue(s); string(got) != string([]byte{3, 4, 10}) {
		t.Fatalf("after the writer took two: %v, want [3 4 10]", got)
	}
}

// TestMergeMovedKeepsSharedAndPlain: a session with a shared and a plain subscription
// matching one message holds one delivery of each: the merge keeps both.
func TestMergeMovedKeepsSharedAndPlain(t *testing.T) {
	m := &Message{Topic: "t", QoS: 1, Payload: []byte{1}, ID: MessageID{Origin: 7, Seq: 1}}
	s := Restore(Snapshot{ID: "c", Queue: []*Delivery{{Msg: m, QoS: 1}, {Msg: m, QoS: 1, Shared: true}}}, Limits{})
	s.MergeMoved([]*Delivery{{Msg: m, QoS: 1, Shared: true}}, time.Hour)
	if n := len(s.Snapshot().Queue); n != 2 {
		t.Fatalf("%d deliveries, want the plain and the shared one", n)
	}
}

// TestStoreNumbering: StoreSnapshot numbers inflight then queued deliveries from 0
// and EnqueueStored goes on from there, reporting each queued delivery and the
// numbers of those a full queue dropped for it; nothing for a message not kept; a
// restored session continues after the highest number it was restored with.
func TestStoreNumbering(t *testing.T) {
	s := New("c", Limits{MaxQueued: 3, Policy: DropOldest})
	for range 4 {
		s.Enqueue(&Delivery{Msg: msg("t", 1), QoS: 1})
	}
	gen := attach(s, 1)
	s.NextBatch(gen, nil, time.Now()) // one inflight, two queued
	s.Detach(gen)
	var snap Snapshot
	s.StoreSnapshot(func(sn Snapshot) { snap = sn })
	var seqs []uint64
	for _, d := range snap.Queue {
		seqs = append(seqs, d.StoreSeq)
	}
	if len(seqs) != 3 || seqs[0] != 0 || seqs[1] != 1 || seqs[2] != 2 || snap.Queue[0].PacketID == 0 {
		t.Fatalf("snapshot numbers %v (first packet ID %d), want 0 1 2 with the inflight one first", seqs, snap.Queue[0].PacketID)
	}

	type call struct {
		added   uint64
		dropped []uint64
	}
	var calls []call
	record := func(added *Delivery, dropped []uint64) {
		c := call{added: 999, dropped: dropped}
		if added != nil {
			c.added = added.StoreSeq
		}
		calls = append(calls, c)
	}
	s.EnqueueStored(&Delivery{Msg: msg("t", 1), QoS: 1}, record) // queue 1 2 3: full
	s.EnqueueStored(&Delivery{Msg: msg("t", 1), QoS: 1}, record) // drops 1
	s.EnqueueStored(&Delivery{Msg: msg("t", 0)}, record)         // QoS 0 offline: not kept, no call
	if len(calls) != 2 || calls[0].added != 3 || len(calls[0].dropped) != 0 ||
		calls[1].added != 4 || len(calls[1].dropped) != 1 || calls[1].dropped[0] != 1 {
		t.Fatalf("calls %+v, want 3 then 4 dropping 1", calls)
	}

	r := Restore(s.Snapshot(), Limits{MaxQueued: 10})
	calls = nil
	r.EnqueueStored(&Delivery{Msg: msg("t", 1), QoS: 1}, record)
	if len(calls) != 1 || calls[0].added != 5 {
		t.Fatalf("restored session numbered %+v, want 5 (after 4)", calls)
	}
}
