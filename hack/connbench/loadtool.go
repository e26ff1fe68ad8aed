package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mqtt-operator/mqtt-operator/broker/packet"
)

// The load tool alone: its publishers into a sink that only reads, its subscribers
// fed by a source that only writes (toolPublishRate, toolReceiveRate).

// toolPublishRate measures sc's publishers alone: into a sink that reads (and
// acknowledges QoS 1) but routes nothing.
func toolPublishRate(sc scenario) (float64, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer func() { _ = l.Close() }()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go sink(c)
		}
	}()
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, sc.Pubs)
	var conns []net.Conn
	defer func() { closeAll(conns) }()
	for i := range sc.Pubs {
		c, br, err := loadConnect(l.Addr().String(), "tool-pub-"+strconv.Itoa(i), "", 0)
		if err != nil {
			return 0, err
		}
		conns = append(conns, c)
		wg.Go(func() { errs <- publisher(c, br, "load/"+strconv.Itoa(i), sc.QoS, sc.Msgs/sc.Pubs) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return 0, err
		}
	}
	return float64(sc.Msgs/sc.Pubs*sc.Pubs) / time.Since(start).Seconds(), nil
}

// sink answers CONNECT and QoS 1 PUBLISH packets and otherwise only reads.
func sink(c net.Conn) {
	defer func() { _ = c.Close() }()
	br := bufio.NewReaderSize(c, 64<<10)
	var p packet.Packet
	var out []byte
	for {
		if err := packet.ReadInto(br, &p, packet.V311, 0); err != nil {
			return
		}
		switch {
		case p.Type == packet.Connect:
			out = (&packet.Packet{Type: packet.Connack}).Encode(out, packet.V311)
		case p.Type == packet.Publish && p.QoS == 1:
			out = (&packet.Packet{Type: packet.Puback, PacketID: p.PacketID}).Encode(out, packet.V311)
		case p.Type == packet.Publish && p.QoS == 2:
			out = (&packet.Packet{Type: packet.Pubrec, PacketID: p.PacketID}).Encode(out, packet.V311)
		case p.Type == packet.Pubrel:
			out = (&packet.Packet{Type: packet.Pubcomp, PacketID: p.PacketID}).Encode(out, packet.V311)
		}
		if len(out) > 0 && (br.Buffered() == 0 || len(out) > 4096) {
			if _, err := c.Write(out); err != nil {
				return
			}
			out = out[:0]
		}
	}
}

// toolReceiveRate measures sc's subscribers alone: fed by a source that writes
// their share of deliveries as fast as they take them (and reads their acks), in
// 64 KiB writes or (single) one packet per write, as a broker that does not batch.
func toolReceiveRate(sc scenario, single bool) (float64, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer func() { _ = l.Close() }()
	perSub := sc.expected() / sc.Subs
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go source(c, sc.QoS, perSub, single)
		}
	}()
	var delivered atomic.Int64
	last := newLastDelivery()
	start := time.Now()
	var conns []net.Conn
	defer func() { closeAll(conns) }()
	for i := range sc.Subs {
		c, br, err := loadConnect(l.Addr().String(), "tool-sub-"+strconv.Itoa(i), "load/#", sc.QoS)
		if err != nil {
			return 0, err
		}
		conns = append(conns, c)
		go subscriber(c, br, &delivered, last, nil)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for delivered.Load() < int64(sc.expected()) {
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("the tool's subscribers received %d of %d", delivered.Load(), sc.expected())
		}
		time.Sleep(5 * time.Millisecond) // polling the counter, bounded by the deadline
	}
	return float64(sc.expected()) / time.Since(start).Seconds(), nil
}

// source answers CONNECT and SUBSCRIBE, then writes n PUBLISH packets at qos in
// 64 KiB writes, reading (and dropping) the acks until the subscriber hangs up
// (closing first, with acks unread, would reset the connection and lose what the
// subscriber has not read yet).
func source(c net.Conn, qos byte, n int, single bool) {
	defer func() { _ = c.Close() }()
	br := bufio.NewReaderSize(c, 64<<10)
	for _, want := range []packet.Type{packet.Connect, packet.Subscribe} {
		p, err := packet.Read(br, packet.V311, 0)
		if err != nil || p.Type != want {
			return
		}
		reply := &packet.Packet{Type: packet.Connack}
		if want == packet.Subscribe {
			reply = &packet.Packet{Type: packet.Suback, PacketID: p.PacketID, ReasonCodes: []packet.Code{packet.Code(qos)}}
		}
		if _, err := c.Write(reply.Encode(nil, packet.V311)); err != nil {
			return
		}
	}
	drained := make(chan struct{})
	go func() { _, _ = io.Copy(io.Discard, br); close(drained) }()
	defer func() { <-drained }()
	p := packet.Packet{Type: packet.Publish, Topic: "load/0", Payload: make([]byte, 64), QoS: qos}
	var buf []byte
	for i := range n {
		if qos > 0 {
			p.PacketID = uint16(i%65535 + 1)
		}
		buf = p.Encode(buf, packet.V311)
		if single || len(buf) >= 64<<10 || i == n-1 {
			if _, err := c.Write(buf); err != nil {
				return
			}
			buf = buf[:0]
		}
	}
}
