package dashboard

import (
	"bufio"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mqtt-operator/mqtt-operator/broker/server"
	bsession "github.com/mqtt-operator/mqtt-operator/broker/session"
)

// echo stands in for the management API (api.Management, tested with real nodes in
// test/cluster): it answers which request reached it.
var echo = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	_, _ = io.WriteString(w, r.Method+" "+r.URL.Path)
})

func newDashboard(t *testing.T, secret, user, pass string, now *time.Time) *Dashboard {
	t.Helper()
	o := Options{Secret: secret, Management: echo, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if now != nil {
		o.Now = func() time.Time { return *now }
	}
	if user != "" {
		dir := t.TempDir()
		o.UsernameFile, o.PasswordFile = filepath.Join(dir, "u"), filepath.Join(dir, "p")
		writeFile(t, o.UsernameFile, user)
		writeFile(t, o.PasswordFile, pass)
	}
	return New(o)
}

func writeFile(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

// do sends a request with optional cookie and headers from addr.
func do(d *Dashboard, method, target string, form url.Values, cookie *http.Cookie, hdr map[string]string) *httptest.ResponseRecorder {
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	r := httptest.NewRequest(method, target, body)
	r.Host = "127.0.0.1:18083" // the defaults answer only to an address
	if form != nil {
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if cookie != nil {
		r.AddCookie(cookie)
	}
	for k, v := range hdr {
		r.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	d.ServeHTTP(w, r)
	return w
}

func loginAs(t *testing.T, d *Dashboard, user, pass string) *http.Cookie {
	t.Helper()
	w := do(d, http.MethodPost, "/login", url.Values{"username": {user}, "password": {pass}}, nil, map[string]string{"Sec-Fetch-Site": "same-origin"})
	if w.Code != http.StatusSeeOther {
		t.Fatalf("login %s: %d %s", user, w.Code, w.Body)
	}
	for _, c := range w.Result().Cookies() {
		if c.Name == cookieName {
			if !c.HttpOnly || c.SameSite != http.SameSiteStrictMode {
				t.Fatalf("session cookie without HttpOnly/SameSite=Strict: %+v", c)
			}
			return c
		}
	}
	t.Fatal("no session cookie")
	return nil
}

// csrfOf reads the page's CSRF token.
func csrfOf(t *testing.T, d *Dashboard, c *http.Cookie) string {
	t.Helper()
	w := do(d, http.MethodGet, "/", nil, c, nil)
	_, rest, ok := strings.Cut(w.Body.String(), `name="csrf-token" content="`)
	if !ok {
		t.Fatalf("no CSRF token in the page: %d", w.Code)
	}
	tok, _, _ := strings.Cut(rest, `"`)
	return tok
}

func TestLoginSessionsAndCSRF(t *testing.T) {
	d := newDashboard(t, "cluster-token-0123456789", "", "", nil)
	if w := do(d, http.MethodGet, "/", nil, nil, nil); w.Code != http.StatusSeeOther || w.Header().Get("Location") != "/login" {
		t.Fatalf("/ without a session: %d %s", w.Code, w.Header().Get("Location"))
	}
	if w := do(d, http.MethodGet, "/api/v1/clients", nil, nil, nil); w.Code != http.StatusUnauthorized {
		t.Fatalf("API without a session: %d", w.Code)
	}
	if w := do(d, http.MethodGet, "/login", nil, nil, nil); !strings.Contains(w.Body.String(), "default credentials") {
		t.Fatal("no default-credentials banner on the login page")
	}
	if w := do(d, http.MethodPost, "/login", url.Values{"username": {"admin"}, "password": {"nope"}}, nil, nil); w.Code != http.StatusUnauthorized {
		t.Fatalf("wrong password: %d", w.Code)
	}
	if w := do(d, http.MethodPost, "/login", url.Values{"username": {"admin"}, "password": {"public"}}, nil,
		map[string]string{"Sec-Fetch-Site": "cross-site"}); w.Code != http.StatusForbidden {
		t.Fatalf("cross-site login: %d", w.Code)
	}
	c := loginAs(t, d, "admin", "public")
	if w := do(d, http.MethodGet, "/api/v1/clients", nil, c, nil); w.Code != http.StatusOK || w.Body.String() != "GET /api/v1/clients" {
		t.Fatalf("API with a session: %d %s", w.Code, w.Body)
	}
	tok := csrfOf(t, d, c)
	same := map[string]string{"Sec-Fetch-Site": "same-origin", "X-CSRF-Token": tok}
	if w := do(d, http.MethodDelete, "/api/v1/clients/x", nil, c, same); w.Code != http.StatusOK {
		t.Fatalf("DELETE with the CSRF token: %d %s", w.Code, w.Body)
	}
	for name, hdr := range map[string]map[string]string{
		"no token":       {"Sec-Fetch-Site": "same-origin"},
		"wrong token":    {"Sec-Fetch-Site": "same-origin", "X-CSRF-Token": tok + "x"},
		"cross-site":     {"Sec-Fetch-Site": "cross-site", "X-CSRF-Token": tok},
		"foreign Origin": {"Origin": "http://evil.example", "X-CSRF-Token": tok},
	} {
		if w := do(d, http.MethodDelete, "/api/v1/clients/x", nil, c, hdr); w.Code != http.StatusForbidden {
			t.Errorf("DELETE with %s: %d", name, w.Code)
		}
	}
	// Another node with the same token accepts the session; one with another does not.
	if w := do(newDashboard(t, "cluster-token-0123456789", "", "", nil), http.MethodGet, "/api/v1/stats", nil, c, nil); w.Code != http.StatusOK {
		t.Fatalf("the session on another node of the cluster: %d", w.Code)
	}
	if w := do(newDashboard(t, "another-token-0123456789", "", "", nil), http.MethodGet, "/api/v1/stats", nil, c, nil); w.Code != http.StatusUnauthorized {
		t.Fatalf("the session on another cluster: %d", w.Code)
	}
	// A forged cookie (a later expiry, the same signature) is refused.
	parts := strings.Split(c.Value, ".")
	exp, _ := strconv.ParseInt(parts[1], 10, 64)
	forged := *c
	forged.Value = parts[0] + "." + strconv.FormatInt(exp+3600, 10) + "." + parts[2]
	if w := do(d, http.MethodGet, "/api/v1/stats", nil, &forged, nil); w.Code != http.StatusUnauthorized {
		t.Fatalf("a forged cookie: %d", w.Code)
	}
}

func TestPasswordChangeEndsSessionsAndExpiry(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	d := newDashboard(t, "tok-0123456789abcdef", "ops", "first-password", &now)
	if w := do(d, http.MethodGet, "/login", nil, nil, nil); strings.Contains(w.Body.String(), "default credentials") {
		t.Fatal("the banner shows with credentials set")
	}
	if w := do(d, http.MethodPost, "/login", url.Values{"username": {"admin"}, "password": {"public"}}, nil, nil); w.Code != http.StatusUnauthorized {
		t.Fatalf("the defaults with credentials set: %d", w.Code)
	}
	c := loginAs(t, d, "ops", "first-password")
	if w := do(d, http.MethodGet, "/api/v1/stats", nil, c, nil); w.Code != http.StatusOK {
		t.Fatalf("fresh session: %d", w.Code)
	}
	now = now.Add(sessionTTL + time.Second)
	if w := do(d, http.MethodGet, "/api/v1/stats", nil, c, nil); w.Code != http.StatusUnauthorized {
		t.Fatalf("expired session: %d", w.Code)
	}
	now = now.Add(-sessionTTL)
	writeFile(t, d.opts.PasswordFile, "second-password")
	if w := do(d, http.MethodGet, "/api/v1/stats", nil, c, nil); w.Code != http.StatusUnauthorized {
		t.Fatalf("session after a password change: %d", w.Code)
	}
	loginAs(t, d, "ops", "second-password")
}

func TestLoginRateLimit(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	d := newDashboard(t, "", "", "", &now)
	for i := range loginBurst {
		if w := do(d, http.MethodPost, "/login", url.Values{"username": {"admin"}, "password": {"guess"}}, nil, nil); w.Code != http.StatusUnauthorized {
			t.Fatalf("attempt %d: %d", i+1, w.Code)
		}
	}
	// Over the budget even the right password waits.
	if w := do(d, http.MethodPost, "/login", url.Values{"username": {"admin"}, "password": {"public"}}, nil, nil); w.Code != http.StatusTooManyRequests {
		t.Fatalf("attempt over the budget: %d", w.Code)
	}
	now = now.Add(loginEvery)
	loginAs(t, d, "admin", "public")
	if ok, failed, throttled := d.Logins(); ok != 1 || failed != loginBurst || throttled != 1 {
		t.Fatalf("counts: ok %d failed %d throttled %d", ok, failed, throttled)
	}
}

func TestSecurityHeadersAndAssets(t *testing.T) {
	d := newDashboard(t, "", "", "", nil)
	w := do(d, http.MethodGet, "/static/app.js", nil, nil, nil)
	if w.Code != http.StatusOK || !strings.Contains(w.Body.String(), "/api/v1/stats") {
		t.Fatalf("app.js: %d", w.Code)
	}
	if csp := w.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Fatalf("CSP: %q", csp)
	}
}

func TestDefaultCredentialsOnlyOnAnAddress(t *testing.T) {
	d := newDashboard(t, "", "", "", nil)
	for host, want := range map[string]int{"127.0.0.1:18083": 200, "[::1]:18083": 200, "localhost:18083": 200, "10.1.2.3": 200,
		"evil.example:18083": http.StatusMisdirectedRequest, "mqtt-dashboard.prod.svc:18083": http.StatusMisdirectedRequest} {
		r := httptest.NewRequest(http.MethodGet, "/login", nil)
		r.Host = host
		w := httptest.NewRecorder()
		d.ServeHTTP(w, r)
		if w.Code != want {
			t.Errorf("Host %s with the default credentials: %d, want %d", host, w.Code, want)
		}
	}
	set := newDashboard(t, "", "ops", "a-password", nil)
	r := httptest.NewRequest(http.MethodGet, "/login", nil)
	r.Host = "mqtt-dashboard.prod.svc:18083"
	w := httptest.NewRecorder()
	set.ServeHTTP(w, r)
	if w.Code != http.StatusOK {
		t.Fatalf("a host name with credentials set: %d", w.Code)
	}
}

func TestLoginBodyBounded(t *testing.T) {
	d := newDashboard(t, "", "", "", nil)
	// The right credentials, padded past the bound: refused for its size alone.
	big := url.Values{"username": {"admin"}, "password": {"public"}, "padding": {strings.Repeat("x", 64<<10)}}
	if w := do(d, http.MethodPost, "/login", big, nil, nil); w.Code == http.StatusSeeOther || w.Code == http.StatusOK {
		t.Fatalf("a 64 KiB login: %d", w.Code)
	}
	small := url.Values{"username": {"admin"}, "password": {"public"}, "padding": {strings.Repeat("x", 4<<10)}}
	if w := do(d, http.MethodPost, "/login", small, nil, nil); w.Code != http.StatusSeeOther {
		t.Fatalf("a 4 KiB login with the right credentials: %d", w.Code)
	}
	r := httptest.NewRequest(http.MethodPost, "/login", strings.NewReader("--x\r\n"))
	r.Header.Set("Content-Type", "multipart/form-data; boundary=x")
	r.Host = "127.0.0.1:18083"
	w := httptest.NewRecorder()
	d.ServeHTTP(w, r)
	if w.Code != http.StatusUnsupportedMediaType {
		t.Fatalf("a multipart login: %d", w.Code)
	}
}

func TestIPv6LoginsLimitedPer64(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	d := newDashboard(t, "", "", "", &now)
	for i := range loginBurst + 1 {
		r := httptest.NewRequest(http.MethodPost, "/login", strings.NewReader("username=admin&password=guess"))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		r.RemoteAddr = "[2001:db8:1:2::" + strconv.Itoa(i+1) + "]:40000" // a new address in the same /64 each time
		r.Host = "127.0.0.1:18083"
		w := httptest.NewRecorder()
		d.ServeHTTP(w, r)
		if want := map[bool]int{true: http.StatusTooManyRequests, false: http.StatusUnauthorized}[i == loginBurst]; w.Code != want {
			t.Fatalf("attempt %d: %d, want %d", i+1, w.Code, want)
		}
	}
}

// TestWatchStream checks the subscribe tool's stream against a real server: no
// session, no stream; a bad filter refused; a message published to the server arrives
// as a server-sent event; the watch ends (its subscription gone) when the browser
// leaves.
func TestWatchStream(t *testing.T) {
	srv, err := server.New(server.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), SysInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = srv.Shutdown(t.Context()) }()
	d := New(Options{Management: echo, Watch: srv.Watch, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	h := httptest.NewServer(d)
	defer h.Close()
	c := loginAs(t, d, "admin", "public")
	get := func(target string, cookie *http.Cookie) *http.Response {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, h.URL+target, nil)
		if cookie != nil {
			req.AddCookie(cookie)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	for target, want := range map[string]int{"/watch?topic=a/%23": http.StatusUnauthorized, "/watch?topic=a/%23/b": http.StatusBadRequest} {
		cookie := c
		if want == http.StatusUnauthorized {
			cookie = nil
		}
		resp := get(target, cookie)
		_ = resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("%s: %d, want %d", target, resp.StatusCode, want)
		}
	}
	subs := srv.Stats().Subscriptions
	resp := get("/watch?topic=a/%23", c)
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("a watch: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	sc := bufio.NewScanner(resp.Body)
	if !sc.Scan() || sc.Text() != ": watching" { // the subscription is in place once this is sent
		t.Fatalf("first line %q", sc.Text())
	}
	if _, _, err := srv.Publish(&bsession.Message{Topic: "a/b", Payload: []byte("hello"), QoS: 1}); err != nil {
		t.Fatal(err)
	}
	var event string
	for sc.Scan() {
		if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
			event = data
			break
		}
	}
	if !strings.Contains(event, `"topic":"a/b"`) || !strings.Contains(event, `"payload":"hello"`) {
		t.Fatalf("event %q", event)
	}
	_ = resp.Body.Close()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for srv.Stats().Subscriptions != subs {
		if time.Now().After(deadline) {
			t.Fatalf("%d subscriptions after the browser left, want %d", srv.Stats().Subscriptions, subs)
		}
		<-tick.C
	}
}
