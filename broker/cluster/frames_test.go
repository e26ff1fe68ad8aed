package cluster

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"reflect"
	"runtime"
	"slices"
	"testing"

	"github.com/mqtt-operator/mqtt-operator/broker/server"
	"github.com/mqtt-operator/mqtt-operator/broker/session"
)

// sampleFrames has one frame of every kind the binary format carries, every field set.
func sampleFrames() []*frame {
	return []*frame{
		{Kind: fPing},
		{Kind: fPong},
		{Kind: fAck, Seq: 1 << 40, Count: 3},
		{Kind: fAck, Seq: 7, Count: -1},
		{Kind: fForward, Seq: 9, MsgID: session.MessageID{Origin: 1<<63 + 5, Seq: 77}, Msg: []byte("record\x00bytes"),
			Shared: []server.Route{{Group: "g", Filter: "a/+"}, {Filter: "b/#"}}},
		{Kind: fForward, Msg: []byte{1}}, // QoS 0: no Seq, no ID, no shared routes
		{Kind: fRoutes, Routes: &routes{Full: true, Add: []server.Route{{Filter: "x/#"}, {Group: "g", Filter: "y"}}}},
		{Kind: fRoutes, Routes: &routes{Del: []server.Route{{Filter: "gone"}}}},
		{Kind: fReq, Seq: 12, Req: &request{Op: opTakeover, Name: "n", Addr: "10.0.0.1:4370", ClusterID: "cid", Node: "node-2",
			ClientID: "dev-1", Clean: true, Epoch: 1 << 50, Data: []byte("data"), Owner: "alice", CheckOwner: true,
			Turn: 99, Turns: true, Stale: true, NonVoter: true}},
		{Kind: fReq, Seq: 1, Req: &request{Op: opSync}},
		{Kind: fResp, Seq: 12, Resp: &response{Code: "busy", Message: "try again", ClusterID: "cid", Epoch: 3,
			Data: []byte("snapshot"), OK: true, Node: "node-1", Also: []string{"node-0", "node-3"}, Skipped: []string{"node-4"},
			Index: 1234, Turn: 5}},
		{Kind: fResp, Seq: 2, Resp: &response{}},
	}
}

func TestFrameRoundTrip(t *testing.T) {
	var stream []byte
	for _, f := range sampleFrames() {
		var err error
		if stream, err = appendFrame(stream, f); err != nil {
			t.Fatalf("%+v: %v", f, err)
		}
	}
	r := bytes.NewReader(stream)
	for i, want := range sampleFrames() {
		var got frame
		if err := readFrame(r, &got); err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if !reflect.DeepEqual(&got, want) {
			t.Fatalf("frame %d:\n got %+v\nwant %+v", i, got, *want)
		}
	}
	var f frame
	if err := readFrame(r, &f); !errors.Is(err, io.EOF) {
		t.Fatalf("after the last frame: %v, want EOF", err)
	}
}

// Every truncation of every frame, a frame with bytes left over, an unknown kind and
// lengths out of range: an error, never a panic or a frame.
func TestFrameMalformed(t *testing.T) {
	for i, f := range sampleFrames() {
		enc, err := appendFrame(nil, f)
		if err != nil {
			t.Fatal(err)
		}
		body := enc[4:]
		for n := range len(body) {
			var got frame
			if err := decodeFrame(body[:n], &got); err == nil && n < len(body) {
				// A prefix may happen to be a whole frame only if it is the same frame.
				t.Fatalf("frame %d cut to %d of %d bytes decoded as %+v", i, n, len(body), got)
			}
		}
		var got frame
		if err := decodeFrame(append(slices.Clone(body), 0), &got); !errors.Is(err, errFrame) {
			t.Fatalf("frame %d with a byte left over: %v", i, err)
		}
		if err := readFrame(bytes.NewReader(enc[:len(enc)-1]), &got); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("frame %d cut short on the wire: %v", i, err)
		}
	}
	for _, tc := range []struct {
		name string
		wire []byte
	}{
		{"unknown kind", []byte{0, 0, 0, 1, 200}},
		{"the hello is never binary", []byte{0, 0, 0, 1, fHello}},
		{"empty", []byte{0, 0, 0, 0}},
		{"a length past the frame", []byte{0, 0, 0, 3, fForward, 0, 0x7f}},
		{"a huge list count", append([]byte{0, 0, 0, 13, fRoutes, 0}, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 0, 0)},
	} {
		var got frame
		if err := readFrame(bytes.NewReader(tc.wire), &got); !errors.Is(err, errFrame) {
			t.Fatalf("%s: %v, want a malformed frame", tc.name, err)
		}
	}
	if _, err := appendFrame(nil, &frame{Kind: fHello, Hello: &hello{}}); !errors.Is(err, errFrame) {
		t.Fatalf("a binary hello: %v", err)
	}
}

// A peer cannot make a node allocate much more than it sends (a few times, for the
// growing read buffer): a length of 4 GiB
// followed by little, and a list count of millions in a small frame.
func TestFrameAllocationBounded(t *testing.T) {
	allocated := func(f func()) uint64 {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		f()
		runtime.ReadMemStats(&after)
		return after.TotalAlloc - before.TotalAlloc
	}
	var got frame
	var err error
	n := allocated(func() { err = readFrame(bytes.NewReader([]byte{0xff, 0xff, 0xff, 0xff, fPing}), &got) })
	if !errors.Is(err, io.ErrUnexpectedEOF) || n > 2<<20 {
		t.Fatalf("a 4 GiB length with one byte after it: %v, %d bytes allocated", err, n)
	}
	// fRoutes, not full, then an Add count of 2^22 with 4 MiB of zeros: each zero byte
	// is half of an empty route, so the count is refused before anything is made.
	body := append([]byte{fRoutes, 0}, binary.AppendUvarint(nil, 1<<22)...)
	body = append(body, make([]byte, 4<<20)...)
	wire := binary.BigEndian.AppendUint32(nil, uint32(len(body)))
	wire = append(wire, body...)
	n = allocated(func() { err = readFrame(bytes.NewReader(wire), &got) })
	if !errors.Is(err, errFrame) || n > 4*uint64(len(wire)) { // the body, read in growing steps
		t.Fatalf("a route count bomb: %v, %d bytes allocated for a %d-byte frame", err, n, len(wire))
	}
}

func FuzzDecodeFrame(f *testing.F) {
	for _, fr := range sampleFrames() {
		enc, _ := appendFrame(nil, fr)
		f.Add(enc[4:])
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var got frame
		if decodeFrame(body, &got) != nil {
			return
		}
		again, err := appendFrame(nil, &got)
		if err != nil {
			t.Fatalf("a decoded frame does not encode: %v", err)
		}
		var back frame
		if err := decodeFrame(again[4:], &back); err != nil || !reflect.DeepEqual(&got, &back) {
			t.Fatalf("re-encoded frame differs: %v\n%+v\n%+v", err, got, back)
		}
	})
}

// A link between nodes of different releases: the versions negotiate down to what
// both speak, and routes, forwards with their acks and requests work either way.
func TestLinkProtocols(t *testing.T) {
	for _, tc := range []struct {
		a, b, want int
	}{
		{protoLatest, protoLatest, protoBinary},
		{protoGob, protoLatest, protoGob}, // an older dialer
		{protoLatest, protoGob, protoGob}, // an older listener
		{protoGob, protoGob, protoGob},
	} {
		t.Run(fmt.Sprintf("dialer %d listener %d", tc.a, tc.b), func(t *testing.T) {
			a, b, _, bs, _, _ := linkedPair(t, []string{"x/#"}, &fakeJudge{})
			a.proto, b.proto = tc.a, tc.b
			a.setLinks(servers("a", "b"))
			if c := bs.next(t); !c.full || !slices.Equal(c.add, []string{"x/#"}) {
				t.Fatalf("%+v, want the snapshot", c)
			}
			waitFor(t, func() bool { return a.peerUp("b") })
			a.mu.Lock()
			l := a.links["b"]
			a.mu.Unlock()
			if got := int(l.proto.Load()); got != tc.want {
				t.Fatalf("link protocol %d, want %d", got, tc.want)
			}
			a.sendRoutes(&routes{Add: []server.Route{{Group: "g", Filter: "z"}}})
			if c := bs.next(t); c.full || !slices.Equal(c.add, []string{"z"}) {
				t.Fatalf("%+v, want the delta", c)
			}
			wait := a.forward(&session.Message{Topic: "t", QoS: 1, Payload: []byte("p")}, map[string][]server.Route{"b": nil})
			if c := bs.next(t); c.delivered != "t" {
				t.Fatalf("%+v, want t delivered", c)
			}
			if n := wait(); n != 2 { // the fake server's count of sessions
				t.Fatalf("acknowledged count %d, want 2", n)
			}
			if resp, err := a.request("b", &request{Op: opSync}); err != nil || resp.ClusterID != "c1" {
				t.Fatalf("request: %+v %v", resp, err)
			}
		})
	}
}

func BenchmarkFrameForward(b *testing.B) {
	f := &frame{Kind: fForward, Seq: 12345, MsgID: session.MessageID{Origin: 1 << 62, Seq: 99999}, Msg: make([]byte, 96)}
	var buf []byte
	b.ReportAllocs()
	for b.Loop() {
		buf, _ = appendFrame(buf[:0], f)
		var got frame
		_ = decodeFrame(buf[4:], &got)
	}
}
