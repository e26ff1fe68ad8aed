package cluster

import (
	"bufio"
	"encoding/gob"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mqtt-operator/mqtt-operator/broker/apiv1"
	"github.com/mqtt-operator/mqtt-operator/broker/internal/lockorder"
	"github.com/mqtt-operator/mqtt-operator/broker/server"
	"github.com/mqtt-operator/mqtt-operator/broker/session"
)

// After the handshake, the dialing node names what the connection is for with one
// byte; the listening node dispatches on it.
const (
	chanRaft  byte = 'R' // hashicorp/raft's transport
	chanLink  byte = 'L' // a member's link: routes, forwarded messages, requests
	chanQuery byte = 'Q' // one request from a node that may not be a member (join)
)

// Frame kinds on links and query connections. Frames are gob-encoded, or on a link
// whose ends agreed on it in their hello exchange, in the binary format (frames.go);
// a link carries them in order, which keeps each publisher's messages in order.
const (
	fHello    byte = iota + 1 // dialer -> listener: who I am, what I think the cluster is
	fHelloAck                 // listener -> dialer: accepted, or why not
	fRoutes                   // route snapshot or delta of the dialing node
	fForward                  // forwarded publish; Seq != 0 asks for an ack
	fAck                      // ack of a forward: Count sessions queued
	fReq                      // request (Seq) ...
	fResp                     // ... and its response
	fPing                     // dialer -> listener: keepalive, every heartbeatInterval (when both said Heartbeat)
	fPong                     // listener -> dialer: keepalive, every heartbeatInterval
)

type frame struct {
	Kind   byte
	Seq    uint64
	Hello  *hello
	Routes *routes
	Msg    []byte            // fForward: the message in the store's record format
	MsgID  session.MessageID // fForward: the message's ID (absent from older nodes: unknown)
	Shared []server.Route    // fForward: shared subscriptions picked on the receiver
	Count  int               // fAck
	Req    *request
	Resp   *response
}

type hello struct {
	ClusterID   string
	ConfigIndex uint64
	Code        string // fHelloAck: "" accepted, else why not
	Message     string
	// Heartbeat: in fHello, the dialer sends fPing every heartbeatInterval and wants
	// fPong; in fHelloAck, the listener sends fPong every heartbeatInterval. A side
	// that hears nothing on the link for heartbeatTimeout closes it. Absent from older nodes: no heartbeats,
	// a link fails only on a TCP error.
	Heartbeat bool
	// LinkID, in fHello: the dialer's link object (random, new when it restarts). The
	// listener skips a forward whose Seq it delivered already on this link ID (the
	// dialer writes its unacknowledged forwards again after a reconnect). Absent from
	// older nodes: 0, no check (and they write nothing again).
	LinkID uint64
	// Proto: in fHello, the highest link protocol version the dialer speaks; in
	// fHelloAck, the version both ends use from the next frame on (frames.go).
	// Absent from older nodes: 0, gob throughout.
	Proto int
}

type routes struct {
	Full     bool
	Add, Del []server.Route
}

// Request operations.
const (
	opJoin      = "join"      // add Name at Addr: a non-voter if NonVoter, else a voter (forwarded to the leader)
	opPromote   = "promote"   // make the non-voter Name at Addr a voter: it caught up (forwarded to the leader)
	opRemove    = "remove"    // remove Node (leave and force-leave; forwarded to the leader)
	opApply     = "apply"     // apply Data to the raft log (forwarded to the leader)
	opReadIndex = "readindex" // what the leader's state machine applied, after a barrier (forwarded to the leader)
	opTakeover  = "takeover"  // to the owner of ClientID: order this connect, kick elsewhere
	opKick      = "kick"      // end ClientID's session here, return it when Clean is false
	opAdopt     = "adopt"     // take the detached session in Data (evacuation)
	opRelease   = "release"   // drop the moved session ClientID, answer what arrived since
	opSync      = "sync"      // no-op: answered once the routes sent before it are applied
	opFlush     = "flush"     // answered once what this node forwarded to the asker before it has reached the asker
	opUnmove    = "unmove"    // take back the moving session in Data: its takeover failed
	opTurn      = "turn"      // to the owner of ClientID: wait for and hold its turn for a move (answers Turn)
	opTurnDone  = "turndone"  // to the owner of ClientID: the move holding Turn is over
	opManage    = "manage"    // a management query Name with JSON parameters Data, answered in Data (Node.SetManager)
)

type request struct {
	Op        string
	Name      string
	Addr      string
	ClusterID string
	Node      string
	ClientID  string
	Clean     bool
	Epoch     uint64
	Data      []byte
	// Takeover and kick: the connecting client's user and whether client IDs belong
	// to their session's user (server.Claim). Absent from older nodes: no check.
	Owner      string
	CheckOwner bool
	Turn       uint64 // turndone: the turn to end
	// takeover: the requester gives the turn back (turndone) once the session is in
	// place; older requesters do not, so the owner ends their turn when it answers.
	Turns bool
	// kick: only a connection older than Epoch goes (a connect ordered while the
	// receiver was out of reach, sent once it is back; absent from older nodes: a
	// plain kick).
	Stale bool
	// join: the joiner's store is empty, so it comes in as a non-voter and asks to be
	// promoted once caught up (absent from older nodes: a voter at once).
	NonVoter bool
}

func (r *request) claim() server.Claim { return server.Claim{Owner: r.Owner, Check: r.CheckOwner} }

type response struct {
	Code      string // "" on success
	Message   string
	ClusterID string
	Epoch     uint64
	Data      []byte
	OK        bool
	Node      string   // takeover: the node the session came from
	Also      []string // takeover: other nodes whose copies were merged into Data; released with Node
	Skipped   []string // takeover: members the owner did not kick (out of reach): kicked once back
	Index     uint64   // readindex: the last entry the leader's state machine applied
	Turn      uint64   // takeover (with a session) and turn: the client ID's turn, to end with turndone
}

func (r *response) err() error {
	if r.Code == "" {
		return nil
	}
	return &Error{Code: r.Code, Message: r.Message}
}

func errResponse(err error) *response {
	var e *Error
	if errors.As(err, &e) {
		return &response{Code: e.Code, Message: e.Message}
	}
	return &response{Code: apiv1.CodeInternal, Message: err.Error()}
}

// codec reads and writes the frames of one connection. Writers encode frames into a
// pending buffer under mu and return; one flusher goroutine takes the whole buffer and
// writes it with no lock held, so a peer that stops reading delays only the flusher
// (its write fails after writeTimeout and ends the connection), never the writers
// (route changes, forwards, requests), until maxPending bytes wait: then a writer
// waits for room, at most until that write fails. Frames queued while a write is in
// progress leave together in the next one, so a busy link makes few, large writes. An
// error is sticky and closes the connection.
type codec struct {
	conn net.Conn
	br   *bufio.Reader
	dec  *gob.Decoder
	// readProto is the reader's format (the reading goroutine's own); writeProto,
	// under mu, the writers'. Both start as gob (the hello exchange) and change once,
	// with use.
	readProto int

	mu         lockorder.Mutex
	room       *sync.Cond // signaled when the flusher took the pending bytes, or on an error
	pending    []byte     // encoded frames the flusher has not taken yet
	spare      []byte     // the flusher's last buffer, for reuse
	enc        *gob.Encoder
	writeProto int
	err        error

	kick    chan struct{}
	done    chan struct{}
	stopped chan struct{} // closed when the flusher has returned
	once    sync.Once
}

// maxPending bounds what waits for the flusher; a single larger frame still goes.
const maxPending = 8 << 20

// pendingWriter appends the encoder's output to the codec's pending bytes (mu held by
// the caller of Encode).
type pendingWriter struct{ c *codec }

func (w pendingWriter) Write(p []byte) (int, error) {
	w.c.pending = append(w.c.pending, p...)
	return len(p), nil
}

func newCodec(c net.Conn) *codec {
	br := bufio.NewReaderSize(c, 64<<10)
	cd := &codec{conn: c, br: br, dec: gob.NewDecoder(br), // gob reads exactly its messages from br
		kick: make(chan struct{}, 1), done: make(chan struct{}), stopped: make(chan struct{})}
	cd.room = sync.NewCond(&cd.mu)
	cd.enc = gob.NewEncoder(pendingWriter{cd})
	go cd.flusher()
	return cd
}

// close stops the flusher, writes out what is still pending (bounded by writeTimeout)
// and fails later writes (the connection's owner closes the connection itself, after
// this).
func (c *codec) close() {
	c.once.Do(func() {
		close(c.done)
		<-c.stopped // no write of the flusher's is in progress: this one comes after
		c.mu.Lock()
		out, err := c.pending, c.err
		c.pending = nil
		if c.err == nil {
			c.err = net.ErrClosed
		}
		c.room.Broadcast()
		c.mu.Unlock()
		if err == nil && len(out) > 0 {
			if c.conn.SetWriteDeadline(time.Now().Add(writeTimeout)) == nil {
				_, _ = c.conn.Write(out)
			}
		}
	})
}

func (c *codec) read(f *frame) error {
	if c.readProto == protoBinary {
		return readFrame(c.br, f)
	}
	*f = frame{}
	return c.dec.Decode(f)
}

// use switches both directions to link protocol version proto after the hello
// exchange: frames queued before stay in their format, ahead of the ones after. The
// reading goroutine calls it, between its reads.
func (c *codec) use(proto int) {
	c.readProto = proto
	c.mu.Lock()
	c.writeProto = proto
	c.mu.Unlock()
}

// write queues f for the flusher.
func (c *codec) write(f *frame) error { return c.queue(f, true) }

// tryWrite is write without waiting for room: with maxPending bytes already waiting
// it drops f (a heartbeat: the link is busy, and a peer that does not read is noticed
// all the same).
func (c *codec) tryWrite(f *frame) error { return c.queue(f, false) }

func (c *codec) queue(f *frame, wait bool) error {
	c.mu.Lock()
	if !wait && c.err == nil && len(c.pending) >= maxPending {
		c.mu.Unlock()
		return nil
	}
	for c.err == nil && len(c.pending) >= maxPending {
		c.room.Wait() // the flusher takes it, or its write fails within writeTimeout
	}
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return err
	}
	var err error
	if c.writeProto == protoBinary {
		c.pending, err = appendFrame(c.pending, f)
		if errors.Is(err, errFrameTooBig) {
			c.mu.Unlock() // not written (pending is as it was): the link goes on
			return err
		}
	} else {
		err = c.enc.Encode(f)
	}
	if err != nil {
		c.err = err
		c.room.Broadcast()
		c.mu.Unlock()
		_ = c.conn.Close()
		return err
	}
	c.mu.Unlock()
	select {
	case c.kick <- struct{}{}:
	default: // a flush is pending: it takes this frame too
	}
	return nil
}

// flusher writes out the pending frames, all of them in one write, with no lock held.
func (c *codec) flusher() {
	defer close(c.stopped)
	for {
		select {
		case <-c.done:
			return
		case <-c.kick:
		}
		c.mu.Lock()
		out := c.pending
		c.pending, c.spare = c.spare[:0], nil
		failed := c.err != nil
		c.room.Broadcast()
		c.mu.Unlock()
		if failed || len(out) == 0 {
			continue
		}
		err := c.conn.SetWriteDeadline(time.Now().Add(writeTimeout))
		if err == nil {
			_, err = c.conn.Write(out)
		}
		c.mu.Lock()
		if cap(out) <= 1<<20 {
			c.spare = out[:0] // reused; a large one is let go
		}
		if err != nil && c.err == nil {
			c.err = err
			c.room.Broadcast()
		}
		c.mu.Unlock()
		if err != nil {
			_ = c.conn.Close()
		}
	}
}

const (
	writeTimeout   = 10 * time.Second
	requestTimeout = 10 * time.Second

	// A link whose peer is silent for heartbeatTimeout (no frame at all, pings and
	// pongs included, which go every heartbeatInterval) is closed: a silent cut
	// (packets dropped, no reset) or a frozen peer is noticed within that time, not
	// only when a TCP write times out.
	heartbeatInterval = time.Second
	heartbeatTimeout  = 4 * time.Second
)

// heartbeat watches one link connection from one end. The reader calls heard after
// every frame and busy around a frame's handling (a large route snapshot, a delivery
// waiting for the session's lock): a reader at work counts as hearing. The watchdog
// sends keepalive (fPing from the dialer, fPong from the listener) every
// heartbeatInterval on its own, so each end hears the other as long as the other's
// process runs and the network carries, whatever its reader is busy with; it closes
// the connection when nothing was heard for heartbeatTimeout.
type heartbeat struct {
	frame  atomic.Bool // a frame was read since the last check
	work   atomic.Bool // the reader is handling a frame
	silent atomic.Bool // the watchdog closed the connection
}

func (h *heartbeat) heard()       { h.frame.Store(true) }
func (h *heartbeat) busy(on bool) { h.work.Store(on) }

// timedOut reports whether the watchdog closed the connection (set before it closed).
func (h *heartbeat) timedOut() bool { return h.silent.Load() }

// watch runs until done is closed or it closed conn. keepalive is queued with
// tryWrite: when 8 MiB already wait for the flusher, that traffic is keepalive enough.
func (h *heartbeat) watch(conn net.Conn, cd *codec, keepalive byte, done <-chan struct{}) {
	t := time.NewTicker(heartbeatInterval)
	defer t.Stop()
	last := time.Now()
	_ = cd.tryWrite(&frame{Kind: keepalive})
	for {
		select {
		case <-done:
			return
		case now := <-t.C:
			if h.frame.Swap(false) || h.work.Load() {
				last = now
			} else if now.Sub(last) >= heartbeatTimeout {
				h.silent.Store(true)
				_ = conn.Close()
				return
			}
			_ = cd.tryWrite(&frame{Kind: keepalive})
		}
	}
}

// writeChannel names the connection's purpose right after the handshake.
func writeChannel(c net.Conn, ch byte, clusterID string) error {
	if len(clusterID) > 255 {
		return fmt.Errorf("cluster ID too long")
	}
	b := append([]byte{ch, byte(len(clusterID))}, clusterID...)
	_, err := c.Write(b)
	return err
}

func readChannel(c net.Conn) (ch byte, clusterID string, err error) {
	var h [2]byte
	if _, err := io.ReadFull(c, h[:]); err != nil {
		return 0, "", err
	}
	id := make([]byte, h[1])
	if _, err := io.ReadFull(c, id); err != nil {
		return 0, "", err
	}
	return h[0], string(id), nil
}
