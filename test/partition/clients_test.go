package partition

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

const (
	// mqttTimeout bounds one MQTT exchange (connect, subscribe, an unhindered publish).
	mqttTimeout = 10 * time.Second
	// publishTimeout bounds one publish of a stream: while a cut is not noticed yet,
	// its acknowledgement waits for the cut-off node (up to the heartbeat timeout).
	publishTimeout = 20 * time.Second
	// sessionExpiry is the session expiry interval of persistent clients, seconds.
	sessionExpiry = 300
	// probePrefix starts the payload of probe messages, which tests publish until one
	// arrives to learn that a subscription has reached another node. Not counted.
	probePrefix = "probe:"
)

// message is one PUBLISH a client received.
type message struct {
	topic, payload string
	retain         bool
}

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

func (r *recorder) all() []message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.msgs)
}

func (r *recorder) hasPayload(payload string) bool {
	return slices.ContainsFunc(r.all(), func(m message) bool { return m.payload == payload })
}

// v5Options are the CONNECT settings of a client.
type v5Options struct {
	cleanStart bool
	expiry     uint32    // session expiry interval, seconds; 0: the session ends with the connection
	rec        *recorder // where received messages go; nil: a new one
}

// persistent are the CONNECT options of a persistent client: its session is resumed
// if there is one and outlives the connection.
func persistent(rec *recorder) v5Options { return v5Options{expiry: sessionExpiry, rec: rec} }

// v5Client is a connected MQTT 5 client (eclipse/paho.golang).
type v5Client struct {
	*paho.Client
	id      string
	node    string // the name of the node it is connected to
	connack *paho.Connack
	rec     *recorder
	// serverDisconnect receives the DISCONNECT the server sent, if any.
	serverDisconnect chan *paho.Disconnect
}

// dialV5 connects a client to n within timeout. It does not touch a testing.T, so
// goroutines may use it; the caller disconnects the client.
func dialV5(n *node, id string, o v5Options, timeout time.Duration) (*v5Client, error) {
	if o.rec == nil {
		o.rec = &recorder{}
	}
	conn, err := net.DialTimeout("tcp", n.mqttAddress(), timeout)
	if err != nil {
		return nil, err
	}
	c := &v5Client{id: id, node: n.name(), rec: o.rec, serverDisconnect: make(chan *paho.Disconnect, 1)}
	c.Client = paho.NewClient(paho.ClientConfig{
		Conn:          conn,
		PacketTimeout: publishTimeout,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			p := pr.Packet
			o.rec.add(message{topic: p.Topic, payload: string(p.Payload), retain: p.Retain})
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
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	ack, err := c.Connect(ctx, cp)
	if err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("connect %s to %s: %w", id, n.name(), err)
	}
	c.connack = ack
	return c, nil
}

// connectV5 connects a client to n or fails the test; it disconnects when the test ends.
func connectV5(t testing.TB, n *node, id string, o v5Options) *v5Client {
	t.Helper()
	c, err := dialV5(n, id, o, mqttTimeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.close)
	return c
}

// subscriber connects a client to n and subscribes it to topic at QoS 1.
func subscriber(t testing.TB, n *node, id, topic string, o v5Options) *v5Client {
	t.Helper()
	c := connectV5(t, n, id, o)
	c.subscribeQoS(t, topic, 1)
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

// subscribeQoS subscribes to filter at qos and fails the test unless it is granted.
func (c *v5Client) subscribeQoS(t testing.TB, filter string, qos byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), mqttTimeout)
	defer cancel()
	ack, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: qos}}})
	if err != nil {
		t.Fatalf("%s: subscribe %s on %s: %v", c.id, filter, c.node, err)
	}
	if len(ack.Reasons) != 1 || ack.Reasons[0] != qos {
		t.Fatalf("%s: subscribe %s on %s: reasons %v, want QoS %d", c.id, filter, c.node, ack.Reasons, qos)
	}
}

func contextWithTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}

// publishQoS1 publishes at QoS 1 and returns the PUBACK's reason code (a refusal,
// 0x80 and above, is a code, not an error).
func (c *v5Client) publishQoS1(topic string, retain bool, payload []byte, timeout time.Duration) (byte, error) {
	return c.publishQoS(topic, 1, retain, payload, timeout)
}

// publishQoS publishes at qos (1 or 2) and returns the PUBACK's or PUBREC's reason code.
func (c *v5Client) publishQoS(topic string, qos byte, retain bool, payload []byte, timeout time.Duration) (byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	resp, err := c.Publish(ctx, &paho.Publish{Topic: topic, QoS: qos, Retain: retain, Payload: payload})
	if resp != nil && resp.ReasonCode >= 0x80 {
		return resp.ReasonCode, nil // paho reports a refusal as an error too
	}
	if err != nil {
		return 0, fmt.Errorf("%s: publish to %s on %s: %w", c.id, topic, c.node, err)
	}
	return resp.ReasonCode, nil
}

// awaitRoute publishes a probe to topic from pub at every poll until every recorder
// has received it: the subscriptions have then reached pub's node (routes replicate
// asynchronously).
func awaitRoute(t testing.TB, pub *v5Client, topic string, recs ...*recorder) {
	t.Helper()
	payload := probePrefix + pub.id + "/" + topic
	eventually(t, clusterTimeout, fmt.Sprintf("routes of %s to %s", topic, pub.node), func() error {
		waiting := 0
		for _, r := range recs {
			if !r.hasPayload(payload) {
				waiting++
			}
		}
		if waiting == 0 {
			return nil
		}
		if _, err := pub.publishQoS1(topic, false, []byte(payload), mqttTimeout); err != nil {
			return err
		}
		return fmt.Errorf("%d of %d subscribers have not received the probe", waiting, len(recs))
	})
}

// stream publishes numbered QoS 1 (or 2) messages (0, 1, 2, ...) of size bytes to one
// topic, one per tick, each after the previous one was acknowledged, until stopped or
// a publish fails. A message counts as acknowledged when its PUBACK (QoS 2: its
// PUBREC, then PUBCOMP) says success (0x00).
type stream struct {
	topic     string
	qos       byte
	acked     atomic.Int64  // messages acknowledged so far
	slowest   atomic.Int64  // the longest wait for a PUBACK, nanoseconds
	stopping  chan struct{} // closed by stop
	exited    chan struct{} // closed when the publisher returns
	err       error         // the failed publish, if any; read after exited is closed
	startedAt time.Time
	elapsed   time.Duration // from start to stop
}

// payload is message seq of a stream: its number, then padding up to size bytes.
func payload(seq, size int) []byte {
	p := []byte(fmt.Sprintf("%08d|", seq))
	for len(p) < size {
		p = append(p, 'x')
	}
	return p
}

// seqOf reads the number of a stream's message (false for anything else, probes).
func seqOf(payload string) (int, bool) {
	head, _, ok := strings.Cut(payload, "|")
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(head)
	return n, err == nil
}

// startStream publishes size-byte messages from pub to topic at most once per
// streamTick (100 messages/s).
func startStream(pub *v5Client, topic string, size int) *stream {
	return startStreamQoS(pub, topic, 1, size)
}

// startStreamQoS is startStream at qos.
func startStreamQoS(pub *v5Client, topic string, qos byte, size int) *stream {
	s := &stream{topic: topic, qos: qos, stopping: make(chan struct{}), exited: make(chan struct{}), startedAt: time.Now()}
	go func() {
		defer close(s.exited)
		tick := time.NewTicker(streamTick)
		defer tick.Stop()
		for seq := 0; ; seq++ {
			select {
			case <-s.stopping:
				return
			case <-tick.C:
			}
			start := time.Now()
			code, err := pub.publishQoS(topic, qos, false, payload(seq, size), publishTimeout)
			if err == nil && code != 0 {
				err = fmt.Errorf("%s: publish %d to %s on %s: PUBACK reason 0x%02X", pub.id, seq, topic, pub.node, code)
			}
			if err != nil {
				s.err = fmt.Errorf("after %d acknowledged messages: %w", seq, err)
				return
			}
			if d := int64(time.Since(start)); d > s.slowest.Load() {
				s.slowest.Store(d)
			}
			s.acked.Add(1)
		}
	}()
	return s
}

// failed returns the error the publisher stopped with, or nil while it runs.
func (s *stream) failed() error {
	select {
	case <-s.exited:
		return s.err
	default:
		return nil
	}
}

// stop ends the stream, fails the test if a publish failed, and returns how many
// messages were acknowledged.
func (s *stream) stop(t *testing.T) int {
	t.Helper()
	select {
	case <-s.stopping:
	default:
		close(s.stopping)
	}
	<-s.exited
	s.elapsed = time.Since(s.startedAt)
	if s.err != nil {
		t.Fatal(s.err)
	}
	return int(s.acked.Load())
}

// report describes the stream's throughput for the test log.
func (s *stream) report() string {
	n := s.acked.Load()
	return fmt.Sprintf("%d messages acknowledged in %v (%.0f/s), slowest PUBACK %v",
		n, s.elapsed.Round(time.Millisecond), float64(n)/s.elapsed.Seconds(), time.Duration(s.slowest.Load()).Round(time.Millisecond))
}

// waitAcked waits until at least n messages of the stream were acknowledged.
func waitAcked(t *testing.T, s *stream, n int64) {
	t.Helper()
	eventually(t, clusterTimeout, fmt.Sprintf("%d messages acknowledged", n), func() error {
		if err := s.failed(); err != nil {
			t.Fatal(err)
		}
		if got := s.acked.Load(); got < n {
			return fmt.Errorf("%d acknowledged", got)
		}
		return nil
	})
}

// hold lets the streams run for d (a partition's fixed length), failing the test as
// soon as one of them fails.
func hold(t *testing.T, d time.Duration, streams ...*stream) {
	t.Helper()
	end := time.NewTimer(d)
	defer end.Stop()
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		select {
		case <-end.C:
			return
		case <-tick.C:
			for _, s := range streams {
				if err := s.failed(); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
}

// accounting is what a subscriber received of a stream of total acknowledged messages.
type accounting struct {
	missing    []int // acknowledged, never received
	unexpected []int // received, never acknowledged
	duplicates int   // copies beyond the first
	disorder   int   // first copies that arrived after a higher number
	firstOut   string
}

func account(rec *recorder, topic string, total int) accounting {
	var a accounting
	seen := map[int]bool{}
	highest := -1
	for _, m := range rec.all() {
		seq, ok := seqOf(m.payload)
		if !ok || m.topic != topic {
			continue
		}
		if seen[seq] {
			a.duplicates++
			continue
		}
		seen[seq] = true
		if seq >= total {
			a.unexpected = append(a.unexpected, seq)
		}
		if seq < highest {
			a.disorder++
			if a.firstOut == "" {
				a.firstOut = fmt.Sprintf("%d after %d", seq, highest)
			}
		}
		highest = max(highest, seq)
	}
	for seq := range total {
		if !seen[seq] {
			a.missing = append(a.missing, seq)
		}
	}
	return a
}

// expectAll waits until sub has received every one of the total acknowledged messages
// of s, and checks that each arrived (first) in order and nothing unacknowledged came.
func expectAll(t *testing.T, sub *v5Client, s *stream, total int) {
	t.Helper()
	deadline := time.Now().Add(clusterTimeout)
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	var a accounting
	for {
		a = account(sub.rec, s.topic, total)
		if len(a.missing) == 0 || time.Now().After(deadline) {
			break
		}
		<-tick.C
	}
	if len(a.missing) > 0 {
		t.Errorf("%s (on %s, connected=%v): %d of %d acknowledged messages never arrived within %v: %s",
			sub.id, sub.node, sub.alive(), len(a.missing), total, clusterTimeout, ranges(a.missing))
	}
	if a.disorder > 0 {
		t.Errorf("%s (on %s): %d messages out of order, first %s", sub.id, sub.node, a.disorder, a.firstOut)
	}
	if len(a.unexpected) > 0 {
		t.Errorf("%s (on %s): received %d messages never acknowledged: %s", sub.id, sub.node, len(a.unexpected), ranges(a.unexpected))
	}
	if s.qos == 2 && a.duplicates > 0 {
		t.Errorf("%s (on %s): %d QoS 2 messages delivered more than once", sub.id, sub.node, a.duplicates)
	}
	t.Logf("%s on %s: %d/%d received, %d duplicates", sub.id, sub.node, total-len(a.missing), total, a.duplicates)
}

// ranges writes sorted numbers as ranges: "3-7, 9".
func ranges(nums []int) string {
	nums = slices.Sorted(slices.Values(nums))
	var parts []string
	for i := 0; i < len(nums); {
		j := i
		for j+1 < len(nums) && nums[j+1] == nums[j]+1 {
			j++
		}
		if i == j {
			parts = append(parts, strconv.Itoa(nums[i]))
		} else {
			parts = append(parts, fmt.Sprintf("%d-%d", nums[i], nums[j]))
		}
		i = j + 1
	}
	return strings.Join(parts, ", ")
}
