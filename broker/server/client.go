package server

import (
	"bufio"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/time/rate"

	"github.com/mqtt-operator/mqtt-operator/broker/auth"
	"github.com/mqtt-operator/mqtt-operator/broker/internal/lockorder"
	"github.com/mqtt-operator/mqtt-operator/broker/packet"
	"github.com/mqtt-operator/mqtt-operator/broker/session"
)

// noCode means "close without a DISCONNECT packet".
const noCode packet.Code = 0xFF

const serverShuttingDown = packet.ServerShuttingDown

// errClientDisconnect ends the read loop after the client's DISCONNECT.
var errClientDisconnect = errors.New("client sent DISCONNECT")

// client is one network connection. Concurrency contract (see broker/LOCKS.md): the
// read loop (serve) owns the fields marked reader; the write loop owns the fields
// marked writer; mu guards the control queue and the closing state.
type client struct {
	s    *Server
	conn net.Conn
	br   *bufio.Reader
	addr string

	// Set during CONNECT, read-only afterwards.
	id                 string
	version            byte
	keepAlive          time.Duration
	window             int
	maxOut             uint32 // client's Maximum Packet Size (0: protocol limit)
	aliasMaxOut        uint16 // client's Topic Alias Maximum
	requestProblemInfo bool
	principal          auth.Principal // who the client is, for the ACL
	certUser           string         // username from the verified TLS client certificate ("" if none)
	connectedAt        time.Time
	entry              *entry
	sess               *session.Session
	gen                uint64

	// reader
	aliasIn       map[uint16]string
	sessionExpiry uint32
	will          *session.Message
	willDelay     uint32
	willExpiry    uint32
	willHasExpiry bool
	sendWill      bool
	deniedLogged  bool       // an ACL refusal was logged at info level
	refuseLevel   slog.Level // the level of the "connection refused" log line (info unless quieted)

	// reader: abuse limits (limits.go, ratelimit.go)
	listener     string         // the name of the listener that accepted the connection
	admitted     *listenerState // holds a connection slot (see admit)
	pubMsgs      *rate.Limiter  // publish rate (nil: none)
	pubBytes     *rate.Limiter  // publish byte rate (nil: none)
	limitersMade bool           // publishLimiters ran (at the first PUBLISH)

	// writer
	aliasOut  map[string]uint16
	wbuf      []byte
	batch     []session.Delivery
	ctrlSpare []packet.Packet
	held      bool // the last round kept c.batch back for a SUBACK (holdDeliveries)

	// Parking (park.go). raw is the socket the poller can watch (nil: the connection
	// never parks); kaDeadline is the reader's keepalive deadline; parked, inWheel
	// and parkRef are guarded by the poller's lock. readerParked is set while the
	// connection is parked (the writer ends then too, once idle).
	raw           syscall.RawConn // set in newClient, read-only after
	noPark        bool            // reader: parking failed once, it reads as before
	kaDeadline    time.Time
	parked        bool
	inWheel       bool // guarded by the poller's lock: the client has an entry in the keepalive wheel
	parkRef       parkRef
	readerParked  atomic.Bool
	writerRunning atomic.Bool

	mu      lockorder.Mutex
	drained sync.Cond // signaled when the writer takes the control queue or closes
	ctrl    []packet.Packet
	closing bool
	writing bool // the writer goroutine runs
	// holdBatch: a SUBSCRIBE is queueing retained messages; the writer keeps the
	// deliveries it took until the SUBACK is in ctrl, so SUBACK goes first.
	holdBatch bool

	wake       chan struct{}
	writerDone chan struct{}
	acks       chan pendingAck // QoS 1 PUBACKs waiting for other nodes (nil: none yet)
	takenOver  atomic.Bool
	// ended: the writer sent its last packet and half-closed the connection; the
	// reader stops (its read deadline is now) and serve drains the input (drainInput).
	ended atomic.Bool
}

func newClient(s *Server, conn net.Conn) *client {
	c := &client{
		s:          s,
		conn:       conn,
		addr:       conn.RemoteAddr().String(),
		wake:       make(chan struct{}, 1),
		writerDone: make(chan struct{}),
		sendWill:   true,
	}
	c.drained.L = &c.mu
	c.br = bufio.NewReaderSize(countingReader{conn, &s.stats.bytesIn}, 4096)
	if s.opts.ParkAfter >= 0 {
		if raw := plainTCP(conn); raw != nil && s.parker() != nil {
			c.raw = raw
		}
	}
	return c
}

// connDone ends what ServeConnOn began for the connection: its entry in s.clients
// and the count Shutdown waits for.
func (c *client) connDone() {
	s := c.s
	s.mu.Lock()
	delete(s.clients, c)
	s.mu.Unlock()
	s.conns.Done()
}

type countingReader struct {
	r io.Reader
	n *atomic.Uint64
}

func (c countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(uint64(n))
	return n, err
}

// notify wakes the writer, starting its goroutine when there is none (the connection
// is parked, or the writer not started yet); it never blocks.
func (c *client) notify() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
	if !c.writerRunning.Load() && c.writerRunning.CompareAndSwap(false, true) {
		go c.writeLoop()
	}
}

// maxCtrl bounds the control packets waiting for the writer. A client that does not
// read its acknowledgements makes its own reader wait here: backpressure instead of
// unbounded memory.
const maxCtrl = 1024

// send queues a control packet for the writer.
func (c *client) send(p packet.Packet) { c.queueCtrl(p, false) }

// queueCtrl queues p and, with release, in the same step ends holdBatch (see
// holdDeliveries).
func (c *client) queueCtrl(p packet.Packet, release bool) {
	c.mu.Lock()
	for len(c.ctrl) >= maxCtrl && !c.closing {
		c.notify()
		c.drained.Wait()
	}
	if !c.closing {
		c.ctrl = append(c.ctrl, p)
	}
	if release {
		c.holdBatch = false
	}
	c.mu.Unlock()
	c.notify()
}

// holdDeliveries makes the writer keep what it takes from the session until
// sendReleasing queues the packet that must precede it.
func (c *client) holdDeliveries() {
	c.mu.Lock()
	c.holdBatch = true
	c.mu.Unlock()
}

// sendReleasing queues p (as send does) and, in the same step, lets the writer write
// the deliveries held since holdDeliveries: they follow p.
func (c *client) sendReleasing(p packet.Packet) { c.queueCtrl(p, true) }

// shutdown asks the writer to flush, send DISCONNECT with code and reason string why
// (v5 only, unless code is noCode) and close the connection. It is idempotent and does
// not block.
func (c *client) shutdown(code packet.Code, why string) {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return
	}
	if code != noCode && c.version == packet.V5 {
		d := packet.Packet{Type: packet.Disconnect, ReasonCode: code}
		c.explain(&d, why)
		c.ctrl = append(c.ctrl, d)
	}
	c.closing = true
	c.drained.Broadcast()
	writing := c.writing
	c.mu.Unlock()
	if !writing {
		_ = c.conn.Close() // still in CONNECT: nothing to flush, unblock the reader
		return
	}
	c.notify()
}

// preparer is a connection with work to do before MQTT: the PROXY protocol header and
// the TLS handshake of a listener.Conn. A failure is counted and logged by it.
type preparer interface {
	Prepare(deadline time.Time) error
}

// certUserConn is a connection whose verified TLS client certificate may name the
// client's username (listener.Conn, and WebSocket connections over TLS).
type certUserConn interface {
	CertUsername() string
}

// serve runs the connection: CONNECT, then the read loop, then cleanup. It returns
// early when the connection parks; a new reader goroutine continues it (resume).
func (c *client) serve() {
	s := c.s
	s.mu.Lock()
	s.clients[c] = struct{}{}
	s.mu.Unlock()
	c.writerRunning.Store(true) // no writer until the CONNECT is done
	ended := true               // the connection ends before it parks: connDone here
	defer func() {
		if ended {
			c.connDone()
		}
	}()

	// Reads and writes: a TLS handshake writes too.
	deadline := time.Now().Add(s.opts.ConnectTimeout)
	_ = c.conn.SetDeadline(deadline)
	if p, ok := c.conn.(preparer); ok {
		if err := p.Prepare(deadline); err != nil {
			_ = c.conn.Close() // the listener counted and logged it
			return
		}
		c.addr = c.conn.RemoteAddr().String() // the PROXY header's
	}
	if cu, ok := c.conn.(certUserConn); ok {
		c.certUser = cu.CertUsername()
	}
	p, err := packet.Read(c.br, 0, s.opts.MaxPacketSize)
	if err != nil || p.Type != packet.Connect {
		c.refuseFirst(p, err)
		_ = c.conn.Close()
		return
	}
	// The connection caps come before anything costly (authentication, takeover).
	c.version, c.id, c.connectedAt = p.Connect.ProtocolVersion, p.Connect.ClientID, time.Now()
	if code, why := c.admit(p); code != packet.Success {
		c.release()
		c.refuseOverLimit(code, why)
		_ = c.conn.Close()
		return
	}
	if !c.connect(p) {
		c.release()
		_ = c.conn.Close()
		return
	}
	s.stats.connected.Add(1)
	c.mu.Lock()
	closing := c.closing
	c.writing = !closing
	c.mu.Unlock()
	if closing {
		_ = c.conn.Close()
		s.disconnected(c)
		s.stats.connected.Add(-1)
		c.release()
		return
	}
	go c.writeLoop() // writerRunning is true since serve began

	ended = c.run()
}

// run reads until the connection parks (false) or ends (true; then it ends it).
func (c *client) run() (ended bool) {
	code, why, parked := c.readLoop()
	if parked {
		return false
	}
	s := c.s
	if c.acks != nil {
		close(c.acks) // the acker sends what is left while the writer still runs
	}
	c.shutdown(code, why)
	<-c.writerDone
	s.disconnected(c) // the will and the session do not wait for the drain
	c.drainInput()
	_ = c.conn.Close()
	if c.raw != nil {
		if p := s.parker(); p != nil {
			p.forget(c)
		}
	}
	s.stats.connected.Add(-1)
	c.release()
	return true
}

// resume continues a parked connection in a new reader goroutine.
func (c *client) resume() {
	p := c.s.parker()
	if p != nil {
		epollDel(p.epfd, c.raw)
	}
	br := getReader()
	br.Reset(countingReader{c.conn, &c.s.stats.bytesIn})
	c.br = br
	c.readerParked.Store(false)
	if c.run() {
		c.connDone()
	}
}

// closeConn closes the connection and wakes its reader if it is parked.
func (c *client) closeConn() {
	_ = c.conn.Close()
	c.unpark()
}

// unpark wakes c's reader if the connection is parked.
func (c *client) unpark() {
	if c.raw == nil {
		return
	}
	if p := c.s.parker(); p != nil {
		p.unpark(c)
	}
}

// refuseFirst answers a first packet that is not a usable CONNECT.
func (c *client) refuseFirst(p *packet.Packet, err error) {
	s := c.s
	switch {
	case err == nil:
		s.stats.protocolErrors.Add(1)
		s.log.Debug("first packet is not CONNECT", "remote", c.addr, "type", p.Type.String())
	case errors.Is(err, packet.UnsupportedProtocolVersion) && p != nil:
		s.stats.protocolErrors.Add(1)
		s.log.Info("unsupported protocol version", "remote", c.addr, "version", p.Connect.ProtocolVersion)
		ack := packet.Packet{Type: packet.Connack}
		version := packet.V311
		ack.ReasonCode = packet.Code(packet.ConnackV3BadProtocolVersion)
		if p.Connect.ProtocolVersion == packet.V5 {
			version = packet.V5
			ack.ReasonCode = packet.UnsupportedProtocolVersion
		}
		c.writeNow(ack.Encode(nil, version))
	case isCode(err):
		c.countBadInput(err)
		s.log.Info("bad CONNECT", "remote", c.addr, "error", err)
		if p != nil && p.Connect.ProtocolVersion == packet.V5 {
			ack := packet.Packet{Type: packet.Connack, ReasonCode: packet.CodeOf(err)}
			c.version = packet.V5
			c.explain(&ack, err.Error())
			c.writeNow(ack.Encode(nil, packet.V5))
		}
	default:
		s.log.Debug("connection closed before CONNECT", "remote", c.addr, "error", err)
	}
}

// explain adds reason string why to p when the client speaks MQTT 5 and may receive it:
// CONNACK and DISCONNECT always, other packets only when the client did not set Request
// Problem Information to 0 (MQTT-3.1.2-29), and never beyond the client's Maximum
// Packet Size (MQTT-3.1.2-25).
func (c *client) explain(p *packet.Packet, why string) {
	if why == "" || c.version != packet.V5 {
		return
	}
	if !c.requestProblemInfo && p.Type != packet.Connack && p.Type != packet.Disconnect {
		return
	}
	p.Properties.ReasonString = why
	p.Properties.Set(packet.PropReasonString)
	if c.maxOut > 0 && uint32(p.Size(packet.V5)) > c.maxOut {
		p.Properties.ReasonString = ""
		p.Properties.Clear(packet.PropReasonString)
	}
}

func isCode(err error) bool {
	var code packet.Code
	return errors.As(err, &code)
}

func (c *client) countBadInput(err error) {
	if errors.Is(err, packet.MalformedPacket) {
		c.s.stats.malformed.Add(1)
	} else {
		c.s.stats.protocolErrors.Add(1)
	}
}

// writeNow writes directly; only used before the writer runs.
func (c *client) writeNow(b []byte) {
	_ = c.conn.SetWriteDeadline(time.Now().Add(c.s.opts.WriteTimeout))
	if n, err := c.conn.Write(b); err == nil {
		c.s.stats.bytesOut.Add(uint64(n))
	}
}

// readLoop reads and handles packets until the connection ends or parks. It returns
// the reason code (and reason string) to send in a server DISCONNECT, or noCode; or
// parked, when the connection waits in the poller and another goroutine continues.
func (c *client) readLoop() (code packet.Code, why string, parked bool) {
	s := c.s
	var p packet.Packet // reused: handlers copy what they keep, never &p
	if c.keepAlive > 0 && c.kaDeadline.IsZero() {
		c.kaDeadline = time.Now().Add(c.keepAlive * 3 / 2)
	}
	for {
		err := c.waitInput()
		if errors.Is(err, errParked) {
			return noCode, "", true
		}
		if err == nil {
			err = packet.ReadInto(c.br, &p, c.version, s.opts.MaxPacketSize)
		}
		if err == nil && (c.takenOver.Load() || c.ended.Load()) {
			return noCode, "", false // the session is another connection's now, or the server ended this one: nothing more of it counts
		}
		if err == nil {
			err = c.handle(&p)
		}
		if err == nil {
			if p.Type == packet.Publish {
				c.throttlePublish(len(p.Payload))
			}
			// The keepalive counts from here: time the server spent on the packet
			// (a slow route, the publish rate's wait) is not the client's silence.
			if c.keepAlive > 0 {
				c.kaDeadline = time.Now().Add(c.keepAlive * 3 / 2)
			}
			continue
		}
		if errors.Is(err, errClientDisconnect) {
			return noCode, "", false
		}
		var ne net.Error
		switch {
		case c.takenOver.Load(), c.ended.Load():
			return noCode, "", false // another connection took over, or the server ended this one
		case isCode(err):
			c.countBadInput(err)
			s.log.Info("closing client after protocol violation", "client", c.id, "remote", c.addr, "error", err)
			return packet.CodeOf(err), err.Error(), false
		case errors.As(err, &ne) && ne.Timeout():
			s.log.Info("keepalive timeout", "client", c.id, "remote", c.addr)
			return packet.KeepAliveTimeout, "no packet within 1.5 times the keepalive", false
		default:
			s.log.Debug("connection lost", "client", c.id, "remote", c.addr, "error", err)
			return noCode, "", false
		}
	}
}

// errParked: the connection parked; the reader goroutine ends.
var errParked = errors.New("parked")

// waitInput sets the read deadline for the next packet: the keepalive's, and, while
// nothing is buffered on a connection that can park, parkAfter from now at most. When
// that passes with no input, the connection parks (errParked). An error is the read's.
func (c *client) waitInput() error {
	for {
		ka, late := time.Time{}, false
		if c.keepAlive > 0 {
			ka = c.kaDeadline
			if now := time.Now(); !now.Before(ka) {
				// Woken at (or after) the deadline: what the socket already holds
				// still counts, but nothing more is waited for.
				ka, late = now.Add(keepAliveGrace), true
			}
		}
		if c.raw == nil || c.noPark || late || c.br.Buffered() > 0 {
			_ = c.conn.SetReadDeadline(ka)
			// Checked after setting the deadline: endWrites sets ended before its own
			// deadline of now, so one of the two stops this reader.
			if c.ended.Load() {
				return net.ErrClosed
			}
			return nil
		}
		limit := time.Now().Add(c.s.parkAfter())
		if !ka.IsZero() && ka.Before(limit) {
			limit = ka
		}
		_ = c.conn.SetReadDeadline(limit)
		if c.ended.Load() {
			return net.ErrClosed
		}
		_, err := c.br.Peek(1) // a timeout here consumed nothing: parking is safe
		var ne net.Error
		if err != nil && errors.As(err, &ne) && ne.Timeout() && (ka.IsZero() || time.Now().Before(ka)) {
			if c.park() {
				return errParked
			}
			c.noPark = true // the poller refused it (ending, or epoll failed): read as before
			continue
		}
		if err != nil {
			return err
		}
		if !limit.Equal(ka) {
			_ = c.conn.SetReadDeadline(ka)
		}
		return nil
	}
}

// keepAliveGrace is how long a reader that finds its keepalive deadline passed (woken
// late, or by the keepalive wheel) still waits for input the socket may already hold.
const keepAliveGrace = 10 * time.Millisecond

// park hands the connection to the poller: the read buffer goes back to the pool and
// the writer ends once idle. It returns false when the connection cannot park (it is
// ending, or the poller failed); the reader goes on reading then.
func (c *client) park() bool {
	p := c.s.parker()
	if p == nil || c.takenOver.Load() {
		return false
	}
	_ = c.conn.SetReadDeadline(time.Time{})
	br := c.br
	c.br = nil // resume sets a pooled one
	c.readerParked.Store(true)
	if !p.park(c) {
		c.readerParked.Store(false)
		c.br = br
		return false
	}
	// From here another goroutine may already be reading: only what was kept.
	putReader(br)
	c.notify() // an idle writer sees readerParked and ends
	return true
}

// writeLoop is the connection's only writer: it batches control packets and deliveries
// into one buffer per wake-up and writes it with a single call. While the connection
// is parked it ends once it has had nothing to write for parkAfter (notify starts it
// again; a subscriber that only receives keeps it while messages flow); it ends for
// good after the connection's last packet.
func (c *client) writeLoop() {
	var idle *time.Timer // armed while the reader is parked and nothing is left to write
	var idleC <-chan time.Time
	defer func() {
		if idle != nil {
			idle.Stop()
		}
	}()
	for {
		select {
		case <-c.wake:
		case <-idleC:
			idleC = nil
			if !c.readerParked.Load() {
				continue
			}
			if c.idleWriterEnds() {
				return
			}
		}
		if c.writeRound() {
			close(c.writerDone)
			return
		}
		if c.readerParked.Load() {
			if idle == nil {
				idle = time.NewTimer(c.s.parkAfter())
			} else {
				idle.Reset(c.s.parkAfter())
			}
			idleC = idle.C
		}
	}
}

// idleWriterEnds lets the writer goroutine end while the connection is parked,
// giving its buffers back; false when a wake-up came meanwhile (it goes on).
func (c *client) idleWriterEnds() bool {
	c.wbuf, c.ctrlSpare = nil, nil
	c.mu.Lock()
	if len(c.ctrl) == 0 {
		c.ctrl = nil // a Packet is about 800 bytes: keep no array of them while idle
	}
	c.mu.Unlock()
	if !c.held && len(c.batch) == 0 {
		c.batch = nil
	}
	c.writerRunning.Store(false)
	if len(c.wake) == 0 || !c.writerRunning.CompareAndSwap(false, true) {
		return true // nothing came, or notify started another writer for it
	}
	return false
}

// writeRound writes what is waiting; true when the connection's last packet went out
// (or nothing more can be written).
func (c *client) writeRound() (last bool) {
	for {
		now := time.Now()
		// While deliveries are held, what was taken stays the only batch: the rest
		// waits in the session's queue, whose limits apply.
		if !c.held || len(c.batch) == 0 {
			var expired int
			c.batch, expired = c.sess.NextBatch(c.gen, c.batch, now) // after any held back
			if expired > 0 {
				c.s.stats.expired.Add(uint64(expired))
			}
		}
		c.mu.Lock()
		ctrl := c.ctrl
		c.ctrl = c.ctrlSpare[:0]
		closing := c.closing
		hold := c.holdBatch && !closing
		c.held = hold
		c.drained.Broadcast()
		c.mu.Unlock()

		buf := c.wbuf[:0]
		if closing { // the last round: nothing may follow its DISCONNECT
			buf = c.appendBatch(buf, now)
		}
		for i := range ctrl {
			buf = ctrl[i].Encode(buf, c.version)
		}
		clear(ctrl)
		c.ctrlSpare = ctrl
		if !hold { // held: written after the SUBACK, which releases them (sendReleasing)
			buf = c.appendBatch(buf, now)
		}
		c.wbuf = buf
		if len(buf) > 0 {
			_ = c.conn.SetWriteDeadline(now.Add(c.s.opts.WriteTimeout))
			n, err := c.conn.Write(buf)
			c.s.stats.bytesOut.Add(uint64(n))
			if err != nil {
				c.mu.Lock()
				c.closing = true // nothing more can be written: release a waiting reader
				c.drained.Broadcast()
				c.mu.Unlock()
				c.closeConn()
				return true
			}
		}
		if cap(c.wbuf) > 1<<20 {
			c.wbuf = nil // do not pin a large buffer for an idle client
		}
		if closing {
			c.endWrites()
			return true
		}
		if len(buf) == 0 {
			return false
		}
	}
}

// Draining after the last packet: a client may still be writing when the server
// closes its connection (a protocol error, a takeover). Closing a socket with unread
// input answers the client's next segment with a reset, and a client whose write fails
// reports "connection reset", never the DISCONNECT's reason code. So the writer
// half-closes (FIN after the DISCONNECT) and serve reads and drops what the client
// still sends, for at most drainTimeout and drainBytes, before it closes.
const (
	drainTimeout = time.Second
	drainBytes   = 256 << 10
)

// endWrites ends the server's side of the stream after the last packet: a half-close
// where the transport has one (TCP), then the reader is woken (a read deadline of
// now) and stops; serve drains and closes. Other transports are closed at once.
func (c *client) endWrites() {
	cw, ok := c.conn.(interface{ CloseWrite() error })
	if !ok || cw.CloseWrite() != nil {
		c.closeConn()
		return
	}
	c.ended.Store(true)
	_ = c.conn.SetReadDeadline(time.Now())
	c.unpark()
}

// drainInput reads and drops what the client still sends after a half-close, until
// it closes its side, drainTimeout passes or drainBytes were read.
func (c *client) drainInput() {
	if !c.ended.Load() {
		return
	}
	_ = c.conn.SetReadDeadline(time.Now().Add(drainTimeout))
	_, _ = io.Copy(io.Discard, io.LimitReader(c.conn, drainBytes))
}

// appendBatch encodes the deliveries taken from the session and empties the batch.
func (c *client) appendBatch(buf []byte, now time.Time) []byte {
	for i := range c.batch {
		buf = c.appendDelivery(buf, &c.batch[i], now)
	}
	clear(c.batch)
	c.batch = c.batch[:0]
	return buf
}

// appendDelivery encodes one delivery: PUBREL when the client already sent PUBREC,
// otherwise PUBLISH with the per-subscriber properties and an outbound topic alias.
func (c *client) appendDelivery(buf []byte, d *session.Delivery, now time.Time) []byte {
	if d.Released {
		p := packet.Packet{Type: packet.Pubrel, PacketID: d.PacketID}
		return p.Encode(buf, c.version)
	}
	m := d.Msg
	p := packet.Packet{Type: packet.Publish, QoS: d.QoS, Retain: d.Retain, Dup: d.Dup,
		PacketID: d.PacketID, Topic: m.Topic, Payload: m.Payload}
	newAlias := uint16(0)
	if c.version == packet.V5 {
		p.Properties = m.Properties
		if rem, ok := m.RemainingExpiry(now); ok {
			p.Properties.MessageExpiry = rem
			p.Properties.Set(packet.PropMessageExpiry)
		}
		p.Properties.SubscriptionIdentifier = d.SubIDs
		if c.aliasMaxOut > 0 {
			if a, ok := c.aliasOut[m.Topic]; ok {
				p.Topic = ""
				p.Properties.TopicAlias = a
				p.Properties.Set(packet.PropTopicAlias)
			} else if len(c.aliasOut) < int(c.aliasMaxOut) {
				newAlias = uint16(len(c.aliasOut) + 1)
				p.Properties.TopicAlias = newAlias
				p.Properties.Set(packet.PropTopicAlias)
			}
		}
	}
	if c.maxOut > 0 && uint32(p.Size(c.version)) > c.maxOut {
		// MQTT-3.1.2-25: a packet over the client's maximum is discarded as if sent.
		c.s.stats.dropped.Add(1)
		c.s.log.Debug("message exceeds client's maximum packet size", "client", c.id, "topic", m.Topic)
		if d.QoS > 0 {
			c.sess.Acked(d.PacketID)
		}
		return buf
	}
	if newAlias != 0 {
		if c.aliasOut == nil {
			c.aliasOut = make(map[string]uint16)
		}
		c.aliasOut[m.Topic] = newAlias
	}
	c.s.stats.msgsOut.Add(1)
	return p.Encode(buf, c.version)
}
