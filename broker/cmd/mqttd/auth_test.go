package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mqtt-operator/mqtt-operator/broker/packet"
)

// passwd runs `mqttd passwd args...` with stdin and returns its exit code and output.
func passwd(t *testing.T, stdin string, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, mqttdBin, append([]string{"passwd", "--cost", "4"}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), string(out)
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0, string(out)
}

// connectAs sends a v5 CONNECT with credentials and returns the CONNACK reason code.
func connectAs(t *testing.T, addr, user, password string) packet.Code {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	cf := packet.ConnectFields{ProtocolVersion: packet.V5, CleanStart: true, ClientID: "c-" + user}
	if user != "" {
		cf.UsernameFlag, cf.Username, cf.PasswordFlag, cf.Password = true, user, true, []byte(password)
	}
	p := packet.Packet{Type: packet.Connect, Connect: cf}
	if _, err := conn.Write(p.Encode(nil, packet.V5)); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	ack, err := packet.Read(bufio.NewReader(conn), packet.V5, 0)
	if err != nil || ack.Type != packet.Connack {
		t.Fatalf("no CONNACK: %+v %v", ack, err)
	}
	return ack.ReasonCode
}

// TestPasswdAndAuth: `mqttd passwd` writes users (password from stdin, never argv),
// mqttd refuses anonymous clients and wrong passwords, picks up a new user on SIGHUP,
// keeps its rules when the file breaks, and does not start on a broken users file.
func TestPasswdAndAuth(t *testing.T) {
	dir := t.TempDir()
	users := filepath.Join(dir, "users")
	if code, out := passwd(t, "alice-pw\n", users, "alice"); code != 0 {
		t.Fatalf("passwd alice: exit %d: %s", code, out)
	}
	raw, err := os.ReadFile(users)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(raw), "alice:$2a$04$") || strings.Contains(string(raw), "alice-pw") {
		t.Fatalf("users file = %q, want a bcrypt line and no clear password", raw)
	}
	if code, _ := passwd(t, "", users, "bob"); code == 0 {
		t.Fatal("passwd accepted an empty password")
	}
	if code, out := passwd(t, "x\n", "-", "$anonymous"); code != exitConfig {
		t.Fatalf("passwd accepted a reserved username: exit %d %s", code, out)
	}
	if code, out := passwd(t, "pw\n", "-", "carol"); code != 0 || !strings.HasPrefix(out, "carol:$2a$04$") {
		t.Fatalf("passwd to stdout: exit %d %q", code, out)
	}

	cmd, w, addr, apiAddr := startMqttd(t, "--auth.allow-anonymous=false", "--auth.users-file", users, "--auth.reload-interval", "1h")
	for _, tc := range []struct {
		user, password string
		want           packet.Code
	}{
		{"alice", "alice-pw", packet.Success},
		{"alice", "nope", packet.BadUserNameOrPassword},
		{"bob", "bob-pw", packet.BadUserNameOrPassword},
		{"", "", packet.NotAuthorized},
	} {
		if got := connectAs(t, addr, tc.user, tc.password); got != tc.want {
			t.Errorf("CONNECT %q/%q: 0x%02X, want 0x%02X", tc.user, tc.password, byte(got), byte(tc.want))
		}
	}

	// A new user, applied on SIGHUP (the poll interval is an hour).
	if code, out := passwd(t, "bob-pw\n", users, "bob"); code != 0 {
		t.Fatalf("passwd bob: exit %d: %s", code, out)
	}
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	w.waitFor(t, regexp.MustCompile(`msg="auth rules reloaded".*users=2`))
	if got := connectAs(t, addr, "bob", "bob-pw"); got != packet.Success {
		t.Fatalf("bob after SIGHUP: 0x%02X", byte(got))
	}

	// A broken file keeps the rules in force.
	if err := os.WriteFile(users, []byte("garbage\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	w.waitFor(t, regexp.MustCompile(`auth files not reloaded`))
	if got := connectAs(t, addr, "bob", "bob-pw"); got != packet.Success {
		t.Fatalf("bob after a broken users file: 0x%02X, want the old rules", byte(got))
	}
	_, metrics := httpGet(t, apiAddr, "/metrics")
	for _, want := range []string{`mqttd_auth_connects_total{result="bad_credentials"} 2`,
		`mqttd_auth_connects_total{result="anonymous_refused"} 1`, `mqttd_auth_reloads_total{result="error"} 1`, "mqttd_auth_users 2"} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}

	// A broken users file at start: configuration error, exit 2.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var stderr bytes.Buffer
	bad := exec.CommandContext(ctx, mqttdBin, "--listeners.tcp", "127.0.0.1:0", "--listeners.websocket", "", "--api.listen", "",
		"--auth.users-file", users)
	bad.Stderr = &stderr
	err = bad.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != exitConfig || !strings.Contains(stderr.String(), "users file") {
		t.Fatalf("start with a broken users file: %v, stderr %q; want exit %d naming the users file", err, stderr.String(), exitConfig)
	}
}
