package server_test

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"golang.org/x/crypto/bcrypt"

	"github.com/mqtt-operator/mqtt-operator/broker/auth"
	"github.com/mqtt-operator/mqtt-operator/broker/server"
)

// authACL is the ACL of the auth tests: alice owns alice/#, bob may write to her inbox
// and to shared/# and owns bob/#, alice reads shared/# (also through shared
// subscriptions) and $SYS,
// everyone uses public/#, and everything else is refused.
const authACL = `
default: deny
rules:
  - {username: alice, topic: "alice/#", access: all, action: allow}
  - {username: alice, topic: "shared/#", access: subscribe, action: allow}
  - {username: alice, topic: "$SYS/#", access: subscribe, action: allow}
  - {username: bob, topic: "alice/inbox", access: publish, action: allow}
  - {username: bob, topic: "bob/#", access: all, action: allow}
  - {username: bob, topic: "shared/#", access: publish, action: allow}
  - {username: "*", topic: "public/#", access: all, action: allow}
  - {username: "$anonymous", topic: "anon/#", access: all, action: allow}
`

// authFiles are the users and ACL files of an auth test broker; rewriting them (with
// write) changes the rules on the next reload.
type authFiles struct {
	dir, users, acl string
}

// testPasswords are the users of the auth tests.
var testPasswords = map[string]string{"alice": "alice-pw", "bob": "bob-pw"}

// usersFile renders a users file (bcrypt at the lowest cost: the tests check
// behavior, not hashing speed).
func usersFile(t testing.TB, passwords map[string]string) string {
	t.Helper()
	names := make([]string, 0, len(passwords))
	for n := range passwords {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, n := range names {
		line, err := auth.HashLine(n, []byte(passwords[n]), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		b.WriteString(line + "\n")
	}
	return b.String()
}

// write replaces a file in one step (write aside, rename), as kubelet swaps a
// mounted Secret.
func (f authFiles) write(t testing.TB, path, body string) {
	t.Helper()
	tmp := path + ".new"
	if err := os.WriteFile(tmp, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// startAuthBroker starts a broker that authenticates against testPasswords and applies
// authACL, polling its files every reload (0: no polling; call Reload).
func startAuthBroker(t testing.TB, anonymous bool, reload time.Duration) (*broker, *auth.Authenticator, authFiles) {
	t.Helper()
	dir := t.TempDir()
	f := authFiles{dir: dir, users: filepath.Join(dir, "users"), acl: filepath.Join(dir, "acl.yaml")}
	f.write(t, f.users, usersFile(t, testPasswords))
	f.write(t, f.acl, authACL)
	w := io.Discard
	if os.Getenv("MQTTD_TEST_LOG") != "" {
		w = os.Stderr
	}
	log := slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
	interval := reload
	if interval == 0 {
		interval = time.Hour
	}
	a, err := auth.New(auth.Config{AllowAnonymous: anonymous, UsersFile: f.users, ACLFile: f.acl,
		ClientIDOwnership: true, ReloadInterval: interval, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	if reload > 0 {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { a.Run(ctx); close(done) }()
		t.Cleanup(func() { cancel(); <-done })
	}
	b := startBroker(t, server.Options{Auth: a, Logger: log, SysInterval: 50 * time.Millisecond})
	return b, a, f
}

// v5Connect connects with paho.golang and returns the client, or nil and the CONNACK
// reason code when the broker refused.
func v5Connect(t testing.TB, tr transport, b *broker, cp *paho.Connect) (*v5Client, byte) {
	t.Helper()
	c := &v5Client{msgs: make(chan *paho.Publish, 1024), serverDisconnect: make(chan *paho.Disconnect, 1)}
	c.Client = paho.NewClient(paho.ClientConfig{
		Conn:          tr.dial(t, b),
		PacketTimeout: waitFor,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			c.msgs <- pr.Packet
			return true, nil
		}},
		OnServerDisconnect: func(d *paho.Disconnect) {
			select {
			case c.serverDisconnect <- d:
			default:
			}
		},
	})
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	ack, err := c.Connect(ctx, cp)
	if ack == nil {
		t.Fatalf("connect %q over %s: no CONNACK: %v", cp.ClientID, tr.name, err)
	}
	if err != nil {
		return nil, ack.ReasonCode
	}
	c.Connack = ack
	t.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}) })
	return c, ack.ReasonCode
}

// asUser is a CONNECT with credentials (user "" connects anonymously).
func asUser(id, user, password string) *paho.Connect {
	cp := &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30}
	if user != "" {
		cp.UsernameFlag, cp.Username = true, user
		cp.PasswordFlag, cp.Password = true, []byte(password)
	}
	return cp
}

// v5Login connects a user with its test password and fails the test if refused.
func v5Login(t testing.TB, tr transport, b *broker, id, user string) *v5Client {
	t.Helper()
	c, code := v5Connect(t, tr, b, asUser(id, user, testPasswords[user]))
	if c == nil {
		t.Fatalf("%s (%s) refused: CONNACK 0x%02X", id, user, code)
	}
	return c
}

// trySubscribe sends one SUBSCRIBE and returns its reason codes.
func (c *v5Client) trySubscribe(t testing.TB, opts ...paho.SubscribeOptions) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	sa, _ := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: opts})
	if sa == nil {
		t.Fatalf("%s: no SUBACK", c.ClientID())
	}
	return sa.Reasons
}

// publishCode publishes and returns the PUBACK/PUBREC reason code (QoS 1 or 2).
func (c *v5Client) publishCode(t testing.TB, p *paho.Publish) byte {
	t.Helper()
	resp, err := c.tryPublish(p)
	if resp == nil {
		t.Fatalf("%s: publish to %q: no acknowledgement: %v", c.ClientID(), p.Topic, err)
	}
	return resp.ReasonCode
}

// untilSentinel collects received payloads up to and including sentinel.
func (c *v5Client) untilSentinel(t testing.TB, sentinel string) []string {
	t.Helper()
	var got []string
	for {
		p := c.next(t)
		got = append(got, p.Topic+"="+string(p.Payload))
		if string(p.Payload) == sentinel {
			return got
		}
	}
}
