// Command mqttd is the mqtt-operator MQTT broker.
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/mqtt-operator/mqtt-operator/broker/api"
	"github.com/mqtt-operator/mqtt-operator/broker/apiv1"
	"github.com/mqtt-operator/mqtt-operator/broker/auth"
	"github.com/mqtt-operator/mqtt-operator/broker/cluster"
	"github.com/mqtt-operator/mqtt-operator/broker/config"
	"github.com/mqtt-operator/mqtt-operator/broker/dashboard"
	"github.com/mqtt-operator/mqtt-operator/broker/listener"
	"github.com/mqtt-operator/mqtt-operator/broker/server"
	"github.com/mqtt-operator/mqtt-operator/broker/session"
	"github.com/mqtt-operator/mqtt-operator/broker/store"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// Exit codes.
const (
	exitOK     = 0
	exitFailed = 1
	exitConfig = 2
	// The store cannot be used; mqttd never starts without its state. The operator
	// tells these apart from other failures and from each other (docs/clustering.md).
	// exitStore: it cannot be opened or read (an I/O error, a corrupt file, permissions).
	exitStore = 3
	// exitStoreFull: its volume has no space left.
	exitStoreFull = 4
	// exitStoreFormat: it was written by a newer mqttd (store.ErrFormat).
	exitStoreFormat = 5
)

// errStore marks store failures for the exit code.
var errStore = errors.New("store")

// errAuth marks users or ACL files that cannot be loaded: a configuration error.
var errAuth = errors.New("auth")

// errConfig marks a setting found wrong only when it is used (a token or cookie file
// that is missing or too short): the configuration exit code, like config.Load's.
var errConfig = errors.New("configuration")

func main() {
	os.Exit(run(os.Args[1:], os.Environ(), os.Stdout, os.Stderr))
}

func run(args, environ []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "ctl" {
		return runCtl(args[1:], environ, stdout, stderr)
	}
	if len(args) > 0 && args[0] == "passwd" {
		return runPasswd(args[1:], os.Stdin, stdout, stderr)
	}
	cfg, err := config.Load(args, environ, stdout)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "mqttd: %v\n", err)
		return exitConfig
	}
	log := newLogger(cfg.Log, stderr)
	applyMemoryLimit(environ, cgroupMemoryFiles, log)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := serve(ctx, cfg, log); err != nil {
		log.Error("mqttd failed", "error", err)
		if errors.Is(err, errStore) {
			return storeExitCode(err)
		}
		if errors.Is(err, errAuth) || errors.Is(err, errConfig) {
			return exitConfig
		}
		return exitFailed
	}
	return exitOK
}

// storeExitCode is the exit code of a store failure.
func storeExitCode(err error) int {
	switch {
	case errors.Is(err, store.ErrFormat):
		return exitStoreFormat
	case errors.Is(err, syscall.ENOSPC):
		return exitStoreFull
	}
	return exitStore
}

func newLogger(c config.Log, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.Level)) // validated by config
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func serverOptions(cfg config.Config, log *slog.Logger) server.Options {
	l := cfg.Limits
	policy := session.DropNewest
	if l.DropPolicy == "drop-oldest" {
		policy = session.DropOldest
	}
	return server.Options{
		MaxPacketSize:     l.MaxPacketSize,
		ReceiveMaximum:    l.ReceiveMaximum,
		MaxInflight:       l.MaxInflight,
		MaxQueued:         l.MaxQueued,
		DropPolicy:        policy,
		MaxKeepAlive:      l.MaxKeepAlive,
		ConnectTimeout:    time.Duration(l.ConnectTimeout),
		TopicAliasMaximum: l.TopicAliasMaximum,
		MaxSessionExpiry:  l.MaxSessionExpiry,
		MaxConnections:    l.MaxConnections,
		SysInterval:       time.Duration(cfg.SysInterval),
		Logger:            log,
		Version:           version,

		// Abuse limits.
		MaxConnectionsPerListener: l.MaxConnectionsPerListener,
		ConnectionRate:            l.ConnectionRate,
		ConnectionBurst:           l.ConnectionBurst,
		MaxQueuedBytes:            l.MaxQueuedBytes,
		MaxRetained:               l.MaxRetained,
		MaxRetainedBytes:          l.MaxRetainedBytes,
		MaxSubscriptions:          l.MaxSubscriptions,
		MaxTopicLength:            l.MaxTopicLength,
		MaxTopicLevels:            l.MaxTopicLevels,
		PublishRate:               l.PublishRate,
		PublishByteRate:           l.PublishByteRate,
	}
}

// serve runs the broker until ctx is canceled (SIGTERM), then shuts down gracefully.
func serve(ctx context.Context, cfg config.Config, log *slog.Logger) error {
	opts := serverOptions(cfg, log)
	authn, err := auth.New(auth.Config{AllowAnonymous: cfg.Auth.AllowAnonymous, UsersFile: cfg.Auth.UsersFile,
		ACLFile: cfg.Auth.ACLFile, ClientIDOwnership: ownership(cfg.Auth), ReloadInterval: time.Duration(cfg.Auth.ReloadInterval),
		BcryptWait: time.Duration(cfg.Limits.ConnectTimeout), Logger: log.With("component", "auth")})
	if err != nil {
		return fmt.Errorf("%w: %w", errAuth, err)
	}
	opts.Auth = authn
	log.Info("auth", "allowAnonymous", cfg.Auth.AllowAnonymous, "users", authn.Stats().Users, "aclRules", authn.Stats().Rules,
		"clientIDOwnership", ownership(cfg.Auth))
	if cfg.Store.Dir != "" {
		st, err := store.OpenPebble(cfg.Store.Dir, log)
		if err != nil {
			return fmt.Errorf("%w: %w", errStore, err)
		}
		defer func() {
			if err := st.Close(); err != nil {
				log.Error("closing the store", "error", err)
			}
		}()
		log.Info("store opened", "dir", cfg.Store.Dir)
		opts.Store = st
	}
	srv, err := server.New(opts)
	if err != nil {
		return fmt.Errorf("%w: %w", errStore, err) // New fails only when it cannot restore from the store
	}
	// Reloads re-check sessions and may write them: they end before the store closes
	// (this defer runs before the store's).
	reloadCtx, stopReloads := context.WithCancel(ctx)
	var reloads sync.WaitGroup
	reloads.Add(2)
	go func() { defer reloads.Done(); authn.Run(reloadCtx) }()
	go func() { defer reloads.Done(); reloadOnHangup(reloadCtx, authn) }()
	defer func() { stopReloads(); reloads.Wait() }()
	// The cluster comes before the listeners: a client's first connect may need it.
	node, clusterCert, err := startCluster(ctx, cfg, srv, opts.Store, log)
	if err != nil {
		return err
	}
	if node != nil {
		defer node.Close()
	}
	errc := make(chan error, 8)
	wsCtx, cancelWS := context.WithCancel(context.Background())
	defer cancelWS()
	running := 0
	clientListeners, err := openListeners(cfg, log)
	if err != nil {
		return err
	}
	for _, cl := range clientListeners {
		running++
		switch name := cl.Name(); name {
		case "websocket", "wss":
			go func() {
				errc <- listener.ServeWebSocket(wsCtx, cl, srv, listener.WebSocketOptions{Origins: cfg.Origins(),
					PrepareTimeout: time.Duration(cfg.Limits.ConnectTimeout), Log: log})
			}()
		default:
			// The PROXY header and the TLS handshake run on the connection's goroutine
			// under the server's connect timeout: one that does not finish in time is
			// closed.
			go func() { errc <- srv.ServeListener(cl, name) }()
		}
	}
	token, err := readToken(cfg.API.TokenFile)
	if err != nil {
		return err
	}
	var dash *dashboard.Dashboard
	apiOpts := api.Options{Token: token, Version: version, Auth: authn, Listeners: clientListeners, ClusterCert: clusterCert,
		NodeName: cfg.Cluster.NodeName, Logger: log}
	serveHTTP := func(hs *http.Server, l net.Listener) {
		running++
		go func() {
			if err := hs.Serve(l); !errors.Is(err, http.ErrServerClosed) {
				errc <- err
				return
			}
			errc <- nil
		}()
	}
	var dashSrv *http.Server
	if cfg.Dashboard.Listen != "" {
		l, https, err := listenHTTP("dashboard", cfg.Dashboard.Listen, cfg.Dashboard.TLSCertFile, cfg.Dashboard.TLSKeyFile, log)
		if err != nil {
			return err
		}
		dash = dashboard.New(dashboard.Options{UsernameFile: cfg.Dashboard.UsernameFile, PasswordFile: cfg.Dashboard.PasswordFile,
			Secret: token, Management: api.Management(srv, node, apiOpts), Watch: srv.Watch, Logger: log})
		apiOpts.Dashboard = dash
		log.Info("listening", "listener", "dashboard", "address", l.Addr().String(), "https", https,
			"defaultCredentials", cfg.Dashboard.PasswordFile == "")
		dashSrv = &http.Server{Handler: dash, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, IdleTimeout: time.Minute}
		serveHTTP(dashSrv, l)
	}
	var httpSrv *http.Server
	if cfg.API.Listen != "" {
		l, https, err := listenHTTP("api", cfg.API.Listen, cfg.API.TLSCertFile, cfg.API.TLSKeyFile, log)
		if err != nil {
			return err
		}
		log.Info("listening", "listener", "api", "address", l.Addr().String(), "https", https)
		httpSrv = &http.Server{Handler: api.Handler(srv, node, apiOpts), ReadHeaderTimeout: 10 * time.Second,
			IdleTimeout: time.Minute} // an idle keep-alive connection does not stay forever
		serveHTTP(httpSrv, l)
	}
	log.Info("mqttd started", "version", version)
	var serveErr error
	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case serveErr = <-errc:
		running--
		log.Error("listener stopped", "error", serveErr)
	}
	cancelWS()
	sctx, cancel := context.WithTimeout(context.Background(), time.Duration(cfg.ShutdownTimeout))
	defer cancel()
	// The API stays up while clients drain, answering /readyz with 503.
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("shutdown timed out; connections were closed", "error", err)
	}
	if httpSrv != nil {
		_ = httpSrv.Shutdown(sctx)
	}
	if dashSrv != nil {
		_ = dashSrv.Shutdown(sctx)
	}
	for ; running > 0; running-- {
		if err := <-errc; err != nil && !errors.Is(err, server.ErrServerClosed) && serveErr == nil {
			serveErr = err
		}
	}
	log.Info("mqttd stopped")
	return serveErr
}

// listenHTTP opens an HTTP listener on addr: over TLS when certFile is set (the pair
// read again when the files change). https says which.
func listenHTTP(name, addr, certFile, keyFile string, log *slog.Logger) (l net.Listener, https bool, err error) {
	if l, err = net.Listen("tcp", addr); err != nil {
		return nil, false, fmt.Errorf("%s listener: %w", name, err)
	}
	if certFile == "" {
		return l, false, nil
	}
	cert, err := listener.NewCertReloader(certFile, keyFile, log)
	if err != nil {
		_ = l.Close()
		return nil, false, fmt.Errorf("%s listener: %w", name, err)
	}
	return tls.NewListener(l, &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: cert.GetCertificate}), true, nil
}

// openListeners opens the client listeners the configuration asks for: each wrapped
// for its PROXY header and TLS (listener.Wrap), with its TLS certificate loaded.
func openListeners(cfg config.Config, log *slog.Logger) (out []*listener.Listener, err error) {
	defer func() {
		if err != nil {
			for _, l := range out {
				_ = l.Close()
			}
		}
	}()
	lc := cfg.Listeners
	wssCert, wssKey := lc.WSSFiles()
	for _, d := range []struct {
		name, addr, cert, key string
	}{
		{"tcp", lc.TCP, "", ""},
		{"mqtts", lc.MQTTS, lc.MQTTSCertFile, lc.MQTTSKeyFile},
		{"websocket", lc.WebSocket, "", ""},
		{"wss", lc.WSS, wssCert, wssKey},
	} {
		if d.addr == "" {
			continue
		}
		var t *listener.TLS
		if d.cert != "" {
			cert, err := listener.NewCertReloader(d.cert, d.key, log)
			if err != nil {
				return out, fmt.Errorf("%s listener: %w", d.name, err)
			}
			t, err = listener.NewTLS(listener.TLSSettings{Cert: cert, MinVersion: lc.TLSMinVersion,
				CipherSuites: lc.TLSCipherSuites, ClientCerts: lc.TLSClientCerts, ClientCAFile: lc.TLSClientCAFile,
				UsernameFrom: lc.TLSUsernameFrom})
			if err != nil {
				return out, fmt.Errorf("%w: %s listener: %w", errConfig, d.name, err)
			}
		}
		l, err := net.Listen("tcp", d.addr)
		if err != nil {
			return out, fmt.Errorf("%s listener: %w", d.name, err)
		}
		proxied := lc.Proxied(d.name)
		out = append(out, listener.Wrap(l, listener.Options{Name: d.name, ProxyProtocol: proxied, TLS: t, Log: log}))
		attrs := []any{"listener", d.name, "address", l.Addr().String(), "proxyProtocol", proxied}
		if t != nil {
			attrs = append(attrs, "tlsMinVersion", lc.TLSMinVersion, "clientCertificates", lc.TLSClientCerts,
				"usernameFrom", lc.TLSUsernameFrom)
		}
		log.Info("listening", attrs...)
	}
	return out, nil
}

// ownership says whether client IDs belong to their session's user: "auto" is on
// when anonymous clients are refused.
func ownership(a config.Auth) bool {
	return a.ClientIDOwnership == "on" || (a.ClientIDOwnership == "auto" && !a.AllowAnonymous)
}

// reloadOnHangup re-reads the users and ACL files on SIGHUP.
func reloadOnHangup(ctx context.Context, a *auth.Authenticator) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			_, _ = a.Reload()
		}
	}
}

// minSecret is the least length of the API token and of the cluster cookie.
const minSecret = 16

// readToken reads the API bearer token (empty file name: no token, /api/v1 off).
func readToken(file string) (string, error) {
	if file == "" {
		return "", nil
	}
	raw, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("%w: %s: %w", errConfig, config.Name("api.token_file"), err)
	}
	t := strings.TrimSpace(string(raw))
	if len(t) < minSecret {
		return "", fmt.Errorf("%w: %s: the token in %s must be at least %d characters (it has %d)",
			errConfig, config.Name("api.token_file"), file, minSecret, len(t))
	}
	return t, nil
}

// startCluster opens the cluster port, starts the node's raft and bootstraps or joins
// through the seeds when the config asks; it returns nil without clustering.
func startCluster(ctx context.Context, c config.Config, srv *server.Server, st store.Store, log *slog.Logger) (_ *cluster.Node, _ *listener.CertReloader, err error) {
	cfg := c.Cluster
	if cfg.Listen == "" {
		return nil, nil, nil
	}
	pebbleStore, ok := st.(*store.Pebble)
	if !ok {
		return nil, nil, fmt.Errorf("%w: clustering needs %s", errConfig, config.Name("store.dir")) // config.Load checks it first
	}
	raw, err := os.ReadFile(cfg.CookieFile)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %s: %w", errConfig, config.Name("cluster.cookie_file"), err)
	}
	if cookie := bytes.TrimSpace(raw); len(cookie) < minSecret {
		return nil, nil, fmt.Errorf("%w: %s: the cookie in %s must be at least %d bytes (it has %d)",
			errConfig, config.Name("cluster.cookie_file"), cfg.CookieFile, minSecret, len(cookie))
	}
	name := cfg.NodeName
	if name == "" {
		if name, err = os.Hostname(); err != nil {
			return nil, nil, fmt.Errorf("cluster node name: %w", err)
		}
	}
	auth, err := cluster.NewAuthenticator(name, bytes.TrimSpace(raw), 10*time.Second)
	if err != nil {
		return nil, nil, fmt.Errorf("cluster: %w", err)
	}
	tlsCfg, clusterCert, err := clusterTLS(cfg, log)
	if err != nil {
		return nil, nil, err
	}
	l, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, nil, fmt.Errorf("cluster listener: %w", err)
	}
	advertise := advertiseAddr(cfg.Advertise, name, l.Addr().String())
	snapDir := filepath.Join(c.Store.Dir, "raft-snapshots")
	if err := os.MkdirAll(snapDir, 0o750); err != nil {
		_ = l.Close()
		return nil, nil, fmt.Errorf("%w: %w", errStore, err)
	}
	node, err := cluster.NewNode(cluster.Config{Name: name, Advertise: advertise, Store: pebbleStore,
		SnapshotDir: snapDir, Auth: auth, Server: srv, TLS: tlsCfg, Logger: log.With("component", "cluster")})
	if err != nil {
		_ = l.Close()
		return nil, nil, fmt.Errorf("%w: %w", errStore, err)
	}
	srv.SetCluster(node)
	log.Info("listening", "listener", "cluster", "address", l.Addr().String(), "node", name, "advertise", advertise)
	go func() {
		if err := node.Serve(l); err != nil {
			log.Error("cluster listener stopped", "error", err)
		}
	}()
	info := node.Info()
	log.Info("cluster state", "storeState", info.StoreState, "clusterID", info.ClusterID)
	if cfg.Bootstrap && info.StoreState == apiv1.StoreEmpty {
		if err := node.Bootstrap(); err != nil {
			node.Close()
			return nil, nil, fmt.Errorf("bootstrapping the cluster: %w", err)
		}
	}
	var seeds []string
	for _, seed := range strings.Split(cfg.Seeds, ",") {
		if seed = strings.TrimSpace(seed); seed != "" {
			seeds = append(seeds, seed)
		}
	}
	if len(seeds) > 0 && info.StoreState == apiv1.StoreEmpty && !cfg.Bootstrap {
		go func() {
			if err := node.JoinSeeds(ctx, seeds, 2*time.Second); err != nil && ctx.Err() == nil {
				log.Warn("could not join the cluster through the seeds", "seeds", cfg.Seeds, "error", err)
			}
		}()
	}
	return node, clusterCert, nil
}

// clusterTLS loads the cluster port's TLS settings (nil without TLS): mutual TLS 1.3,
// both ends' certificates verified against the cluster's CA. The node's certificate
// is read again when its files change (a renewal reaches new links without a
// restart).
func clusterTLS(cfg config.Cluster, log *slog.Logger) (*tls.Config, *listener.CertReloader, error) {
	if cfg.TLSCertFile == "" {
		return nil, nil, nil
	}
	cert, err := listener.NewCertReloader(cfg.TLSCertFile, cfg.TLSKeyFile, log)
	if err != nil {
		return nil, nil, fmt.Errorf("cluster TLS certificate: %w", err)
	}
	caPEM, err := os.ReadFile(cfg.TLSCAFile)
	if err != nil {
		return nil, nil, fmt.Errorf("cluster TLS CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, nil, fmt.Errorf("cluster TLS CA: no certificate in %s", cfg.TLSCAFile)
	}
	return &tls.Config{GetCertificate: cert.GetCertificate,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert.GetCertificate(nil) },
		RootCAs:              pool, ClientCAs: pool, MinVersion: tls.VersionTLS13}, cert, nil
}

// advertiseAddr is the address other nodes dial: the configured one, else the bound
// listen address, with the node name as host when it listens on every interface.
func advertiseAddr(configured, name, bound string) string {
	if configured != "" {
		return configured
	}
	host, port, err := net.SplitHostPort(bound)
	if err != nil {
		return bound
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		return net.JoinHostPort(name, port)
	}
	return bound
}
