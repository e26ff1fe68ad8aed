package auth

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

func hashLine(t testing.TB, user, password string) string {
	t.Helper()
	l, err := HashLine(user, []byte(password), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestParseUsers(t *testing.T) {
	file := "# comment\n\n" + hashLine(t, "alice", "a-pass") + "\n  " + hashLine(t, "bob", "b-pass") + "  \n"
	u, err := ParseUsers(strings.NewReader(file))
	if err != nil {
		t.Fatal(err)
	}
	if u.Len() != 2 {
		t.Fatalf("users = %d, want 2", u.Len())
	}
	cases := []struct {
		user, password string
		want           bool
	}{
		{"alice", "a-pass", true},
		{"bob", "b-pass", true},
		{"alice", "b-pass", false},
		{"alice", "", false},
		{"carol", "a-pass", false},
		{"", "", false},
	}
	for _, tc := range cases {
		if got := u.Check(tc.user, []byte(tc.password)); got != tc.want {
			t.Errorf("Check(%q, %q) = %v, want %v", tc.user, tc.password, got, tc.want)
		}
	}
}

func TestParseUsersErrors(t *testing.T) {
	good := hashLine(t, "alice", "pw")
	cases := map[string]string{
		"no colon":       "alice\n",
		"not bcrypt":     "alice:plaintext\n",
		"empty user":     ":" + strings.SplitN(good, ":", 2)[1] + "\n",
		"reserved user":  "$anonymous:" + strings.SplitN(good, ":", 2)[1] + "\n",
		"star user":      "*:" + strings.SplitN(good, ":", 2)[1] + "\n",
		"duplicate user": good + "\n" + good + "\n",
		"one bad line":   good + "\nbroken\n",
		"lenient prefix": "u:$0002000000000000000000000000000000000000000000000000000000\n",
		"cost too high":  "u:$2a$15$" + strings.SplitN(good, "$", 4)[3] + "\n",
		"truncated hash": good[:len(good)-1] + "\n",
	}
	for name, body := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := ParseUsers(strings.NewReader(body)); err == nil {
				t.Errorf("accepted %q", body)
			}
		})
	}
}

func TestHashLineRefusesBadInput(t *testing.T) {
	for _, tc := range []struct{ user, pw string }{{"", "x"}, {"a:b", "x"}, {"u", ""}, {"u", strings.Repeat("x", 73)}} {
		if _, err := HashLine(tc.user, []byte(tc.pw), bcrypt.MinCost); err == nil {
			t.Errorf("HashLine(%q, %d bytes) accepted", tc.user, len(tc.pw))
		}
	}
}

func writeFile(t *testing.T, path, body string) {
	t.Helper()
	// Written aside and renamed, as Kubernetes swaps a mounted Secret.
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func TestAuthenticate(t *testing.T) {
	dir := t.TempDir()
	users := filepath.Join(dir, "users")
	writeFile(t, users, hashLine(t, "alice", "secret")+"\n")
	cases := []struct {
		name        string
		anonymous   bool
		hasUser     bool
		user        string
		hasPassword bool
		password    string
		want        Result
	}{
		{"good", false, true, "alice", true, "secret", OK},
		{"wrong password", false, true, "alice", true, "nope", BadCredentials},
		{"no password", false, true, "alice", false, "", BadCredentials},
		{"unknown user", false, true, "mallory", true, "secret", BadCredentials},
		{"anonymous refused", false, false, "", false, "", AnonymousRefused},
		{"anonymous allowed", true, false, "", false, "", OK},
		{"unknown user with anonymous allowed", true, true, "mallory", true, "x", BadCredentials},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a, err := New(Config{AllowAnonymous: tc.anonymous, UsersFile: users})
			if err != nil {
				t.Fatal(err)
			}
			for range 2 { // the second time from the verified-password cache
				p, got := a.Authenticate("c", tc.hasUser, tc.user, tc.hasPassword, []byte(tc.password))
				if got != tc.want {
					t.Fatalf("result = %v, want %v", got, tc.want)
				}
				if got == OK && (p.Anonymous != !tc.hasUser || p.ClientID != "c") {
					t.Fatalf("principal = %+v", p)
				}
			}
		})
	}
}

func TestNewRefusesUnusableConfig(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad")
	writeFile(t, bad, "not a users file\n")
	for name, cfg := range map[string]Config{
		"nobody could connect": {AllowAnonymous: false},
		"missing users file":   {AllowAnonymous: true, UsersFile: filepath.Join(dir, "none")},
		"broken users file":    {AllowAnonymous: true, UsersFile: bad},
		"broken ACL file":      {AllowAnonymous: true, ACLFile: bad},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: New accepted it", name)
		}
	}
}

// TestReload: a changed file is applied, a broken one keeps the rules in force, the
// verified-password cache does not outlive a password change, and callbacks run.
func TestReload(t *testing.T) {
	dir := t.TempDir()
	users, acl := filepath.Join(dir, "users"), filepath.Join(dir, "acl.yaml")
	writeFile(t, users, hashLine(t, "alice", "one")+"\n")
	writeFile(t, acl, "rules:\n  - {username: alice, topic: a, access: publish, action: allow}\ndefault: deny\n")
	a, err := New(Config{UsersFile: users, ACLFile: acl, ReloadInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	changes := make(chan struct{}, 10)
	a.OnChange(func() { changes <- struct{}{} })
	alice := Principal{Username: "alice", ClientID: "c"}
	if _, r := a.Authenticate("c", true, "alice", true, []byte("one")); r != OK {
		t.Fatal("alice refused")
	}
	if !a.CanPublish(alice, "a") || a.CanPublish(alice, "b") {
		t.Fatal("initial ACL not in force")
	}
	if changed, err := a.Reload(); changed || err != nil {
		t.Fatalf("unchanged files reloaded: changed=%v err=%v", changed, err)
	}

	writeFile(t, users, hashLine(t, "alice", "two")+"\n")
	writeFile(t, acl, "rules:\n  - {username: alice, topic: b, access: publish, action: allow}\ndefault: deny\n")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { a.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	select {
	case <-changes:
	case <-time.After(10 * time.Second):
		t.Fatal("the polling reload did not apply the new files")
	}
	if _, r := a.Authenticate("c", true, "alice", true, []byte("one")); r != BadCredentials {
		t.Error("the old password still works after the change (cache not emptied)")
	}
	if _, r := a.Authenticate("c", true, "alice", true, []byte("two")); r != OK {
		t.Error("the new password is refused")
	}
	if a.CanPublish(alice, "a") || !a.CanPublish(alice, "b") {
		t.Error("new ACL not in force")
	}

	cancel()
	<-done
	writeFile(t, acl, "rules: [broken\n")
	if _, err := a.Reload(); err == nil {
		t.Fatal("a broken ACL file reloaded without error")
	}
	if !a.CanPublish(alice, "b") {
		t.Error("a broken file replaced the rules in force")
	}
	if s := a.Stats(); s.ReloadErrors != 1 || s.Reloads != 1 {
		t.Errorf("stats = %+v, want 1 reload and 1 reload error", s)
	}
}

// TestAuthenticateBusy: when every bcrypt slot stays taken, a CONNECT that needs
// bcrypt is answered Busy after BcryptWait instead of queueing without end.
func TestAuthenticateBusy(t *testing.T) {
	dir := t.TempDir()
	users := filepath.Join(dir, "users")
	writeFile(t, users, hashLine(t, "alice", "pw")+"\n")
	a, err := New(Config{UsersFile: users, BcryptWait: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	for range cap(a.bcryptSlots) {
		a.bcryptSlots <- struct{}{}
	}
	if _, r := a.Authenticate("c", true, "alice", true, []byte("pw")); r != Busy {
		t.Fatalf("with every slot taken: %v, want Busy", r)
	}
	for range cap(a.bcryptSlots) {
		<-a.bcryptSlots
	}
	if _, r := a.Authenticate("c", true, "alice", true, []byte("pw")); r != OK {
		t.Fatalf("with free slots: %v, want OK", r)
	}
	if n := a.Stats().Connects["busy"]; n != 1 {
		t.Errorf("busy count = %d, want 1", n)
	}
}
