package abuse

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// TestConnectionsBeyondTheCapsAreRefused: with 4 connections allowed on the node and 3
// on each listener, the 4th TCP connection is refused by the listener's cap and the
// 5th connection (over WebSocket) by the node's: MQTT 5 clients get CONNACK 0x97
// Quota exceeded, MQTT 3.1.1 clients 0x03 Server unavailable, and the connection is
// closed.
func TestConnectionsBeyondTheCapsAreRefused(t *testing.T) {
	b := startBroker(t, "--limits.max-connections", "4", "--limits.max-connections-per-listener", "3")
	tcp := "tcp://" + b.tcp
	ws := "ws://" + b.ws + "/mqtt"

	pahoClient(t, b, "v5-1", nil)
	v3Connect(t, tcp, "v311-2")
	pahoClient(t, b, "v5-3", nil)

	// The TCP listener is full.
	if code := v5Refused(t, b.tcp, "v5-4"); code != 0x97 {
		t.Errorf("4th TCP connection (v5): CONNACK 0x%02X, want 0x97", code)
	}
	if code := v3Refused(t, tcp, "v311-4"); code != 0x03 {
		t.Errorf("4th TCP connection (3.1.1): CONNACK 0x%02X, want 0x03", code)
	}
	// The WebSocket listener has room for one more, then the node is full.
	v3Connect(t, ws, "v311-ws-4")
	if code := v3Refused(t, ws, "v311-ws-5"); code != 0x03 {
		t.Errorf("5th connection (3.1.1 over WebSocket): CONNACK 0x%02X, want 0x03", code)
	}
	if got := b.metric(`mqttd_limit_refusals_total{limit="connections_per_listener"}`); got != 2 {
		t.Errorf("connections_per_listener refusals = %v, want 2", got)
	}
	if got := b.metric(`mqttd_limit_refusals_total{limit="connections"}`); got != 1 {
		t.Errorf("connections refusals = %v, want 1", got)
	}
	if got := b.metric("mqttd_clients_connected"); got != 4 {
		t.Errorf("%v clients connected, want 4", got)
	}
}

// v5Refused connects a paho v5 client that must be refused and returns the CONNACK
// reason code; it checks that the broker closed the connection.
func v5Refused(t testing.TB, addr, id string) byte {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	c := paho.NewClient(paho.ClientConfig{Conn: conn})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ack, err := c.Connect(ctx, &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30})
	if err == nil || ack == nil {
		t.Fatalf("%s: connect succeeded or failed without CONNACK (%v)", id, err)
	}
	if ack.Properties == nil || !strings.Contains(ack.Properties.ReasonString, "limit") {
		t.Errorf("%s: CONNACK without a reason string naming the limit: %+v", id, ack.Properties)
	}
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Read(make([]byte, 1)); err == nil {
		t.Errorf("%s: the broker sent more after the refusal", id)
	} else if ne := net.Error(nil); errors.As(err, &ne) && ne.Timeout() {
		t.Errorf("%s: the connection is still open 5s after the refusal", id)
	}
	return ack.ReasonCode
}

func v3Options(url, id string) *mqtt.ClientOptions {
	return mqtt.NewClientOptions().AddBroker(url).SetClientID(id).SetProtocolVersion(4).
		SetCleanSession(true).SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(5 * time.Second)
}

// v3Connect connects a paho.mqtt.golang 3.1.1 client; it disconnects when the test ends.
func v3Connect(t testing.TB, url, id string) {
	t.Helper()
	c := mqtt.NewClient(v3Options(url, id))
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("connect %s to %s: %v", id, url, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(100) })
}

// v3Refused connects a 3.1.1 client that must be refused and returns the CONNACK
// return code.
func v3Refused(t testing.TB, url, id string) byte {
	t.Helper()
	c := mqtt.NewClient(v3Options(url, id))
	tok := c.Connect()
	if !tok.WaitTimeout(5 * time.Second) {
		t.Fatalf("connect %s: no answer within 5s", id)
	}
	if tok.Error() == nil {
		c.Disconnect(100)
		t.Fatalf("connect %s to %s succeeded", id, url)
	}
	ct, ok := tok.(*mqtt.ConnectToken)
	if !ok {
		t.Fatalf("connect returned a %T", tok)
	}
	return ct.ReturnCode()
}
