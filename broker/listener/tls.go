package listener

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// CertReloader serves a certificate and key from two PEM files and reads them again
// when they change (checked at most once per checkEvery, on a handshake): new
// handshakes get the new certificate, connections already up keep theirs. A pair that
// does not load (a half-written renewal, a key that does not match) keeps the one in
// force, logged once per change and counted.
type CertReloader struct {
	certFile, keyFile string
	log               *slog.Logger
	checkEvery        time.Duration

	mu        sync.Mutex // guards the fields below
	cert      *tls.Certificate
	certMod   time.Time
	keyMod    time.Time
	checked   time.Time
	failedMod [2]time.Time // the file times of the last pair that failed (logged once)

	reloads  atomic.Uint64
	failures atomic.Uint64
}

// NewCertReloader loads the pair once: a pair that does not load is an error here.
func NewCertReloader(certFile, keyFile string, log *slog.Logger) (*CertReloader, error) {
	r := &CertReloader{certFile: certFile, keyFile: keyFile, log: log, checkEvery: time.Second}
	certMod, keyMod, err := r.modTimes()
	if err != nil {
		return nil, err
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("loading %s and %s: %w", certFile, keyFile, err)
	}
	r.cert, r.certMod, r.keyMod, r.checked = &cert, certMod, keyMod, time.Now()
	return r, nil
}

func (r *CertReloader) modTimes() (cert, key time.Time, err error) {
	ci, err := os.Stat(r.certFile)
	if err != nil {
		return cert, key, err
	}
	ki, err := os.Stat(r.keyFile)
	if err != nil {
		return cert, key, err
	}
	return ci.ModTime(), ki.ModTime(), nil
}

// GetCertificate is tls.Config.GetCertificate.
func (r *CertReloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if time.Since(r.checked) < r.checkEvery {
		return r.cert, nil
	}
	r.checked = time.Now()
	certMod, keyMod, err := r.modTimes()
	if err != nil || (certMod.Equal(r.certMod) && keyMod.Equal(r.keyMod)) {
		return r.cert, nil // unchanged, or being replaced: the one in force
	}
	cert, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		if r.failedMod != [2]time.Time{certMod, keyMod} {
			r.failedMod = [2]time.Time{certMod, keyMod}
			r.failures.Add(1)
			r.log.Error("the TLS certificate files changed but do not load; the previous certificate stays in use",
				"cert", r.certFile, "key", r.keyFile, "error", err)
		}
		return r.cert, nil
	}
	r.cert, r.certMod, r.keyMod = &cert, certMod, keyMod
	r.reloads.Add(1)
	r.log.Info("TLS certificate reloaded", "cert", r.certFile)
	return r.cert, nil
}

// Reloads counts the certificate reloads.
func (r *CertReloader) Reloads() uint64 { return r.reloads.Load() }

// NotAfter is when the certificate expires that a handshake would get now (zero when
// it does not parse): renewed files are read first, as for a handshake, so the
// figure follows a renewal even on a port whose connections are long-lived.
func (r *CertReloader) NotAfter() time.Time {
	c, _ := r.GetCertificate(nil)
	if c == nil || c.Leaf == nil {
		return time.Time{}
	}
	return c.Leaf.NotAfter
}

// Failures counts the changed pairs that did not load.
func (r *CertReloader) Failures() uint64 { return r.failures.Load() }

// TLSVersion parses a minimum TLS version ("1.2", "1.3").
func TLSVersion(v string) (uint16, error) {
	switch v {
	case "1.2":
		return tls.VersionTLS12, nil
	case "1.3":
		return tls.VersionTLS13, nil
	}
	return 0, fmt.Errorf("TLS version %q is not 1.2 or 1.3", v)
}

// Client certificate modes of a TLS listener.
const (
	ClientCertsNone     = "none"     // no certificate asked for
	ClientCertsOptional = "optional" // asked for; one that is sent must verify
	ClientCertsRequired = "required" // a verified certificate is needed
)

// Where a username is taken from a client certificate.
const (
	UsernameNone     = ""          // not from the certificate: the CONNECT's
	UsernameCN       = "cn"        // the subject's common name
	UsernameDN       = "dn"        // the whole subject, as in "CN=dev1,O=acme"
	UsernameSANDNS   = "san_dns"   // the first DNS name
	UsernameSANEmail = "san_email" // the first e-mail address
	UsernameSANURI   = "san_uri"   // the first URI
)

// TLSSettings are a TLS listener's settings, as in the configuration.
type TLSSettings struct {
	Cert         *CertReloader
	MinVersion   string // "1.2" or "1.3"
	CipherSuites string // comma-separated Go names of TLS 1.2 suites; empty: Go's defaults
	ClientCerts  string // none, optional or required
	ClientCAFile string // PEM bundle that client certificates must chain to
	UsernameFrom string // UsernameNone, UsernameCN, ...
}

// TLS is a client listener's TLS: Go's defaults (curves, TLS 1.3 suites) above the
// minimum version, the certificate read again when it changes, client certificates
// verified against the CA bundle.
type TLS struct {
	config       *tls.Config
	cert         *CertReloader
	usernameFrom string
}

// NewTLS checks s and builds the listener's TLS.
func NewTLS(s TLSSettings) (*TLS, error) {
	minVersion, err := TLSVersion(s.MinVersion)
	if err != nil {
		return nil, err
	}
	cfg := &tls.Config{MinVersion: minVersion, GetCertificate: s.Cert.GetCertificate}
	if s.CipherSuites != "" {
		if minVersion == tls.VersionTLS13 {
			return nil, fmt.Errorf("cipher suites are configurable for TLS 1.2 only, and the minimum version is 1.3")
		}
		if cfg.CipherSuites, err = CipherSuites(s.CipherSuites); err != nil {
			return nil, err
		}
	}
	switch s.ClientCerts {
	case ClientCertsNone, "":
		if s.UsernameFrom != UsernameNone {
			return nil, fmt.Errorf("a username from client certificates needs client certificates (optional or required)")
		}
	case ClientCertsOptional, ClientCertsRequired:
		if s.ClientCAFile == "" {
			return nil, fmt.Errorf("client certificates %s need a CA bundle to verify them", s.ClientCerts)
		}
		pem, err := os.ReadFile(s.ClientCAFile)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s holds no PEM certificate", s.ClientCAFile)
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.VerifyClientCertIfGiven
		if s.ClientCerts == ClientCertsRequired {
			cfg.ClientAuth = tls.RequireAndVerifyClientCert
		}
	default:
		return nil, fmt.Errorf("client certificates %q: not none, optional or required", s.ClientCerts)
	}
	switch s.UsernameFrom {
	case UsernameNone, UsernameCN, UsernameDN, UsernameSANDNS, UsernameSANEmail, UsernameSANURI:
	default:
		return nil, fmt.Errorf("username from %q: not cn, dn, san_dns, san_email or san_uri", s.UsernameFrom)
	}
	return &TLS{config: cfg, cert: s.Cert, usernameFrom: s.UsernameFrom}, nil
}

// CipherSuites parses comma-separated names of TLS 1.2 cipher suites; only the ones
// Go deems secure are accepted (TLS 1.3's suites are not configurable).
func CipherSuites(names string) ([]uint16, error) {
	known := map[string]uint16{}
	for _, cs := range tls.CipherSuites() {
		if slices.Contains(cs.SupportedVersions, tls.VersionTLS12) {
			known[cs.Name] = cs.ID // TLS 1.3's suites are not configurable in Go
		}
	}
	var out []uint16
	for _, n := range strings.Split(names, ",") {
		n = strings.TrimSpace(n)
		if n == "" {
			continue
		}
		id, ok := known[n]
		if !ok {
			return nil, fmt.Errorf("cipher suite %q is not one of Go's secure TLS 1.2 suites (%s)", n, strings.Join(sortedKeys(known), ", "))
		}
		out = append(out, id)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("cipher suites %q: none named", names)
	}
	return out, nil
}

func sortedKeys(m map[string]uint16) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// certUsername takes the username from a verified client certificate ("" when the
// field is empty).
func certUsername(c *x509.Certificate, from string) string {
	switch from {
	case UsernameCN:
		return c.Subject.CommonName
	case UsernameDN:
		return c.Subject.String()
	case UsernameSANDNS:
		if len(c.DNSNames) > 0 {
			return c.DNSNames[0]
		}
	case UsernameSANEmail:
		if len(c.EmailAddresses) > 0 {
			return c.EmailAddresses[0]
		}
	case UsernameSANURI:
		if len(c.URIs) > 0 {
			return c.URIs[0].String()
		}
	}
	return ""
}
