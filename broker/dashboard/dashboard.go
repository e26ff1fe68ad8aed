// Package dashboard is mqttd's web dashboard (port 18083): a login with the
// administrator's credentials, then pages (an overview of the nodes with live message
// rates, clients, subscriptions, retained messages, a publish tool) drawn by a small
// script from the management API, which the dashboard serves to its sessions under
// /api/v1 (api.Management: the cluster verbs are not reachable from here). The assets
// are embedded: no CDN, nothing fetched from the internet.
//
// Sessions are cookies (HttpOnly, SameSite=Strict) signed with a key derived from the
// API token and the credentials: any node of a cluster accepts a session another node
// issued (the pods share the token), and a changed password ends every session.
// Requests that change something carry a CSRF token bound to the session and must
// come from the dashboard's own origin. Logins are rate-limited per client address.
package dashboard

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"golang.org/x/time/rate"

	"github.com/mqtt-operator/mqtt-operator/broker/server"
	bsession "github.com/mqtt-operator/mqtt-operator/broker/session"
)

// Default credentials, as EMQX's: used while no credentials files are configured,
// with a banner on every page until they are changed.
const (
	DefaultUsername = "admin"
	DefaultPassword = "public"
)

const (
	cookieName = "mqttd_session"
	// sessionTTL is how long a login lasts.
	sessionTTL = 8 * time.Hour
	// Login attempts per client address: a burst, then one more every loginEvery.
	loginBurst = 5
	loginEvery = 12 * time.Second
	// maxLimiters bounds the per-address limiters kept (oldest dropped first).
	maxLimiters = 10000
)

//go:embed assets
var assets embed.FS

var pages = template.Must(template.ParseFS(assets, "assets/*.html"))

// Options configures the dashboard.
type Options struct {
	// UsernameFile and PasswordFile hold the administrator's credentials (a mounted
	// Secret), read at every login so a changed Secret applies without a restart.
	// Empty: admin/public.
	UsernameFile, PasswordFile string
	// Secret keys the session cookies: the same on every node of a cluster (the API
	// token). Empty: a random key (sessions are this process's only).
	Secret string
	// Management serves /api/v1 to logged-in sessions (api.Management).
	Management http.Handler
	// Watch subscribes the subscribe tool to a filter on this node (server.Watch): the
	// messages, and a stop that returns how many were dropped. Nil: no tool.
	Watch  func(filter string, buf int) (<-chan *bsession.Message, func() uint64, error)
	Logger *slog.Logger
	// Now is the clock (tests); default time.Now.
	Now func() time.Time
}

// Dashboard is the dashboard's HTTP handler.
type Dashboard struct {
	opts Options
	log  *slog.Logger
	rnd  []byte // random part of the key when no Secret is given

	mu       sync.Mutex
	limiters map[string]*rate.Limiter
	order    []string // limiters' addresses, oldest first

	logins [3]atomic.Uint64 // ok, failed, throttled
}

// Login results counted by Logins.
const (
	LoginOK = iota
	LoginFailed
	LoginThrottled
)

// Logins returns the login counts: succeeded, refused (wrong credentials) and
// throttled (too many attempts from one address).
func (d *Dashboard) Logins() (ok, failed, throttled uint64) {
	return d.logins[LoginOK].Load(), d.logins[LoginFailed].Load(), d.logins[LoginThrottled].Load()
}

// New returns the dashboard.
func New(opts Options) *Dashboard {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	d := &Dashboard{opts: opts, log: opts.Logger, limiters: map[string]*rate.Limiter{}}
	if opts.Secret == "" {
		d.rnd = make([]byte, 32)
		_, _ = rand.Read(d.rnd)
	}
	return d
}

// credentials returns the administrator's username and password, and whether they
// are the defaults.
func (d *Dashboard) credentials() (user, pass string, isDefault bool, err error) {
	user, pass = DefaultUsername, DefaultPassword
	if d.opts.UsernameFile != "" {
		b, err := os.ReadFile(d.opts.UsernameFile)
		if err != nil {
			return "", "", false, err
		}
		user = strings.TrimSpace(string(b))
	}
	if d.opts.PasswordFile != "" {
		b, err := os.ReadFile(d.opts.PasswordFile)
		if err != nil {
			return "", "", false, err
		}
		pass = strings.TrimRight(string(b), "\r\n")
	}
	if user == "" || pass == "" {
		return "", "", false, errors.New("the dashboard's username or password file is empty")
	}
	return user, pass, user == DefaultUsername && pass == DefaultPassword, nil
}

// key is the session key: the secret and the current credentials, so that changing
// the password ends every session.
func (d *Dashboard) key(user, pass string) []byte {
	h := hmac.New(sha256.New, append([]byte(d.opts.Secret), d.rnd...))
	h.Write([]byte("mqttd dashboard session\x00" + user + "\x00" + pass))
	return h.Sum(nil)
}

func sign(key []byte, parts ...string) string {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(strings.Join(parts, "\x00")))
	return base64.RawURLEncoding.EncodeToString(h.Sum(nil))
}

// session is a logged-in user.
type session struct {
	user    string
	csrf    string
	isDflt  bool
	expires time.Time
}

// cookieValue is user|expiry|signature (the user base64-encoded).
func (d *Dashboard) cookieValue(key []byte, user string, expires time.Time) string {
	u := base64.RawURLEncoding.EncodeToString([]byte(user))
	exp := strconv.FormatInt(expires.Unix(), 10)
	return u + "." + exp + "." + sign(key, "cookie", u, exp)
}

// session returns the request's valid session.
func (d *Dashboard) session(r *http.Request) (*session, bool) {
	c, err := r.Cookie(cookieName)
	if err != nil {
		return nil, false
	}
	user, pass, isDefault, err := d.credentials()
	if err != nil {
		return nil, false
	}
	parts := strings.Split(c.Value, ".")
	if len(parts) != 3 {
		return nil, false
	}
	key := d.key(user, pass)
	if subtle.ConstantTimeCompare([]byte(parts[2]), []byte(sign(key, "cookie", parts[0], parts[1]))) != 1 {
		return nil, false
	}
	u, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil || string(u) != user {
		return nil, false
	}
	exp, err := strconv.ParseInt(parts[1], 10, 64)
	if err != nil || d.opts.Now().Unix() >= exp {
		return nil, false
	}
	return &session{user: user, isDflt: isDefault, csrf: sign(key, "csrf", c.Value), expires: time.Unix(exp, 0)}, true
}

// ServeHTTP serves the dashboard.
func (d *Dashboard) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	if !d.hostAllowed(r) {
		// DNS rebinding: a page of another site whose name now points here would be
		// "same origin" with the dashboard and could log in with the well-known
		// default password. With the defaults, only an address or localhost is served.
		http.Error(w, "the dashboard still has its default credentials, so it answers only to an IP address or localhost: set dashboard.username_file and password_file (spec.dashboard.adminSecretRef) to use a host name", http.StatusMisdirectedRequest)
		return
	}
	h.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "same-origin")
	switch {
	case r.URL.Path == "/login":
		d.login(w, r)
	case r.URL.Path == "/logout" && r.Method == http.MethodPost:
		d.logout(w, r)
	case strings.HasPrefix(r.URL.Path, "/static/"):
		sub, _ := fs.Sub(assets, "assets")
		h.Set("Cache-Control", "no-cache")
		http.StripPrefix("/static/", http.FileServerFS(sub)).ServeHTTP(w, r)
	case strings.HasPrefix(r.URL.Path, "/api/v1/"):
		d.api(w, r)
	case r.URL.Path == "/watch" && r.Method == http.MethodGet:
		d.watch(w, r)
	case r.URL.Path == "/" && (r.Method == http.MethodGet || r.Method == http.MethodHead):
		s, ok := d.session(r)
		if !ok {
			http.Redirect(w, r, "/login", http.StatusSeeOther)
			return
		}
		h.Set("Cache-Control", "no-store")
		d.render(w, "index.html", map[string]any{"User": s.user, "CSRF": s.csrf, "Default": s.isDflt})
	default:
		http.NotFound(w, r)
	}
}

func (d *Dashboard) render(w http.ResponseWriter, page string, data map[string]any) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if err := pages.ExecuteTemplate(w, page, data); err != nil {
		d.log.Warn("dashboard page failed", "page", page, "error", err)
	}
}

// hostAllowed reports whether the request's Host may be served: any while the
// credentials are set, else only an IP address or localhost.
func (d *Dashboard) hostAllowed(r *http.Request) bool {
	if _, _, isDefault, err := d.credentials(); err != nil || !isDefault {
		return true
	}
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	return host == "localhost" || net.ParseIP(host) != nil
}

// sameOrigin reports whether a state-changing request comes from the dashboard's own
// pages: the browser's Sec-Fetch-Site says same-origin, or (older browsers) its
// Origin, else its Referer, names this host. A request with none of them is not from
// a browser (curl), so carries no ambient cookie of a victim.
func sameOrigin(r *http.Request) bool {
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" {
		return site == "same-origin"
	}
	o := r.Header.Get("Origin")
	if o == "" {
		o = r.Header.Get("Referer")
	}
	if o == "" {
		return true
	}
	u, err := url.Parse(o)
	return err == nil && u.Host == r.Host
}

// clientAddr is the address logins are limited by: an IPv4 address, or an IPv6
// address's /64 (one host usually holds a whole /64).
func clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	ip := net.ParseIP(host)
	if ip == nil || ip.To4() != nil {
		return host
	}
	return ip.Mask(net.CIDRMask(64, 128)).String() + "/64"
}

// equal compares secrets in constant time, whatever their lengths.
func equal(a, b string) bool {
	ha, hb := sha256.Sum256([]byte(a)), sha256.Sum256([]byte(b))
	return subtle.ConstantTimeCompare(ha[:], hb[:]) == 1
}

// maxForm bounds a login or logout body.
const maxForm = 8 << 10

// allowLogin takes one login attempt from addr's budget.
func (d *Dashboard) allowLogin(addr string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	l, ok := d.limiters[addr]
	if !ok {
		if len(d.order) >= maxLimiters {
			delete(d.limiters, d.order[0])
			d.order = d.order[1:]
		}
		l = rate.NewLimiter(rate.Every(loginEvery), loginBurst)
		d.limiters[addr] = l
		d.order = append(d.order, addr)
	}
	return l.AllowN(d.opts.Now(), 1)
}

func (d *Dashboard) login(w http.ResponseWriter, r *http.Request) {
	_, _, isDefault, credErr := d.credentials()
	data := map[string]any{"Default": isDefault && credErr == nil}
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		if _, ok := d.session(r); ok {
			http.Redirect(w, r, "/", http.StatusSeeOther)
			return
		}
		d.render(w, "login.html", data)
		return
	case http.MethodPost:
	default:
		w.Header().Set("Allow", "GET, POST")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if !sameOrigin(r) {
		http.Error(w, "cross-origin login refused", http.StatusForbidden)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxForm)
	addr := clientAddr(r)
	if !d.allowLogin(addr) {
		d.logins[LoginThrottled].Add(1)
		d.log.Warn("dashboard login throttled: too many attempts", "address", addr)
		d.loginPage(w, http.StatusTooManyRequests, data, "Too many login attempts. Wait a minute and try again.")
		return
	}
	user, pass, _, err := d.credentials()
	if err != nil {
		d.log.Error("dashboard credentials unreadable: every login is refused", "error", err)
		d.loginPage(w, http.StatusInternalServerError, data, "The dashboard's credentials cannot be read (see the broker's log).")
		return
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/x-www-form-urlencoded") {
		http.Error(w, "a login is a form (application/x-www-form-urlencoded)", http.StatusUnsupportedMediaType)
		return
	}
	gotUser, gotPass := r.PostFormValue("username"), r.PostFormValue("password")
	okUser, okPass := equal(gotUser, user), equal(gotPass, pass) // both, always
	if !okUser || !okPass {
		d.logins[LoginFailed].Add(1)
		// Not the typed username: it is often a password typed in the wrong field.
		d.log.Info("dashboard login refused: wrong username or password", "address", addr)
		d.loginPage(w, http.StatusUnauthorized, data, "Wrong username or password.")
		return
	}
	d.logins[LoginOK].Add(1)
	d.log.Info("dashboard login", "address", addr, "username", user)
	expires := d.opts.Now().Add(sessionTTL)
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: d.cookieValue(d.key(user, pass), user, expires), Path: "/",
		Expires: expires, HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

// loginPage answers the login page again with status and an error message.
func (d *Dashboard) loginPage(w http.ResponseWriter, status int, data map[string]any, msg string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	data["Error"] = msg
	d.render(w, "login.html", data)
}

func (d *Dashboard) logout(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxForm)
	if s, ok := d.session(r); !ok || !sameOrigin(r) || !equal(r.PostFormValue("csrf"), s.csrf) {
		http.Error(w, "not logged in, or a forged logout", http.StatusForbidden)
		return
	}
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}

// api serves the management API to a logged-in session; a request that changes
// something needs the session's CSRF token (X-CSRF-Token) and the dashboard's origin.
func (d *Dashboard) api(w http.ResponseWriter, r *http.Request) {
	s, ok := d.session(r)
	if !ok {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = w.Write([]byte(`{"code":"unauthorized","message":"log in to the dashboard"}` + "\n"))
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		if !sameOrigin(r) || !equal(r.Header.Get("X-CSRF-Token"), s.csrf) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusForbidden)
			_, _ = w.Write([]byte(`{"code":"csrf","message":"missing or wrong CSRF token"}` + "\n"))
			return
		}
		d.log.Info("dashboard action", "user", s.user, "method", r.Method, "path", r.URL.Path)
	}
	w.Header().Set("Cache-Control", "no-store")
	d.opts.Management.ServeHTTP(w, r)
}

// Bounds of the subscribe tool.
const (
	watchBuffer  = 256              // messages waiting for a slow browser; more are dropped
	watchMaxTime = 30 * time.Minute // a watch ends by itself
	watchPreview = 4 << 10          // payload bytes shown
	watchPing    = 15 * time.Second // a comment line keeps proxies from closing the stream
	watchWrite   = 30 * time.Second // how long one write may take
)

// watchedMessage is one event of the subscribe tool's stream.
type watchedMessage struct {
	Topic           string `json:"topic"`
	Payload         string `json:"payload"`
	PayloadEncoding string `json:"payloadEncoding"` // plain or base64
	PayloadSize     int    `json:"payloadSize"`
	QoS             byte   `json:"qos"`
	Retain          bool   `json:"retain"`
}

// watch streams the messages matching ?topic= as server-sent events until the browser
// goes away, the watch times out, or the node stops. It is read-only (a GET, no CSRF
// token needed) and needs a session like the API.
func (d *Dashboard) watch(w http.ResponseWriter, r *http.Request) {
	s, ok := d.session(r)
	if !ok {
		http.Error(w, "log in to the dashboard", http.StatusUnauthorized)
		return
	}
	if d.opts.Watch == nil {
		http.NotFound(w, r)
		return
	}
	msgs, stop, err := d.opts.Watch(r.URL.Query().Get("topic"), watchBuffer)
	switch {
	case errors.Is(err, server.ErrTooManyWatchers), errors.Is(err, server.ErrServerClosed):
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	case err != nil:
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	defer func() {
		dropped := stop()
		d.log.Info("dashboard watch ended", "user", s.user, "topic", r.URL.Query().Get("topic"), "dropped", dropped)
	}()
	d.log.Info("dashboard watch", "user", s.user, "topic", r.URL.Query().Get("topic"))
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Time{}) // a stream outlives the server's read timeout
	// Each write must go out within watchWrite: a browser that stops reading ends the
	// stream (and frees its watcher) instead of holding it.
	writef := func(format string, args ...any) bool {
		_ = rc.SetWriteDeadline(time.Now().Add(watchWrite))
		_, err := fmt.Fprintf(w, format, args...)
		return err == nil && rc.Flush() == nil
	}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	if !writef(": watching\n\n") {
		return
	}
	ping := time.NewTicker(watchPing)
	defer ping.Stop()
	end := time.NewTimer(watchMaxTime)
	defer end.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-end.C:
			writef("event: end\ndata: the watch timed out\n\n")
			return
		case <-ping.C:
			// The session is checked again: its expiry or a new password ends the
			// stream (a logout only clears the browser's cookie).
			if _, ok := d.session(r); !ok {
				writef("event: end\ndata: the session ended\n\n")
				return
			}
			if !writef(": ping\n\n") {
				return
			}
		case m, ok := <-msgs:
			if !ok {
				writef("event: end\ndata: the node is shutting down\n\n")
				return
			}
			b, _ := json.Marshal(watched(m))
			if !writef("data: %s\n\n", b) {
				return
			}
		}
	}
}

func watched(m *bsession.Message) watchedMessage {
	p := m.Payload
	out := watchedMessage{Topic: m.Topic, PayloadSize: len(p), QoS: m.QoS, Retain: m.Retain}
	if len(p) > watchPreview {
		p = p[:watchPreview]
		// Text cut inside a character stays text: back up to that character's start
		// when that makes the preview valid; a binary payload keeps every byte.
		for i := 1; i < utf8.UTFMax && i < len(p); i++ {
			if utf8.RuneStart(p[len(p)-i]) {
				if utf8.Valid(p[:len(p)-i]) && !utf8.Valid(p) {
					p = p[:len(p)-i]
				}
				break
			}
		}
	}
	if utf8.Valid(p) {
		out.Payload, out.PayloadEncoding = string(p), "plain"
	} else {
		out.Payload, out.PayloadEncoding = base64.StdEncoding.EncodeToString(p), "base64"
	}
	return out
}
