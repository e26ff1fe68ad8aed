package auth

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"strings"
	"sync/atomic"
	"time"

	"github.com/mqtt-operator/mqtt-operator/broker/internal/lockorder"
)

// Config configures an Authenticator.
type Config struct {
	// AllowAnonymous lets clients without a username in.
	AllowAnonymous bool
	// UsersFile and ACLFile are read at start and whenever they change; empty: no
	// users, and an ACL that allows everything.
	UsersFile string
	ACLFile   string
	// ClientIDOwnership: a client may take over only a client ID whose session
	// belongs to its own user.
	ClientIDOwnership bool
	// ReloadInterval is how often Run checks the files (default 2s).
	ReloadInterval time.Duration
	// BcryptWait bounds how long a CONNECT waits for a free bcrypt slot (one per
	// GOMAXPROCS) before it is answered Busy (default 10s; the connect timeout).
	BcryptWait time.Duration
	Logger     *slog.Logger
}

// Result is the outcome of authenticating a CONNECT.
type Result int

// Results of Authenticate.
const (
	OK Result = iota
	// BadCredentials: a username that is not a user, or a wrong or missing password
	// (MQTT 5 0x86, 3.1.1 0x04).
	BadCredentials
	// AnonymousRefused: no username, and anonymous clients are not allowed
	// (MQTT 5 0x87, 3.1.1 0x05).
	AnonymousRefused
	// Busy: every bcrypt slot stayed taken for BcryptWait, as under a flood of
	// CONNECTs with made-up credentials (MQTT 5 0x89 Server busy, 3.1.1 0x03).
	Busy
)

// rules is one consistent generation of the users and the ACL.
type rules struct {
	users    *Users // nil: no users file
	acl      *ACL
	usersSum [32]byte
	aclSum   [32]byte
}

// Authenticator holds the live users and ACL. Its methods are safe for concurrent
// use; the rules in force are swapped atomically on reload, so a decision never sees
// half of a change.
type Authenticator struct {
	cfg Config
	log *slog.Logger
	cur atomic.Pointer[rules]

	reloadMu lockorder.Mutex // serializes reloads and the change callbacks
	onChange []func()

	// Verified passwords, as HMACs under a key of this process: reconnect storms do
	// not pay one bcrypt per CONNECT. Emptied whenever the users file changes.
	cacheMu  lockorder.Mutex
	cache    map[string]verified
	cacheKey [32]byte

	bcryptSlots chan struct{} // bounds concurrent bcrypt comparisons to the cores

	stats counters
}

type counters struct {
	ok, badCredentials, anonymousRefused, clientIDRefused, busy atomic.Uint64
	certificates                                                atomic.Uint64 // accepted by a client certificate
	deniedPublish, deniedSubscribe, deniedWill                  atomic.Uint64
	reloads, reloadErrors, revoked                              atomic.Uint64
}

// Stats are the authenticator's counters.
type Stats struct {
	Connects             map[string]uint64 // by result: ok, certificate, bad_credentials, anonymous_refused, client_id_owned, busy
	Denied               map[string]uint64 // by action: publish, subscribe, will
	Reloads              uint64            // rule changes applied
	ReloadErrors         uint64            // files that could not be read or parsed (old rules kept)
	RevokedSubscriptions uint64            // subscriptions removed because new rules deny them
	Users                int
	Rules                int
}

// New loads the files of cfg. It fails when a file cannot be read or parsed: a
// broker must not start with rules other than the ones asked for.
func New(cfg Config) (*Authenticator, error) {
	if cfg.ReloadInterval <= 0 {
		cfg.ReloadInterval = 2 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.BcryptWait <= 0 {
		cfg.BcryptWait = 10 * time.Second
	}
	if !cfg.AllowAnonymous && cfg.UsersFile == "" {
		return nil, errors.New("anonymous clients are refused and there is no users file: nobody could connect")
	}
	a := &Authenticator{cfg: cfg, log: cfg.Logger, cache: make(map[string]verified),
		bcryptSlots: make(chan struct{}, max(1, runtime.GOMAXPROCS(0)))} // GOMAXPROCS follows a container's CPU limit
	if _, err := rand.Read(a.cacheKey[:]); err != nil {
		return nil, err
	}
	r, err := a.load(&rules{})
	if err != nil {
		return nil, err
	}
	a.cur.Store(r)
	return a, nil
}

// load reads both files and returns the new rules, reusing prev's parts whose file
// did not change.
func (a *Authenticator) load(prev *rules) (*rules, error) {
	next := &rules{users: prev.users, acl: prev.acl, usersSum: prev.usersSum, aclSum: prev.aclSum}
	if a.cfg.UsersFile != "" {
		data, err := os.ReadFile(a.cfg.UsersFile)
		if err != nil {
			return nil, fmt.Errorf("users file: %w", err)
		}
		if sum := sha256.Sum256(data); sum != prev.usersSum || prev.users == nil {
			u, err := ParseUsers(bytes.NewReader(data))
			if err != nil {
				return nil, fmt.Errorf("users file %s: %w", a.cfg.UsersFile, err)
			}
			next.users, next.usersSum = u, sum
		}
	}
	if a.cfg.ACLFile == "" {
		next.acl = AllowAll
	} else {
		data, err := os.ReadFile(a.cfg.ACLFile)
		if err != nil {
			return nil, fmt.Errorf("ACL file: %w", err)
		}
		if sum := sha256.Sum256(data); sum != prev.aclSum || prev.acl == nil {
			acl, err := ParseACL(data)
			if err != nil {
				return nil, fmt.Errorf("ACL file %s: %w", a.cfg.ACLFile, err)
			}
			next.acl, next.aclSum = acl, sum
		}
	}
	return next, nil
}

// Reload reads the files again and applies them when they changed. A file that
// cannot be read or parsed leaves the rules in force, is logged and counted.
func (a *Authenticator) Reload() (changed bool, err error) {
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	prev := a.cur.Load()
	next, err := a.load(prev)
	if err != nil {
		a.stats.reloadErrors.Add(1)
		a.log.Error("auth files not reloaded; the rules in force stay", "error", err)
		return false, err
	}
	if next.users == prev.users && next.acl == prev.acl {
		return false, nil
	}
	a.cur.Store(next)
	if next.users != prev.users {
		a.cacheMu.Lock()
		clear(a.cache) // entries name their users file; this only frees memory
		a.cacheMu.Unlock()
	}
	a.stats.reloads.Add(1)
	a.log.Info("auth rules reloaded", "users", next.users.Len(), "aclRules", len(next.acl.Rules))
	if next.acl != prev.acl {
		// Only the ACL decides subscriptions: a users-only change (a new user) does
		// not make the server re-check every session.
		for _, fn := range a.onChange {
			fn()
		}
	}
	return true, nil
}

// OnChange registers fn to run after each reload that changed the ACL (the server
// re-checks existing subscriptions). Register before Run.
func (a *Authenticator) OnChange(fn func()) {
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	a.onChange = append(a.onChange, fn)
}

// Run checks the files every ReloadInterval until ctx is done.
func (a *Authenticator) Run(ctx context.Context) {
	t := time.NewTicker(a.cfg.ReloadInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			_, _ = a.Reload()
		}
	}
}

// Authenticate checks a CONNECT's credentials. A username must be a user of the users
// file with its password; without a username the client is anonymous, if allowed.
// Without a users file there are no users: a username is ignored and the client is
// anonymous. The password is never logged.
func (a *Authenticator) Authenticate(clientID string, hasUsername bool, username string, hasPassword bool, password []byte) (Principal, Result) {
	r := a.cur.Load()
	anonymous := Principal{Anonymous: true, ClientID: clientID}
	switch {
	case hasUsername && r.users != nil:
		good, busy := false, false
		if hasPassword {
			good, busy = a.check(r.users, username, password)
		}
		switch {
		case busy:
			a.stats.busy.Add(1)
			return Principal{}, Busy
		case good:
			a.stats.ok.Add(1)
			return Principal{Username: username, ClientID: clientID}, OK
		}
		a.stats.badCredentials.Add(1)
		return Principal{}, BadCredentials
	case a.cfg.AllowAnonymous:
		a.stats.ok.Add(1)
		return anonymous, OK
	}
	a.stats.anonymousRefused.Add(1)
	return Principal{}, AnonymousRefused
}

// AuthenticateCertificate accepts a client whose verified TLS client certificate
// names username (the listener takes it from the CN or a SAN): the certificate is the
// credential, so no password is checked and the user need not be in the users file;
// the ACL applies to username as to any user. A name ValidUsername refuses (one
// starting with '$' such as "$anonymous", "*", NUL or line breaks, surrounding
// spaces) is refused, except that ':' is allowed.
func (a *Authenticator) AuthenticateCertificate(clientID, username string) (Principal, Result) {
	// As ValidUsername, except that ':' is allowed (URIs, DNs; the name is not a line
	// of the users file).
	if ValidUsername(strings.ReplaceAll(username, ":", "_")) != nil {
		a.stats.badCredentials.Add(1)
		return Principal{}, BadCredentials
	}
	a.stats.certificates.Add(1)
	return Principal{Username: username, ClientID: clientID}, OK
}

// check verifies a password: from the cache, else with bcrypt once a slot is free.
// busy reports that no slot freed up within BcryptWait.
func (a *Authenticator) check(u *Users, name string, password []byte) (good, busy bool) {
	mac := hmac.New(sha256.New, a.cacheKey[:])
	mac.Write([]byte(name))
	mac.Write([]byte{0})
	mac.Write(password)
	var sum [32]byte
	copy(sum[:], mac.Sum(nil))
	a.cacheMu.Lock()
	known, ok := a.cache[name]
	a.cacheMu.Unlock()
	if ok && known.users == u && hmac.Equal(known.mac[:], sum[:]) {
		return true, false
	}
	wait := time.NewTimer(a.cfg.BcryptWait)
	defer wait.Stop()
	select {
	case a.bcryptSlots <- struct{}{}:
	case <-wait.C:
		return false, true
	}
	good = u.Check(name, password)
	<-a.bcryptSlots
	if good {
		a.cacheMu.Lock()
		a.cache[name] = verified{mac: sum, users: u}
		a.cacheMu.Unlock()
	}
	return good, false
}

// verified is a password that passed bcrypt against one users file.
type verified struct {
	mac   [32]byte
	users *Users // the users file it was verified against: a hit needs the same one
}

// CanPublish decides whether p may publish to topic t; a refusal is counted.
func (a *Authenticator) CanPublish(p Principal, t string) bool {
	if a.cur.Load().acl.CanPublish(p, t) {
		return true
	}
	a.stats.deniedPublish.Add(1)
	return false
}

// CanWill decides whether p's will may be published to topic t; a refusal is counted.
func (a *Authenticator) CanWill(p Principal, t string) bool {
	if a.cur.Load().acl.CanPublish(p, t) {
		return true
	}
	a.stats.deniedWill.Add(1)
	return false
}

// CanSubscribe decides whether p may subscribe to filter f (without any
// "$share/group/" prefix); a refusal is counted.
func (a *Authenticator) CanSubscribe(p Principal, f string) bool {
	if a.cur.Load().acl.CanSubscribe(p, f) {
		return true
	}
	a.stats.deniedSubscribe.Add(1)
	return false
}

// StillAllowed re-checks an existing subscription after a reload; a subscription
// that is no longer allowed is counted as revoked (not as a denied SUBSCRIBE).
func (a *Authenticator) StillAllowed(p Principal, f string) bool {
	if a.cur.Load().acl.CanSubscribe(p, f) {
		return true
	}
	a.stats.revoked.Add(1)
	return false
}

// MayRead reports whether p may receive a message on topic t (it could subscribe to
// exactly t). Not counted: it judges deliveries a session already holds.
func (a *Authenticator) MayRead(p Principal, t string) bool {
	return a.cur.Load().acl.CanSubscribe(p, t)
}

// OwnershipEnforced reports whether client IDs belong to the user that created their
// session.
func (a *Authenticator) OwnershipEnforced() bool { return a.cfg.ClientIDOwnership }

// CountClientIDRefused counts a CONNECT refused because the client ID's session
// belongs to another user.
func (a *Authenticator) CountClientIDRefused() { a.stats.clientIDRefused.Add(1) }

// Stats returns the counters.
func (a *Authenticator) Stats() Stats {
	r := a.cur.Load()
	return Stats{
		Connects: map[string]uint64{"ok": a.stats.ok.Load(), "bad_credentials": a.stats.badCredentials.Load(),
			"anonymous_refused": a.stats.anonymousRefused.Load(), "client_id_owned": a.stats.clientIDRefused.Load(),
			"busy": a.stats.busy.Load(), "certificate": a.stats.certificates.Load()},
		Denied: map[string]uint64{"publish": a.stats.deniedPublish.Load(), "subscribe": a.stats.deniedSubscribe.Load(),
			"will": a.stats.deniedWill.Load()},
		Reloads: a.stats.reloads.Load(), ReloadErrors: a.stats.reloadErrors.Load(), RevokedSubscriptions: a.stats.revoked.Load(),
		Users: r.users.Len(), Rules: len(r.acl.Rules),
	}
}
