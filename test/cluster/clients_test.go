package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// mqttTimeout bounds one MQTT exchange (connect, subscribe, publish acknowledgement).
const mqttTimeout = 10 * time.Second

// probePrefix starts the payload of probe messages, which tests publish until one
// arrives to learn that a subscription has reached another node. They are not counted.
const probePrefix = "probe:"

// noMatchingSubscribers is the PUBACK/PUBREC reason code of a message no one receives.
const noMatchingSubscribers = 0x10

// errNoMatchingSubscribers: the broker accepted a message but routes it to no one.
var errNoMatchingSubscribers = errors.New("no matching subscribers (0x10)")

// message is one PUBLISH a client received.
type message struct {
	topic, payload string
	qos            byte
	retain         bool
	dup            bool // the server resent it (DUP set): the connection it was first sent on ended
}

func (m message) probe() bool { return strings.HasPrefix(m.payload, probePrefix) }

// recorder keeps the messages a client receives, in arrival order. A persistent
// client keeps one recorder across its connections.
type recorder struct {
	mu   sync.Mutex
	msgs []message
}

func (r *recorder) add(m message) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, m)
}

// all returns a copy of what was received so far.
func (r *recorder) all() []message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]message(nil), r.msgs...)
}

// data returns the received messages that are not probes.
func (r *recorder) data() []message {
	var out []message
	for _, m := range r.all() {
		if !m.probe() {
			out = append(out, m)
		}
	}
	return out
}

func (r *recorder) hasPayload(payload string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, m := range r.msgs {
		if m.payload == payload {
			return true
		}
	}
	return false
}

// v5Options are the CONNECT settings of a paho.golang client.
type v5Options struct {
	cleanStart bool
	expiry     uint32    // session expiry interval in seconds; 0: the session ends with the connection
	rec        *recorder // where received messages go; nil: a new one
	user       string    // username and password; empty: anonymous
	password   string
}

// v5Client is a connected MQTT v5 client (eclipse/paho.golang).
type v5Client struct {
	*paho.Client
	id      string
	connack *paho.Connack
	rec     *recorder
	// serverDisconnect receives the DISCONNECT the server sent, if any.
	serverDisconnect chan *paho.Disconnect
}

// dialV5 connects a v5 client to addr. It does not touch a testing.T, so goroutines
// may use it; the caller disconnects the client.
func dialV5(addr, id string, o v5Options) (*v5Client, error) {
	if o.rec == nil {
		o.rec = &recorder{}
	}
	conn, err := net.DialTimeout("tcp", addr, mqttTimeout)
	if err != nil {
		return nil, err
	}
	c := &v5Client{id: id, rec: o.rec, serverDisconnect: make(chan *paho.Disconnect, 1)}
	c.Client = paho.NewClient(paho.ClientConfig{
		Conn:          conn,
		PacketTimeout: mqttTimeout,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			p := pr.Packet
			o.rec.add(message{topic: p.Topic, payload: string(p.Payload), qos: p.QoS, retain: p.Retain, dup: p.Duplicate()})
			return true, nil
		}},
		OnServerDisconnect: func(d *paho.Disconnect) {
			select {
			case c.serverDisconnect <- d:
			default:
			}
		},
		OnClientError: func(error) {}, // the connection ends; Done() tells the tests
	})
	cp := &paho.Connect{ClientID: id, CleanStart: o.cleanStart, KeepAlive: 30}
	if o.expiry > 0 {
		cp.Properties = &paho.ConnectProperties{SessionExpiryInterval: &o.expiry}
	}
	if o.user != "" {
		cp.UsernameFlag, cp.Username, cp.PasswordFlag, cp.Password = true, o.user, true, []byte(o.password)
	}
	ctx, cancel := context.WithTimeout(context.Background(), mqttTimeout)
	defer cancel()
	ack, err := c.Connect(ctx, cp)
	if err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("connect %s to %s: %w", id, addr, err)
	}
	c.connack = ack
	return c, nil
}

// connectV5 connects a v5 client to n or fails the test; it disconnects when the test
// ends.
func connectV5(t testing.TB, n *node, id string, o v5Options) *v5Client {
	t.Helper()
	c, err := dialV5(n.mqttAddress(), id, o)
	if err != nil {
		t.Fatalf("%s: %v", n.name(), err)
	}
	t.Cleanup(c.close)
	return c
}

// close disconnects normally (a persistent session stays).
func (c *v5Client) close() {
	if c.alive() {
		_ = c.Disconnect(&paho.Disconnect{ReasonCode: 0})
	}
}

// alive reports whether the connection is still up.
func (c *v5Client) alive() bool {
	select {
	case <-c.Done():
		return false
	default:
		return true
	}
}

// trySubscribe subscribes to filters with qos and fails unless all are granted.
func (c *v5Client) trySubscribe(qos byte, filters ...string) error {
	s := &paho.Subscribe{}
	for _, f := range filters {
		s.Subscriptions = append(s.Subscriptions, paho.SubscribeOptions{Topic: f, QoS: qos})
	}
	ctx, cancel := context.WithTimeout(context.Background(), mqttTimeout)
	defer cancel()
	ack, err := c.Subscribe(ctx, s)
	if err != nil {
		return fmt.Errorf("%s: subscribe %v: %w", c.id, filters, err)
	}
	for i, code := range ack.Reasons {
		if code != qos {
			return fmt.Errorf("%s: subscribe %s: reason 0x%02X, want QoS %d", c.id, filters[i], code, qos)
		}
	}
	return nil
}

// subscribe is trySubscribe that fails the test.
func (c *v5Client) subscribe(t testing.TB, qos byte, filters ...string) {
	t.Helper()
	if err := c.trySubscribe(qos, filters...); err != nil {
		t.Fatal(err)
	}
}

// tryPublish publishes and waits for the flow of its QoS to complete.
func (c *v5Client) tryPublish(topic string, qos byte, retain bool, payload string) error {
	ctx, cancel := context.WithTimeout(context.Background(), mqttTimeout)
	defer cancel()
	resp, err := c.Publish(ctx, &paho.Publish{Topic: topic, QoS: qos, Retain: retain, Payload: []byte(payload)})
	if err != nil {
		return fmt.Errorf("%s: publish %q to %s: %w", c.id, payload, topic, err)
	}
	if resp != nil && resp.ReasonCode >= 0x80 {
		return fmt.Errorf("%s: publish %q to %s: reason 0x%02X", c.id, payload, topic, resp.ReasonCode)
	}
	// The tests publish data only once the subscribers' routes reached this node; a
	// broker without a route for it says so. Probes are sent before routes exist, and
	// retained messages may have no subscriber yet.
	if resp != nil && resp.ReasonCode == noMatchingSubscribers && !retain && !strings.HasPrefix(payload, probePrefix) {
		return fmt.Errorf("%s: publish %q to %s: %w", c.id, payload, topic, errNoMatchingSubscribers)
	}
	return nil
}

// publish publishes at QoS 1 and fails the test unless the message is acknowledged.
func (c *v5Client) publish(t testing.TB, topic string, retain bool, payload string) {
	t.Helper()
	if err := c.tryPublish(topic, 1, retain, payload); err != nil {
		t.Fatal(err)
	}
}

// awaitRoute publishes a probe to topic from pub at every poll until rec has received
// it: the subscription that delivers topic to rec has then reached pub's node (routes
// replicate asynchronously).
func awaitRoute(t testing.TB, pub *v5Client, topic string, rec *recorder) {
	t.Helper()
	payload := probePrefix + pub.id + "/" + topic
	eventually(t, clusterTimeout, fmt.Sprintf("route of %s to %s", topic, pub.id), func() error {
		if rec.hasPayload(payload) {
			return nil
		}
		if err := pub.tryPublish(topic, 1, false, payload); err != nil {
			return err
		}
		return fmt.Errorf("probe not received")
	})
}

// v3Client is a connected MQTT 3.1.1 client (eclipse/paho.mqtt.golang).
type v3Client struct {
	mqtt.Client
	id             string
	rec            *recorder
	sessionPresent bool
	lost           chan error // the connection ended without Disconnect
}

// dialV3 connects a v3.1.1 client to addr without reconnecting on its own. It does
// not touch a testing.T; the caller disconnects it.
func dialV3(addr, id string, clean bool, rec *recorder) (*v3Client, error) {
	if rec == nil {
		rec = &recorder{}
	}
	c := &v3Client{id: id, rec: rec, lost: make(chan error, 1)}
	opts := mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).SetCleanSession(clean).
		SetProtocolVersion(4).SetAutoReconnect(false).SetConnectRetry(false).
		SetConnectTimeout(mqttTimeout).SetKeepAlive(30 * time.Second).SetOrderMatters(true).
		SetDefaultPublishHandler(func(_ mqtt.Client, m mqtt.Message) {
			rec.add(message{topic: m.Topic(), payload: string(m.Payload()), qos: m.Qos(), retain: m.Retained()})
		}).
		SetConnectionLostHandler(func(_ mqtt.Client, err error) {
			select {
			case c.lost <- err:
			default:
			}
		})
	c.Client = mqtt.NewClient(opts)
	tok := c.Connect()
	if err := awaitToken(tok); err != nil {
		return nil, fmt.Errorf("connect %s to %s: %w", id, addr, err)
	}
	if ct, ok := tok.(*mqtt.ConnectToken); ok {
		c.sessionPresent = ct.SessionPresent()
	}
	return c, nil
}

// subscribe subscribes to filter with qos (all messages go to the recorder).
func (c *v3Client) subscribe(filter string, qos byte) error {
	tok := c.Subscribe(filter, qos, nil)
	if err := awaitToken(tok); err != nil {
		return fmt.Errorf("%s: subscribe %s: %w", c.id, filter, err)
	}
	if st, ok := tok.(*mqtt.SubscribeToken); ok {
		for f, granted := range st.Result() {
			if granted != qos {
				return fmt.Errorf("%s: subscribe %s: granted 0x%02X", c.id, f, granted)
			}
		}
	}
	return nil
}

func (c *v3Client) close() {
	if c.IsConnectionOpen() {
		c.Disconnect(100)
	}
}

func awaitToken(tok mqtt.Token) error {
	if !tok.WaitTimeout(mqttTimeout) {
		return fmt.Errorf("no answer within %v", mqttTimeout)
	}
	return tok.Error()
}
