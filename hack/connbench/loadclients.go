package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mqtt-operator/mqtt-operator/broker/packet"
)

// The load mode's clients: running a scenario against a broker (publishers,
// subscribers, pairs) and measuring it (CPU time).

// runScenario connects sc's subscribers and publishers to addr, publishes, and
// measures the deliveries per second: from the first publish to the last delivery,
// once every subscriber has all it should get or nothing arrived for 3 s (QoS 0
// may be dropped). pid is the broker's, for its CPU time.
func runScenario(addr string, sc scenario, pid int) (loadResult, error) {
	if sc.Pairs {
		return runPairs(addr, sc, pid)
	}
	r := loadResult{Scenario: sc.Name, Expected: sc.expected()}
	counts := make([]atomic.Int64, sc.Subs) // each subscriber's deliveries
	delivered := func() (total int64) {
		for i := range counts {
			total += counts[i].Load()
		}
		return total
	}
	last := newLastDelivery()
	var subs []net.Conn
	defer func() { closeAll(subs) }()
	ended := make(chan error, sc.Subs)
	for i := range sc.Subs {
		c, br, err := loadConnect(addr, fmt.Sprintf("load-sub-%d", i), "load/#", sc.QoS)
		if err != nil {
			return r, err
		}
		subs = append(subs, c)
		go subscriber(c, br, &counts[i], last, ended)
	}
	var pubs []net.Conn
	defer func() { closeAll(pubs) }()
	var brs []*bufio.Reader
	for i := range sc.Pubs {
		c, br, err := loadConnect(addr, fmt.Sprintf("load-pub-%d", i), "", 0)
		if err != nil {
			return r, err
		}
		pubs = append(pubs, c)
		brs = append(brs, br)
	}
	brokerCPU0, err := cpuSeconds(pid)
	if err != nil {
		return r, err
	}
	toolCPU0, err := cpuSeconds(os.Getpid())
	if err != nil {
		return r, err
	}
	start := time.Now()
	errs := make(chan error, sc.Pubs)
	for i, c := range pubs {
		go func() { errs <- publisher(c, brs[i], "load/"+strconv.Itoa(i), sc.QoS, sc.Msgs/sc.Pubs) }()
	}
	for range pubs {
		if err := <-errs; err != nil {
			return r, err
		}
	}
	// Until everything arrived, or nothing more for 3 s.
	for prev, idle := int64(-1), time.Now(); delivered() < int64(r.Expected); {
		if d := delivered(); d != prev {
			prev, idle = d, time.Now()
		} else if time.Since(idle) > 3*time.Second {
			break
		}
		time.Sleep(5 * time.Millisecond) // polling the counters, bounded by the idle limit
	}
	select {
	case err := <-ended:
		return r, fmt.Errorf("a subscriber's connection ended after %d deliveries: %w", delivered(), err)
	default:
	}
	end := last.at()
	r.Delivered = int(delivered())
	r.MinShare = 100
	perSub := r.Expected / sc.Subs
	for i := range counts {
		r.MinShare = min(r.MinShare, 100*float64(counts[i].Load())/float64(perSub))
	}
	if sc.QoS > 0 && r.Delivered != r.Expected {
		return r, fmt.Errorf("QoS %d: %d of %d acknowledged messages delivered (the smallest share of a subscriber %.1f %%)", sc.QoS, r.Delivered, r.Expected, r.MinShare)
	}
	r.Seconds = end.Sub(start).Seconds()
	if r.Delivered == 0 || r.Seconds <= 0 {
		return r, errors.New("nothing was delivered")
	}
	r.Rate = float64(r.Delivered) / r.Seconds
	brokerCPU1, err := cpuSeconds(pid)
	if err != nil {
		return r, err
	}
	toolCPU1, err := cpuSeconds(os.Getpid())
	if err != nil {
		return r, err
	}
	// Per second of the measured span (an idle wait for lost messages adds no CPU).
	r.BrokerCPU, r.ToolCPU = (brokerCPU1-brokerCPU0)/r.Seconds, (toolCPU1-toolCPU0)/r.Seconds
	return r, nil
}

// loadConnect connects a clean MQTT 3.1.1 client, subscribed to filter unless empty.
func loadConnect(addr, id, filter string, qos byte) (net.Conn, *bufio.Reader, error) {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, nil, err
	}
	buf := (&packet.Packet{Type: packet.Connect, Connect: packet.ConnectFields{ProtocolName: "MQTT", ProtocolVersion: packet.V311, CleanStart: true, ClientID: id}}).Encode(nil, packet.V311)
	want := []packet.Type{packet.Connack}
	if filter != "" {
		buf = (&packet.Packet{Type: packet.Subscribe, PacketID: 1, Subscriptions: []packet.Subscription{{Filter: filter, QoS: qos}}}).Encode(buf, packet.V311)
		want = append(want, packet.Suback)
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(buf); err != nil {
		_ = c.Close()
		return nil, nil, err
	}
	br := bufio.NewReaderSize(c, 64<<10)
	for _, w := range want {
		p, err := packet.Read(br, packet.V311, 0)
		if err != nil || p.Type != w {
			_ = c.Close()
			return nil, nil, fmt.Errorf("%s: waiting for %v: %w (%v)", id, w, err, p)
		}
	}
	// No run takes this long: a broker that stops reading or writing fails the run
	// instead of hanging it.
	_ = c.SetDeadline(time.Now().Add(3 * time.Minute))
	return c, br, nil
}

// subscriber counts the PUBLISH packets read from c, acknowledging QoS 1 ones (the
// acks of what one read brought, written together), until c fails; then it
// returns why (on ended, if not nil).
func subscriber(c net.Conn, br *bufio.Reader, delivered *atomic.Int64, last *lastDelivery, ended chan<- error) {
	subscriberFunc(c, br, delivered, last, ended, nil)
}

// lastDelivery is the time of the latest delivery, on the monotonic clock: the
// duration since epoch.
type lastDelivery struct {
	epoch time.Time
	since atomic.Int64
}

func newLastDelivery() *lastDelivery { return &lastDelivery{epoch: time.Now()} }

func (l *lastDelivery) mark() {
	now := int64(time.Since(l.epoch))
	for {
		old := l.since.Load()
		if now <= old || l.since.CompareAndSwap(old, now) {
			return
		}
	}
}

// at is the time of the latest delivery.
func (l *lastDelivery) at() time.Time { return l.epoch.Add(time.Duration(l.since.Load())) }

// subscriberFunc is subscriber, calling onPublish (unless nil) at every delivery.
// QoS 2 deliveries get PUBREC, and their PUBREL a PUBCOMP.
func subscriberFunc(c net.Conn, br *bufio.Reader, delivered *atomic.Int64, last *lastDelivery, ended chan<- error, onPublish func()) {
	var p packet.Packet
	var acks []byte
	for {
		if err := packet.ReadInto(br, &p, packet.V311, 0); err != nil {
			if ended != nil {
				ended <- err
			}
			return
		}
		if p.Type == packet.Disconnect {
			if ended != nil {
				ended <- fmt.Errorf("DISCONNECT from the broker (reason 0x%02X)", byte(p.ReasonCode))
			}
			return
		}
		switch {
		case p.Type == packet.Pubrel:
			acks = (&packet.Packet{Type: packet.Pubcomp, PacketID: p.PacketID}).Encode(acks, packet.V311)
		case p.Type != packet.Publish:
			continue
		default:
			delivered.Add(1)
			last.mark()
			if onPublish != nil {
				onPublish()
			}
			switch p.QoS {
			case 1:
				acks = (&packet.Packet{Type: packet.Puback, PacketID: p.PacketID}).Encode(acks, packet.V311)
			case 2:
				acks = (&packet.Packet{Type: packet.Pubrec, PacketID: p.PacketID}).Encode(acks, packet.V311)
			}
		}
		if len(acks) > 0 && (br.Buffered() == 0 || len(acks) > 4096) {
			if _, err := c.Write(acks); err != nil {
				if ended != nil {
					ended <- err
				}
				return
			}
			acks = acks[:0]
		}
	}
}

// publisher sends n PUBLISH packets of 64 bytes on topic: QoS 0 as fast as the
// socket takes them (64 KiB writes), QoS 1 and 2 with up to 256 unfinished (the
// acks read, and PUBREC answered with PUBREL, by a goroutine of its own), and
// returns once all are written (QoS 0) or finished (PUBACK, PUBCOMP).
func publisher(c net.Conn, br *bufio.Reader, topic string, qos byte, n int) error {
	payload := make([]byte, 64)
	if qos == 0 {
		one := (&packet.Packet{Type: packet.Publish, Topic: topic, Payload: payload}).Encode(nil, packet.V311)
		per := max(1, (64<<10)/len(one))
		batch := make([]byte, 0, per*len(one))
		for range per {
			batch = append(batch, one...)
		}
		for sent := 0; sent < n; sent += per {
			k := min(per, n-sent)
			if _, err := c.Write(batch[:k*len(one)]); err != nil {
				return err
			}
		}
		return nil
	}
	// Up to window unfinished; once the window is full, the next publishes wait
	// until a quarter of it is free, and go out together (not one write per ack).
	const window = 256
	var mu sync.Mutex // inflight, rerr
	cond := sync.NewCond(&mu)
	inflight := 0
	var rerr error
	var wmu sync.Mutex // w: the publishes, and the PUBRELs the reader answers PUBREC with
	w := bufio.NewWriterSize(c, 64<<10)
	locked := func(f func() error) error {
		wmu.Lock()
		defer wmu.Unlock()
		return f()
	}
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		var p packet.Packet
		var rel []byte
		fail := func(err error) {
			mu.Lock()
			rerr = err
			cond.Broadcast()
			mu.Unlock()
		}
		unsent := false // PUBRELs written to w and not flushed
		for {
			if err := packet.ReadInto(br, &p, packet.V311, 0); err != nil {
				fail(err)
				return
			}
			switch p.Type {
			case packet.Puback, packet.Pubcomp:
				mu.Lock()
				inflight--
				if inflight == window*3/4 || inflight == 0 {
					cond.Broadcast()
				}
				mu.Unlock()
			case packet.Pubrec:
				rel = (&packet.Packet{Type: packet.Pubrel, PacketID: p.PacketID}).Encode(rel[:0], packet.V311)
				if err := locked(func() error { _, err := w.Write(rel); return err }); err != nil {
					fail(err)
					return
				}
				unsent = true
			}
			// What one read brought is handled: send the PUBRELs it asked for.
			if unsent && br.Buffered() == 0 {
				if err := locked(w.Flush); err != nil {
					fail(err)
					return
				}
				unsent = false
			}
		}
	}()
	// waitFor waits until ok holds (with mu held) or the reader failed.
	waitFor := func(ok func() bool) error {
		mu.Lock()
		defer mu.Unlock()
		for !ok() && rerr == nil {
			cond.Wait()
		}
		return rerr
	}
	p := packet.Packet{Type: packet.Publish, Topic: topic, Payload: payload, QoS: qos}
	var buf []byte
	for i := range n {
		mu.Lock()
		full := inflight >= window
		mu.Unlock()
		if full {
			if err := locked(w.Flush); err != nil {
				return err
			}
			if err := waitFor(func() bool { return inflight <= window*3/4 }); err != nil {
				return err
			}
		}
		mu.Lock()
		inflight++
		mu.Unlock()
		p.PacketID = uint16(i%65535 + 1)
		buf = p.Encode(buf[:0], packet.V311)
		if err := locked(func() error { _, err := w.Write(buf); return err }); err != nil {
			return err
		}
	}
	if err := locked(w.Flush); err != nil {
		return err
	}
	err := waitFor(func() bool { return inflight == 0 })
	_ = c.SetReadDeadline(time.Now()) // every ack is in: stop the reader
	<-readerDone
	return err
}

// runPairs runs a pairs scenario (see scenario.Pairs).
func runPairs(addr string, sc scenario, pid int) (loadResult, error) {
	r := loadResult{Scenario: sc.Name, Expected: sc.expected()}
	per := sc.Msgs / sc.Pubs
	var delivered atomic.Int64
	last := newLastDelivery()
	var conns []net.Conn
	defer func() { closeAll(conns) }()
	type pair struct {
		pub net.Conn
		got chan struct{}
	}
	pairs := make([]pair, sc.Pubs)
	for i := range pairs {
		got := make(chan struct{}, 1)
		sub, sbr, err := loadConnect(addr, fmt.Sprintf("pair-sub-%d", i), fmt.Sprintf("pair/%d", i), sc.QoS)
		if err != nil {
			return r, err
		}
		conns = append(conns, sub)
		go subscriberFunc(sub, sbr, &delivered, last, nil, func() {
			select {
			case got <- struct{}{}:
			default: // a duplicate: the publisher waits for one
			}
		})
		pub, pbr, err := loadConnect(addr, fmt.Sprintf("pair-pub-%d", i), "", 0)
		if err != nil {
			return r, err
		}
		conns = append(conns, pub)
		go func() { _, _ = io.Copy(io.Discard, pbr) }() // the PUBACKs
		pairs[i] = pair{pub, got}
	}
	brokerCPU0, err1 := cpuSeconds(pid)
	toolCPU0, err2 := cpuSeconds(os.Getpid())
	if err := errors.Join(err1, err2); err != nil {
		return r, err
	}
	lat := make([][]time.Duration, len(pairs))
	errs := make(chan error, len(pairs))
	var wg sync.WaitGroup
	start := time.Now()
	for i, pr := range pairs {
		wg.Go(func() {
			p := packet.Packet{Type: packet.Publish, Topic: fmt.Sprintf("pair/%d", i), Payload: make([]byte, 64), QoS: sc.QoS}
			var buf []byte
			for k := range per {
				p.PacketID = uint16(k%65535 + 1)
				buf = p.Encode(buf[:0], packet.V311)
				t0 := time.Now()
				if _, err := pr.pub.Write(buf); err != nil {
					errs <- err
					return
				}
				select {
				case <-pr.got:
				case <-time.After(10 * time.Second):
					errs <- fmt.Errorf("pair %d: message %d not delivered within 10 s", i, k)
					return
				}
				lat[i] = append(lat[i], time.Since(t0))
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		return r, err
	}
	r.Seconds = time.Since(start).Seconds()
	r.Delivered = int(delivered.Load())
	r.MinShare = 100 * float64(r.Delivered) / float64(r.Expected)
	r.Rate = float64(r.Delivered) / r.Seconds
	brokerCPU1, err1 := cpuSeconds(pid)
	toolCPU1, err2 := cpuSeconds(os.Getpid())
	if err := errors.Join(err1, err2); err != nil {
		return r, err
	}
	r.BrokerCPU, r.ToolCPU = (brokerCPU1-brokerCPU0)/r.Seconds, (toolCPU1-toolCPU0)/r.Seconds
	all := slices.Concat(lat...)
	slices.Sort(all)
	r.P50 = float64(all[len(all)/2]) / float64(time.Millisecond)
	r.P99 = float64(all[len(all)*99/100]) / float64(time.Millisecond)
	return r, nil
}

func closeAll(conns []net.Conn) {
	for _, c := range conns {
		_ = c.Close()
	}
}

// cpuSeconds is the user and system CPU time process pid has used.
func cpuSeconds(pid int) (float64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command (which may hold spaces, in parentheses): utime is
	// the 14th field, stime the 15th, in clock ticks (100 per second on Linux).
	s := string(data)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	if len(f) < 13 {
		return 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	ut, err1 := strconv.ParseFloat(f[11], 64)
	st, err2 := strconv.ParseFloat(f[12], 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return (ut + st) / 100, nil
}
