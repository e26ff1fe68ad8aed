package server

import (
	"bufio"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
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
	listener string         // the name of the listener that accepted the connection
	admitted *listenerState // holds a connection slot (see admit)
	pubMsgs  *rate.Limiter  // publish rate (nil: none)
	pubBytes *rate.Limiter  // publish byte rate (nil: none)

	// writer
	aliasOut  map[string]uint16
	wbuf      []byte
	batch     []session.Delivery
	ctrlSpare []packet.Packet

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
	return c
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

// notify wakes the writer; it never blocks.
func (c *client) notify() {
	select {
	case c.wake <- struct{}{}:
	default:
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

// serve runs the connection: CONNECT, then the read loop, then cleanup.
func (c *client) serve() {
	s := c.s
	s.mu.Lock()
	s.clients[c] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.clients, c)
		s.mu.Unlock()
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
	defer c.release()
	c.version, c.id, c.connectedAt = p.Connect.ProtocolVersion, p.Connect.ClientID, time.Now()
	if code, why := c.admit(p); code != packet.Success {
		c.refuseOverLimit(code, why)
		_ = c.conn.Close()
		return
	}
	c.publishLimiters()
	if !c.connect(p) {
		_ = c.conn.Close()
		return
	}
	s.stats.connected.Add(1)
	defer s.stats.connected.Add(-1)
	c.mu.Lock()
	closing := c.closing
	c.writing = !closing
	c.mu.Unlock()
	if closing {
		_ = c.conn.Close()
		s.disconnected(c)
		return
	}
	go c.writeLoop()

	code, why := c.readLoop()
	if c.acks != nil {
		close(c.acks) // the acker sends what is left while the writer still runs
	}
	c.shutdown(code, why)
	<-c.writerDone
	s.disconnected(c) // the will and the session do not wait for the drain
	c.drainInput()
	_ = c.conn.Close()
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

// readLoop reads and handles packets until the connection ends. It returns the reason
// code (and reason string) to send in a server DISCONNECT, or noCode.
func (c *client) readLoop() (code packet.Code, why string) {
	s := c.s
	var p packet.Packet // reused: handlers copy what they keep, never &p
	for {
		if c.keepAlive > 0 {
			_ = c.conn.SetReadDeadline(time.Now().Add(c.keepAlive * 3 / 2))
		} else {
			_ = c.conn.SetReadDeadline(time.Time{})
		}
		// Checked after setting the deadline: endWrites sets ended before its own
		// deadline of now, so one of the two stops this reader.
		if c.ended.Load() {
			return noCode, ""
		}
		err := packet.ReadInto(c.br, &p, c.version, s.opts.MaxPacketSize)
		if err == nil && (c.takenOver.Load() || c.ended.Load()) {
			return noCode, "" // the session is another connection's now, or the server ended this one: nothing more of it counts
		}
		if err == nil {
			err = c.handle(&p)
		}
		if err == nil {
			if p.Type == packet.Publish {
				c.throttlePublish(len(p.Payload))
			}
			continue
		}
		if errors.Is(err, errClientDisconnect) {
			return noCode, ""
		}
		var ne net.Error
		switch {
		case c.takenOver.Load(), c.ended.Load():
			return noCode, "" // another connection took over, or the server ended this one
		case isCode(err):
			c.countBadInput(err)
			s.log.Info("closing client after protocol violation", "client", c.id, "remote", c.addr, "error", err)
			return packet.CodeOf(err), err.Error()
		case errors.As(err, &ne) && ne.Timeout():
			s.log.Info("keepalive timeout", "client", c.id, "remote", c.addr)
			return packet.KeepAliveTimeout, "no packet within 1.5 times the keepalive"
		default:
			s.log.Debug("connection lost", "client", c.id, "remote", c.addr, "error", err)
			return noCode, ""
		}
	}
}

// writeLoop is the connection's only writer: it batches control packets and deliveries
// into one buffer per wake-up and writes it with a single call.
func (c *client) writeLoop() {
	defer close(c.writerDone)
	held := false // the last round kept c.batch back for a SUBACK (holdDeliveries)
	for range c.wake {
		for {
			now := time.Now()
			// While deliveries are held, what was taken stays the only batch: the rest
			// waits in the session's queue, whose limits apply.
			if !held || len(c.batch) == 0 {
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
			held = hold
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
					_ = c.conn.Close()
					return
				}
			}
			if cap(c.wbuf) > 1<<20 {
				c.wbuf = nil // do not pin a large buffer for an idle client
			}
			if closing {
				c.endWrites()
				return
			}
			if len(buf) == 0 {
				break
			}
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
		_ = c.conn.Close()
		return
	}
	c.ended.Store(true)
	_ = c.conn.SetReadDeadline(time.Now())
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
