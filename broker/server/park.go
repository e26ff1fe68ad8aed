package server

import (
	"bufio"
	"net"
	"syscall"
	"time"

	"github.com/mqtt-operator/mqtt-operator/broker/internal/lockorder"
)

// Parking idle connections (see broker/LOCKS.md, "Parked connections").
//
// A connection is served by a reader goroutine and, while it has something to write,
// a writer goroutine. Most MQTT devices are idle nearly all of the time, and a
// goroutine blocked in Read holds its stack (several KiB once it has handled a
// CONNECT) and the 4 KiB read buffer. So a reader that has seen no input for
// parkAfter parks its connection: it registers the socket with the server's poller
// (its own epoll instance, one goroutine for every parked connection), gives its read
// buffer back to a pool and ends; the writer ends too once it has nothing to do. The
// first byte the client sends, its socket closing, the keepalive running out (a
// timing wheel of one-second slots, not one timer per connection) or the server ending
// the connection starts a new reader goroutine, which continues where the old one
// stopped.
//
// Only plain TCP connections park: TLS and the PROXY protocol buffer input of their
// own, out of the poller's sight, and WebSocket connections are served by the HTTP
// server's goroutine.

// parkAfter is how long a reader waits for input before it parks its connection.
// Short, because a fleet's connections wake for their pings all the time (a minute's
// keepalive over a million devices is 17,000 pings a second) and each stays awake,
// with a goroutine stack and a read buffer, for parkAfter; long enough that a client
// in a conversation (a QoS 1 or 2 flow, a burst of publishes) keeps its reader.
// A variable so that tests can park at once.
var parkAfter = 500 * time.Millisecond

// parkAfter is Options.ParkAfter, or the default.
func (s *Server) parkAfter() time.Duration {
	if s.opts.ParkAfter > 0 {
		return s.opts.ParkAfter
	}
	return parkAfter
}

// freeReaders holds read buffers given back by connections that parked, for the next
// to wake. Bounded, unlike a sync.Pool, which would keep every buffer of a burst of
// parks (all of a fleet's connections, after they connected) through a garbage
// collection: beyond it, a buffer is garbage at once.
var freeReaders = make(chan *bufio.Reader, 256)

func getReader() *bufio.Reader {
	select {
	case br := <-freeReaders:
		return br
	default:
		return bufio.NewReaderSize(nil, 4096)
	}
}

func putReader(br *bufio.Reader) {
	br.Reset(nil)
	select {
	case freeReaders <- br:
	default:
	}
}

// wheelSlots is the timing wheel's span in seconds; a later deadline goes round again.
const wheelSlots = 512

// parkRef names a connection that parked: its slot in the poller's table (kept from its
// first park to its end) and the slot's generation then, so that a late event or
// wheel entry of a connection that ended is recognized. (A late event of an earlier
// park of the same connection can wake it once more: it reads nothing and parks again.)
type parkRef struct{ slot, gen uint32 }

// parker is the poller: an epoll instance, a table of the parked connections, and
// the keepalive wheel. Its lock is a leaf: nothing else is taken under it.
type parker struct {
	epfd  int
	wakeR int // read end of a pipe that stops the loop
	wakeW int
	done  chan struct{}
	mu    lockorder.Mutex
	slots []parkedConn
	free  []uint32
	// The keepalive wheel: at most one entry per connection (inWheel), filed under a
	// second counted from epoch on the monotonic clock (a step of the wall clock
	// changes nothing); an entry whose client is awake, or not due yet, when its
	// second comes is dropped, or filed again.
	wheel    [wheelSlots][]parkRef
	epoch    time.Time
	wheelSec int64 // the wheel's next second to process
	closed   bool
	onResume func(c *client)
}

type parkedConn struct {
	c   *client
	gen uint32
}

// plainTCP returns the raw socket of conn when the poller can watch it on its own:
// a TCP connection without TLS or PROXY protocol in between.
func plainTCP(conn any) syscall.RawConn {
	if pc, ok := conn.(interface{ Plain() net.Conn }); ok { // a listener.Conn
		conn = pc.Plain()
	}
	tc, ok := conn.(*net.TCPConn)
	if !ok {
		return nil
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}

// park registers c's socket and records it as parked, unless the connection is
// ending. It returns false when c must keep reading instead. Called by c's reader.
// A connection keeps its slot in the table from its first park to its end (forget):
// the slot and its generation name it in epoll events and in the keepalive wheel.
func (p *parker) park(c *client) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || c.ended.Load() {
		return false
	}
	if c.parkRef.gen == 0 {
		var slot uint32
		if n := len(p.free); n > 0 {
			slot = p.free[n-1]
			p.free = p.free[:n-1]
		} else {
			slot = uint32(len(p.slots))
			p.slots = append(p.slots, parkedConn{})
		}
		pc := &p.slots[slot]
		pc.gen++
		if pc.gen == 0 {
			pc.gen = 1 // 0 is the poller's own pipe
		}
		pc.c = c
		c.parkRef = parkRef{slot, pc.gen}
	}
	if err := epollAdd(p.epfd, c.raw, c.parkRef); err != nil {
		// Not expected (ENOSPC: fs.epoll.max_user_watches): the connection keeps its
		// reader goroutine, as before parking existed.
		c.s.log.Warn("idle connection cannot park: it keeps its reader", "client", c.id, "remote", c.addr, "error", err)
		return false
	}
	c.parked = true
	c.s.stats.parked.Add(1)
	if c.keepAlive > 0 && !c.inWheel {
		p.addToWheel(c, p.wheelSec)
	}
	return true
}

// unpark starts a new reader for c if it is parked (nil: nothing).
func (p *parker) unpark(c *client) {
	p.mu.Lock()
	if c == nil || !c.parked {
		p.mu.Unlock()
		return
	}
	p.release(c)
	p.mu.Unlock()
	go p.onResume(c)
}

// release ends c's parking (p.mu held).
func (p *parker) release(c *client) {
	c.parked = false
	c.s.stats.parked.Add(-1)
}

// forget gives c's slot back: its connection ended (its reader calls it, awake).
func (p *parker) forget(c *client) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c.parkRef.gen == 0 {
		return
	}
	p.slots[c.parkRef.slot].c = nil
	p.free = append(p.free, c.parkRef.slot)
	c.parkRef = parkRef{}
}

// lookup returns the connection ref names, or nil when it ended since (p.mu held).
func (p *parker) lookup(ref parkRef) *client {
	if int(ref.slot) >= len(p.slots) {
		return nil
	}
	if pc := p.slots[ref.slot]; pc.gen == ref.gen {
		return pc.c
	}
	return nil
}

// wake is the poller's answer to an event of ref: an event of a connection that ended
// finds nothing; a late one of an earlier park wakes the connection once more.
func (p *parker) wake(ref parkRef) {
	p.mu.Lock()
	c := p.lookup(ref)
	p.mu.Unlock()
	p.unpark(c)
}

// addToWheel files c under its keepalive deadline's second, or under the one second
// of the wheel's span nearest to it from first on (p.mu held).
func (p *parker) addToWheel(c *client, first int64) {
	sec := min(max(p.second(c.kaDeadline), first), first+wheelSlots-1)
	i := sec % wheelSlots
	p.wheel[i] = append(p.wheel[i], c.parkRef)
	c.inWheel = true
}

// second is t's second on the wheel (monotonic: t must come from time.Now).
func (p *parker) second(t time.Time) int64 { return int64(t.Sub(p.epoch) / time.Second) }

// tick wakes the parked connections whose keepalive ran out in the seconds that have
// fully passed by now, and files again those of them that are not due yet (their
// deadline moved on since they were filed). It returns how long until the next
// second ends.
func (p *parker) tick(now time.Time) time.Duration {
	var due []*client
	p.mu.Lock()
	for nowSec := p.second(now); p.wheelSec < nowSec; p.wheelSec++ {
		i := p.wheelSec % wheelSlots
		entries := p.wheel[i]
		p.wheel[i] = nil
		for _, ref := range entries {
			c := p.lookup(ref)
			switch {
			case c == nil: // the connection ended
			case !c.parked:
				c.inWheel = false // awake: filed again when it parks
			case !now.Before(c.kaDeadline):
				c.inWheel = false
				p.release(c)
				due = append(due, c)
			default:
				p.addToWheel(c, p.wheelSec+1) // not before the next second
			}
		}
		if p.wheel[i] == nil && cap(entries) <= 64 {
			p.wheel[i] = entries[:0] // reused; a large slot's array is let go
		}
	}
	next := p.epoch.Add(time.Duration(p.wheelSec+1) * time.Second).Sub(now)
	p.mu.Unlock()
	for _, c := range due {
		go p.onResume(c)
	}
	return next
}

// stop ends the poller's loop; connections still parked stay so (the server's
// shutdown has ended them all before).
func (p *parker) stop() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	p.mu.Unlock()
	_, _ = syscall.Write(p.wakeW, []byte{0})
	<-p.done
}
