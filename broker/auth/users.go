// Package auth decides who may connect to mqttd and what each client may publish and
// subscribe to: a users file of bcrypt hashes and ordered ACL rules, both reloadable
// while clients stay connected. It depends on nothing above the topic layer.
package auth

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"

	"golang.org/x/crypto/bcrypt"
)

// Users is a parsed users file: username -> bcrypt hash.
type Users struct {
	hashes map[string][]byte
	// decoy is a hash of the highest cost in the file: unknown users are checked
	// against it so that they take as long as known ones (no user enumeration).
	decoy []byte
}

// maxUsersFile bounds what ParseUsers reads (a mounted Secret is at most 1 MiB).
const maxUsersFile = 4 << 20

// ParseUsers reads a users file: one "username:bcrypt-hash" per line; blank lines and
// lines starting with '#' are skipped. Any other line that is not a valid entry makes
// the whole file invalid, so a half-written file never replaces a good one.
func ParseUsers(r io.Reader) (*Users, error) {
	u, maxCost, err := parseUsers(r)
	if err != nil {
		return nil, err
	}
	if u.decoy, err = bcrypt.GenerateFromPassword([]byte("decoy password for unknown users"), maxCost); err != nil {
		return nil, err
	}
	return u, nil
}

// CheckUsers validates a users file as ParseUsers does and returns how many users it
// lists, without preparing it for logins (no bcrypt work: cheap enough for the
// operator's every reconcile).
func CheckUsers(r io.Reader) (int, error) {
	u, _, err := parseUsers(r)
	if err != nil {
		return 0, err
	}
	return u.Len(), nil
}

func parseUsers(r io.Reader) (*Users, int, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxUsersFile+1))
	if err != nil {
		return nil, 0, err
	}
	if len(data) > maxUsersFile {
		return nil, 0, fmt.Errorf("users file larger than %d bytes", maxUsersFile)
	}
	u := &Users{hashes: make(map[string][]byte)}
	maxCost := bcrypt.MinCost
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), maxUsersFile)
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		name, hash, ok := strings.Cut(text, ":")
		if !ok {
			return nil, 0, fmt.Errorf("line %d: want username:bcrypt-hash", line)
		}
		if err := ValidUsername(name); err != nil {
			return nil, 0, fmt.Errorf("line %d: %w", line, err)
		}
		cost, err := bcryptCost(hash)
		if err != nil {
			return nil, 0, fmt.Errorf("line %d (user %q): %w", line, name, err)
		}
		if _, dup := u.hashes[name]; dup {
			return nil, 0, fmt.Errorf("line %d: user %q listed twice", line, name)
		}
		u.hashes[name] = []byte(hash)
		maxCost = max(maxCost, cost)
	}
	if err := sc.Err(); err != nil {
		return nil, 0, err
	}
	return u, maxCost, nil
}

// MaxCost is the highest bcrypt cost accepted: each CONNECT of the user (and of any
// unknown user) pays it, and 2^14 rounds already take about a second on one core.
const MaxCost = 14

// bcryptCost checks that hash is a bcrypt hash as htpasswd and mqttd passwd write it
// ($2a$, $2b$ or $2y$, two cost digits, 53 characters of salt and hash) and returns
// its cost. bcrypt.Cost alone accepts malformed prefixes with any cost.
func bcryptCost(hash string) (int, error) {
	prefixed := strings.HasPrefix(hash, "$2a$") || strings.HasPrefix(hash, "$2b$") || strings.HasPrefix(hash, "$2y$")
	if len(hash) != 60 || !prefixed || hash[6] != '$' {
		return 0, errors.New("not a bcrypt hash ($2a$, $2b$ or $2y$, 60 characters)")
	}
	cost, err := bcrypt.Cost([]byte(hash))
	if err != nil {
		return 0, fmt.Errorf("not a bcrypt hash: %w", err)
	}
	if cost > MaxCost {
		return 0, fmt.Errorf("bcrypt cost %d is above %d: every CONNECT would take seconds", cost, MaxCost)
	}
	return cost, nil
}

// ValidUsername reports why name cannot be a user of the users file, or nil. Names
// are MQTT strings without ':' (the separator), surrounding spaces, or the '$'
// prefix that ACL rules reserve ($anonymous).
func ValidUsername(name string) error {
	switch {
	case name == "":
		return errors.New("empty username")
	case strings.ContainsAny(name, ":\x00\r\n"):
		return fmt.Errorf("username %q contains ':', NUL or a line break", name)
	case strings.TrimSpace(name) != name:
		return fmt.Errorf("username %q has surrounding spaces", name)
	case strings.HasPrefix(name, "$"), name == "*":
		return fmt.Errorf("username %q is reserved (ACL rules use '*' and '$anonymous')", name)
	case len(name) > 65535:
		return errors.New("username longer than an MQTT string")
	}
	return nil
}

// Len is the number of users.
func (u *Users) Len() int {
	if u == nil {
		return 0
	}
	return len(u.hashes)
}

// Has reports whether name is a user.
func (u *Users) Has(name string) bool {
	_, ok := u.hashes[name]
	return ok
}

// Check reports whether password is the user's. An unknown user costs one bcrypt
// comparison like a known one.
func (u *Users) Check(name string, password []byte) bool {
	hash, ok := u.hashes[name]
	if !ok {
		_ = bcrypt.CompareHashAndPassword(u.decoy, password)
		return false
	}
	return bcrypt.CompareHashAndPassword(hash, password) == nil
}

// HashLine returns the users-file line for name with password, hashed with bcrypt at
// cost (bcrypt.DefaultCost when 0).
func HashLine(name string, password []byte, cost int) (string, error) {
	if err := ValidUsername(name); err != nil {
		return "", err
	}
	if len(password) == 0 {
		return "", errors.New("empty password")
	}
	if len(password) > 72 {
		return "", errors.New("password longer than 72 bytes (bcrypt's limit)")
	}
	if cost == 0 {
		cost = bcrypt.DefaultCost
	}
	if cost > MaxCost {
		return "", fmt.Errorf("bcrypt cost %d is above %d", cost, MaxCost)
	}
	h, err := bcrypt.GenerateFromPassword(password, cost)
	if err != nil {
		return "", err
	}
	return name + ":" + string(h), nil
}
