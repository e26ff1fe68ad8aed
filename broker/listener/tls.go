package listener

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
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

// ServerTLS is the TLS configuration of a client listener: Go's defaults (cipher
// suites, curves) above minVersion, the certificate from r.
func ServerTLS(r *CertReloader, minVersion uint16) *tls.Config {
	return &tls.Config{MinVersion: minVersion, GetCertificate: r.GetCertificate}
}
