package server

import (
	"net"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Rate limits slow clients down instead of refusing them: a listener over its
// connection rate accepts its next connection later (the kernel's accept backlog
// holds the others), a client over its publish rate has its next packet read later
// (TCP's flow control holds the publisher). Nothing is dropped, QoS 1/2 included.

// ThrottleAccept returns l with Accept limited to the connection rate of the listener
// called name (Options.ConnectionRate, ConnectionBurst): over it, Accept waits for
// the next token. It returns l itself when there is no connection rate limit.
// ServeListener applies it; a listener served elsewhere (the WebSocket one) wraps its
// net.Listener with it. Connections that never send CONNECT are thereby bounded too:
// at most ConnectionBurst + ConnectionRate x ConnectTimeout wait per listener.
func (s *Server) ThrottleAccept(l net.Listener, name string) net.Listener {
	ls := s.listener(name)
	if ls.accept == nil {
		return l
	}
	return &throttledListener{Listener: l, s: s, name: name, bucket: ls.accept, closed: make(chan struct{})}
}

type throttledListener struct {
	net.Listener
	s      *Server
	name   string
	bucket *rate.Limiter
	once   sync.Once
	closed chan struct{}
}

// Accept waits for a token, then accepts; Close ends the wait.
func (t *throttledListener) Accept() (net.Conn, error) {
	r := t.bucket.Reserve()
	if d := r.Delay(); d > 0 {
		t.s.limits.events[LimitConnectionRate].Add(1)
		t.s.log.Debug("listener over its connection rate: accepting later", "listener", t.name, "wait", d)
		timer := time.NewTimer(d)
		select {
		case <-timer.C:
		case <-t.closed:
			timer.Stop()
			r.Cancel()
			return nil, net.ErrClosed
		}
	}
	return t.Listener.Accept()
}

// Close closes the listener and ends a waiting Accept.
func (t *throttledListener) Close() error {
	t.once.Do(func() { close(t.closed) })
	return t.Listener.Close()
}

// publishLimiters sets up the connection's publish rate limits (none when off): each
// bucket holds one second of its rate. They are made at the first PUBLISH (a bucket
// starts full, so it is the same as making them at CONNECT), which the many clients
// that only subscribe never send.
func (c *client) publishLimiters() {
	c.limitersMade = true
	o := &c.s.opts
	if o.PublishRate > 0 {
		c.pubMsgs = rate.NewLimiter(rate.Limit(o.PublishRate), o.PublishRate)
	}
	if o.PublishByteRate > 0 {
		c.pubBytes = rate.NewLimiter(rate.Limit(o.PublishByteRate), o.PublishByteRate)
	}
}

// throttlePublish runs in the reader after a PUBLISH with payload bytes was handled:
// over the client's publish rate it waits before the next read, until the buckets
// have room again or the connection closes. The message itself was routed and
// acknowledged; what waits is the client's next packet.
func (c *client) throttlePublish(payload int) {
	if !c.limitersMade {
		c.publishLimiters()
	}
	if c.pubMsgs == nil && c.pubBytes == nil {
		return
	}
	now := time.Now()
	var wait time.Duration
	if c.pubMsgs != nil {
		if d := c.pubMsgs.ReserveN(now, 1).DelayFrom(now); d > 0 {
			c.hit(LimitPublishRate, "over the publish rate: reading more slowly", "rate", c.s.opts.PublishRate)
			wait = d
		}
	}
	if c.pubBytes != nil && payload > 0 {
		// A payload larger than the bucket is charged in bucket-sized parts: the
		// reservations run into debt, and the wait pays it back.
		var d time.Duration
		for n := payload; n > 0; n -= c.pubBytes.Burst() {
			d = c.pubBytes.ReserveN(now, min(n, c.pubBytes.Burst())).DelayFrom(now)
		}
		if d > 0 {
			c.hit(LimitPublishByteRate, "over the publish byte rate: reading more slowly", "rate", c.s.opts.PublishByteRate)
			wait = max(wait, d)
		}
	}
	if wait <= 0 {
		return
	}
	timer := time.NewTimer(wait)
	select {
	case <-timer.C:
	case <-c.writerDone: // the connection is closing
		timer.Stop()
	}
}
