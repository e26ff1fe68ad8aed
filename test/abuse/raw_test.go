package abuse

import (
	"bufio"
	"net"
	"testing"
	"time"

	"github.com/mqtt-operator/mqtt-operator/broker/packet"
)

// raw is an MQTT 3.1.1 client written packet by packet, for clients that misbehave.
type raw struct {
	conn net.Conn
	br   *bufio.Reader
}

func rawConn(t testing.TB, addr string) *raw {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return &raw{conn: c, br: bufio.NewReader(c)}
}

func (r *raw) send(t testing.TB, p *packet.Packet) {
	t.Helper()
	_ = r.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := r.conn.Write(p.Encode(nil, packet.V311)); err != nil {
		t.Fatalf("write %s: %v", p.Type, err)
	}
}

func (r *raw) read(t testing.TB) *packet.Packet {
	t.Helper()
	_ = r.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	p, err := packet.Read(r.br, packet.V311, 0)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return p
}

func (r *raw) connect(t testing.TB, id string, clean bool) {
	t.Helper()
	r.send(t, &packet.Packet{Type: packet.Connect, Connect: packet.ConnectFields{
		ProtocolVersion: packet.V311, CleanStart: clean, ClientID: id, KeepAlive: 0}})
	if p := r.read(t); p.Type != packet.Connack || p.ReasonCode != 0 {
		t.Fatalf("%s: got %s 0x%02X, want CONNACK 0x00", id, p.Type, byte(p.ReasonCode))
	}
}
