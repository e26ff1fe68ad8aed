package server_test

import (
	"bufio"
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/mqtt-operator/mqtt-operator/broker/packet"
)

// rawClient speaks MQTT packet by packet over a real socket, for tests that need exact
// control of the flow (interrupting QoS 2 mid-way, malformed input, raw reason codes).
type rawClient struct {
	t       testing.TB
	conn    net.Conn
	br      *bufio.Reader
	version byte
}

// dialRaw opens a TCP connection to addr for protocol version.
func dialRaw(t testing.TB, addr string, version byte) *rawClient {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return &rawClient{t: t, conn: conn, br: bufio.NewReader(conn), version: version}
}

// send encodes and writes p.
func (c *rawClient) send(p *packet.Packet) {
	c.t.Helper()
	c.write(p.Encode(nil, c.version))
}

// write sends raw bytes.
func (c *rawClient) write(b []byte) {
	c.t.Helper()
	_ = c.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.conn.Write(b); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// read returns the next packet or fails the test after timeout.
func (c *rawClient) read(timeout time.Duration) *packet.Packet {
	c.t.Helper()
	p, err := c.tryRead(timeout)
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	return p
}

// tryRead returns the next packet or the error (io.EOF when the server closed).
func (c *rawClient) tryRead(timeout time.Duration) (*packet.Packet, error) {
	_ = c.conn.SetReadDeadline(time.Now().Add(timeout))
	return packet.Read(c.br, c.version, 0)
}

// expect reads the next packet and fails unless it has type want.
func (c *rawClient) expect(want packet.Type) *packet.Packet {
	c.t.Helper()
	p := c.read(5 * time.Second)
	if p.Type != want {
		c.t.Fatalf("got %s (reason 0x%02X), want %s", p.Type, byte(p.ReasonCode), want)
	}
	return p
}

// expectClosed waits until the server closes c's connection and returns the packets
// (such as a DISCONNECT) read before the close. It fails the test when the connection
// is still open after timeout: a read timeout is not a close.
func expectClosed(t testing.TB, c *rawClient, timeout time.Duration) []*packet.Packet {
	t.Helper()
	var got []*packet.Packet
	deadline := time.Now().Add(timeout)
	for {
		p, err := c.tryRead(time.Until(deadline))
		switch {
		case err == nil:
			got = append(got, p)
		case isTimeout(err):
			t.Fatalf("connection still open after %v (got %d packets)", timeout, len(got))
		case isClosed(err):
			return got
		default:
			t.Fatalf("unexpected read error: %v", err)
		}
	}
}

// isClosed reports whether err means the peer closed the connection.
func isClosed(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// isTimeout reports whether err is a read or write deadline expiring.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// connect sends CONNECT for clientID and returns the CONNACK.
func (c *rawClient) connect(clientID string, clean bool, keepAlive uint16, props *packet.Properties) *packet.Packet {
	c.t.Helper()
	p := &packet.Packet{Type: packet.Connect, Connect: packet.ConnectFields{
		ProtocolVersion: c.version, CleanStart: clean, KeepAlive: keepAlive, ClientID: clientID}}
	if props != nil {
		p.Properties = *props
	}
	c.send(p)
	return c.expect(packet.Connack)
}
