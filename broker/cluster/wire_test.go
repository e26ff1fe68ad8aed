package cluster

import (
	"bytes"
	"encoding/gob"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// TestCodecWriterNotHeldByStalledPeer: a peer that stops reading stalls the flusher's
// write, not the writers: frames are still queued at once (the route changes and
// forwards of a node must not wait for one slow peer), and the frames arrive in order
// once the peer reads again. Before, the flusher held the codec's lock through its
// write, so every writer waited for the peer (up to the 10 s write deadline).
func TestCodecWriterNotHeldByStalledPeer(t *testing.T) {
	local, peer := net.Pipe() // synchronous: a write returns once the peer read all of it
	defer func() { _ = local.Close(); _ = peer.Close() }()
	cd := newCodec(local)
	defer cd.close()

	if err := cd.write(&frame{Seq: 1}); err != nil {
		t.Fatal(err)
	}
	// One byte read: the flusher is now inside its write, which cannot finish until the
	// peer reads the rest. The peer reads nothing more for now.
	first := make([]byte, 1)
	if _, err := io.ReadFull(peer, first); err != nil {
		t.Fatal(err)
	}
	const n = 50
	queued := make(chan error, 1)
	go func() {
		for i := 2; i <= n; i++ {
			if err := cd.write(&frame{Seq: uint64(i)}); err != nil {
				queued <- err
				return
			}
		}
		queued <- nil
	}()
	select {
	case err := <-queued:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("writers waited for a peer that does not read")
	}

	dec := gob.NewDecoder(io.MultiReader(bytes.NewReader(first), peer))
	for i := 1; i <= n; i++ {
		var f frame
		if err := dec.Decode(&f); err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if f.Seq != uint64(i) {
			t.Fatalf("frame %d arrived as %d", i, f.Seq)
		}
	}
}

// TestCodecWriteFailsAfterClose: once closed, a codec refuses writes instead of
// queueing them for a flusher that is gone.
func TestCodecWriteFailsAfterClose(t *testing.T) {
	local, peer := net.Pipe()
	defer func() { _ = local.Close(); _ = peer.Close() }()
	cd := newCodec(local)
	cd.close()
	if err := cd.write(&frame{Seq: 1}); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write after close: %v, want net.ErrClosed", err)
	}
}
