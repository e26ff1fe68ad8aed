package server_test

import (
	"bytes"
	"context"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// Authentication and ACL with a real MQTT 3.1.1 client (paho.mqtt.golang) over TCP
// and WebSocket, and with Debian's mosquitto_pub/mosquitto_sub for 3.1, 3.1.1 and 5.

// v3TryConnect connects and returns the client, or nil and the CONNACK return code.
func v3TryConnect(t testing.TB, url, id, user, password string, configure func(*mqtt.ClientOptions)) (*v3Client, byte) {
	t.Helper()
	c := &v3Client{t: t, id: id, msgs: make(chan mqtt.Message, 4096), lost: make(chan error, 1)}
	opts := mqtt.NewClientOptions().AddBroker(url).SetClientID(id).SetCleanSession(true).
		SetProtocolVersion(4).SetAutoReconnect(false).SetConnectRetry(false).
		SetConnectTimeout(v3Wait).SetKeepAlive(30 * time.Second).SetOrderMatters(true).
		SetDefaultPublishHandler(func(_ mqtt.Client, m mqtt.Message) { c.msgs <- m })
	if user != "" {
		opts.SetUsername(user).SetPassword(password)
	}
	if configure != nil {
		configure(opts)
	}
	c.Client = mqtt.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(v3Wait) {
		t.Fatalf("connect %s: no answer", id)
	}
	ct, ok := tok.(*mqtt.ConnectToken)
	if !ok {
		t.Fatalf("connect returned a %T", tok)
	}
	if tok.Error() != nil {
		return nil, ct.ReturnCode()
	}
	t.Cleanup(func() {
		if c.IsConnectionOpen() {
			c.Disconnect(50)
		}
	})
	return c, ct.ReturnCode()
}

func v3Login(t testing.TB, url, id, user string) *v3Client {
	t.Helper()
	c, code := v3TryConnect(t, url, id, user, testPasswords[user], nil)
	if c == nil {
		t.Fatalf("%s (%s) refused: CONNACK 0x%02X", id, user, code)
	}
	return c
}

// subCodes subscribes to filters at QoS 1 and returns the SUBACK return codes.
func (c *v3Client) subCodes(filters ...string) []byte {
	c.t.Helper()
	req := map[string]byte{}
	for _, f := range filters {
		req[f] = 1
	}
	tok := c.SubscribeMultiple(req, nil)
	if !tok.WaitTimeout(v3Wait) {
		c.t.Fatalf("%s: no SUBACK", c.id)
	}
	st, ok := tok.(*mqtt.SubscribeToken)
	if !ok {
		c.t.Fatalf("subscribe returned a %T", tok)
	}
	res := st.Result()
	out := make([]byte, len(filters))
	for i, f := range filters {
		code, ok := res[f] // SubscribeMultiple keys results by the filter as sent
		if !ok {
			c.t.Fatalf("%s: no SUBACK code for %q in %v", c.id, f, res)
		}
		out[i] = code
	}
	return out
}

func TestAuthV311(t *testing.T) {
	b, a, _ := startAuthBroker(t, false, 0)
	for name, url := range v3Transports(b) {
		t.Run(name, func(t *testing.T) {
			for _, tc := range []struct {
				name, user, password string
				configure            func(*mqtt.ClientOptions)
				want                 byte
			}{
				{"good credentials", "alice", "alice-pw", nil, 0x00},
				{"wrong password", "alice", "bob-pw", nil, 0x04},
				{"unknown user", "mallory", "x", nil, 0x04},
				{"anonymous refused", "", "", nil, 0x05},
				{"will refused", "alice", "alice-pw", func(o *mqtt.ClientOptions) { o.SetWill("bob/x", "gone", 1, false) }, 0x05},
			} {
				t.Run(tc.name, func(t *testing.T) {
					if _, code := v3TryConnect(t, url, "c-"+name, tc.user, tc.password, tc.configure); code != tc.want {
						t.Fatalf("CONNACK 0x%02X, want 0x%02X", code, tc.want)
					}
				})
			}

			alice := v3Login(t, url, "alice-"+name, "alice")
			bob := v3Login(t, url, "bob-"+name, "bob")
			if got := alice.subCodes("alice/#", "bob/#", "$share/g/shared/"+name, "$SYS/broker/version"); string(got) != string([]byte{1, 0x80, 1, 1}) {
				t.Fatalf("alice's SUBACK = % x, want 01 80 01 01", got)
			}
			if got := bob.subCodes("alice/#", "$SYS/#", "$share/g/shared/"+name, "#"); string(got) != string([]byte{0x80, 0x80, 0x80, 0x80}) {
				t.Fatalf("bob's SUBACK = % x, want 80 80 80 80", got)
			}
			before := a.Stats().Denied["publish"]
			// A refused QoS 1 publish is acknowledged (3.1.1 cannot refuse) and dropped.
			bob.pub("alice/other", 1, false, "dropped")
			bob.pub("alice/other", 2, false, "dropped2")
			bob.pub("alice/other", 1, true, "dropped-retained")
			bob.pub("alice/inbox", 1, false, "hi")
			bob.pub("shared/"+name, 1, false, "to-group")
			alice.pub("alice/zz", 1, false, "sentinel")
			var got []string
			for _, m := range alice.until("alice/zz") {
				if !strings.HasPrefix(m.Topic(), "$SYS/") {
					got = append(got, m.Topic()+"="+string(m.Payload()))
				}
			}
			if len(got) != 2 || got[0] != "alice/inbox=hi" || got[1] != "shared/"+name+"=to-group" {
				t.Fatalf("alice received %v, want alice/inbox=hi and the shared message", got)
			}
			if d := a.Stats().Denied["publish"] - before; d != 3 {
				t.Fatalf("denied publishes counted %d, want 3", d)
			}
			later := v3Login(t, url, "alice-later-"+name, "alice")
			later.sub("alice/#", 1)
			later.pub("alice/zz", 1, false, "sentinel")
			if got := later.until("alice/zz"); len(got) != 0 {
				t.Fatalf("a refused retained publish was stored: %v", got)
			}
		})
	}
}

// TestAuthV311ClientIDOwnership: bob cannot take over alice's client ID.
func TestAuthV311ClientIDOwnership(t *testing.T) {
	b, _, _ := startAuthBroker(t, false, 0)
	url := "tcp://" + b.TCPAddr
	alice := v3Login(t, url, "shared-id", "alice")
	if _, code := v3TryConnect(t, url, "shared-id", "bob", "bob-pw", nil); code != 0x05 {
		t.Fatalf("takeover by bob: CONNACK 0x%02X, want 0x05", code)
	}
	if !alice.IsConnectionOpen() {
		t.Fatal("alice lost her connection to a refused takeover")
	}
	alice.pub("alice/x", 1, false, "still here")
}

// TestAuthMosquittoClients: mosquitto_pub/mosquitto_sub with -u/-P, for each protocol
// version: good credentials work, a wrong password and no credentials are refused
// with the version's reason, a refused subscription is reported.
func TestAuthMosquittoClients(t *testing.T) {
	subBin, pubBin := mosquittoTools(t)
	b, _, _ := startAuthBroker(t, false, 0)
	host, port, err := net.SplitHostPort(b.TCPAddr)
	if err != nil {
		t.Fatal(err)
	}
	refusals := map[string][2]string{ // version -> bad password, anonymous
		"mqttv31":  {"bad user name or password", "not authoris" + "ed"}, // mosquitto's British spelling
		"mqttv311": {"bad user name or password", "not authoris" + "ed"},
		"mqttv5":   {"bad user name or password", "not authorized"},
	}
	for _, version := range mosquittoVersions {
		t.Run(version, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			common := []string{"-h", host, "-p", port, "-V", version}
			topic := "alice/" + version
			subCmd := exec.CommandContext(ctx, subBin, append(common, "-u", "alice", "-P", "alice-pw",
				"-i", "msub-"+version, "-t", topic, "-q", "1", "-C", "1", "-W", "20")...)
			var out bytes.Buffer
			subCmd.Stdout = &out
			if err := subCmd.Start(); err != nil {
				t.Fatal(err)
			}
			eventually(t, 10*time.Second, "mosquitto_sub connected and subscribed", func() bool {
				return b.Stats().Subscriptions >= 1
			})
			// bob may not publish there: dropped, so the subscriber's one message is alice's.
			mosquittoRun(ctx, t, pubBin, append(common, "-u", "bob", "-P", "bob-pw", "-t", topic, "-q", "1", "-m", "refused")...)
			mosquittoRun(ctx, t, pubBin, append(common, "-u", "alice", "-P", "alice-pw", "-t", topic, "-q", "1", "-m", "hello")...)
			if err := subCmd.Wait(); err != nil {
				t.Fatalf("mosquitto_sub: %v", err)
			}
			if got := strings.TrimSpace(out.String()); got != "hello" {
				t.Fatalf("mosquitto_sub printed %q, want hello", got)
			}
			for i, args := range [][]string{{"-u", "alice", "-P", "wrong"}, {}} {
				cmd := exec.CommandContext(ctx, pubBin, append(append(common, args...), "-t", "public/x", "-m", "x")...)
				msg, err := cmd.CombinedOutput()
				if err == nil {
					t.Fatalf("mosquitto_pub %v was not refused", args)
				}
				if want := refusals[version][i]; !strings.Contains(strings.ToLower(string(msg)), want) {
					t.Fatalf("mosquitto_pub %v: %q, want it to say %q", args, msg, want)
				}
			}
			// A refused subscription: mosquitto_sub reports the broker's refusal and exits.
			cmd := exec.CommandContext(ctx, subBin, append(common, "-u", "bob", "-P", "bob-pw", "-t", "alice/#", "-C", "1", "-W", "10")...)
			msg, _ := cmd.CombinedOutput() // mosquitto_sub exits 0 after reporting it
			if !strings.Contains(string(msg), "All subscription requests were denied") {
				t.Fatalf("refused subscription: mosquitto_sub printed %q, want its 'denied' report", msg)
			}
		})
	}
}
