// Package config loads mqttd's configuration: defaults, then one YAML file, then
// MQTTD_* environment variables, then command-line flags (each overriding the last).
package config

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Config is mqttd's whole configuration; its YAML form is documented in
// config/mqttd/mqttd.yaml.
type Config struct {
	Listeners Listeners `yaml:"listeners"`
	API       API       `yaml:"api"`
	Dashboard Dashboard `yaml:"dashboard"`
	Store     Store     `yaml:"store"`
	Cluster   Cluster   `yaml:"cluster"`
	Log       Log       `yaml:"log"`
	Limits    Limits    `yaml:"limits"`
	Auth      Auth      `yaml:"auth"`
	// SysInterval is how often $SYS statistics are published (0 disables them).
	SysInterval Duration `yaml:"sys_interval"`
	// ShutdownTimeout bounds the graceful shutdown on SIGTERM.
	ShutdownTimeout Duration `yaml:"shutdown_timeout"`
}

// Listeners are the addresses mqttd listens on; an empty address disables a listener.
type Listeners struct {
	TCP       string `yaml:"tcp"`
	WebSocket string `yaml:"websocket"`
	// MQTTS is MQTT over TLS over TCP (usually :8883) with the certificate and key in
	// MQTTSCertFile and MQTTSKeyFile (PEM), read again when they change, so a renewed
	// certificate serves new handshakes while existing connections stay up.
	MQTTS         string `yaml:"mqtts"`
	MQTTSCertFile string `yaml:"mqtts_cert_file"`
	MQTTSKeyFile  string `yaml:"mqtts_key_file"`
	// WSS is MQTT over WebSocket over TLS (usually :8084), with its own certificate
	// and key (empty: the mqtts listener's files).
	WSS         string `yaml:"wss"`
	WSSCertFile string `yaml:"wss_cert_file"`
	WSSKeyFile  string `yaml:"wss_key_file"`
	// The settings below apply to both TLS listeners (mqtts, wss).
	// TLSMinVersion is the lowest TLS version the TLS listeners accept: "1.2" or "1.3".
	TLSMinVersion string `yaml:"tls_min_version"`
	// TLSCipherSuites are the TLS 1.2 cipher suites allowed (comma-separated Go names,
	// e.g. TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256); empty: Go's defaults. TLS 1.3's
	// suites are not configurable.
	TLSCipherSuites string `yaml:"tls_cipher_suites"`
	// TLSClientCerts: "none" (not asked for), "optional" (one that is sent must
	// verify against TLSClientCAFile) or "required".
	TLSClientCerts  string `yaml:"tls_client_certs"`
	TLSClientCAFile string `yaml:"tls_client_ca_file"`
	TLSUsernameFrom string `yaml:"tls_username_from"`
	// ProxyProtocol lists the listeners (tcp, mqtts, websocket, wss) whose
	// connections start with a PROXY protocol v1 or v2 header, comma-separated; such
	// a listener refuses connections without one.
	ProxyProtocol string `yaml:"proxy_protocol"`
	// WebSocketOrigins are the browser origins the WebSocket listeners accept
	// (comma-separated host patterns such as "*.example.com", matched against the
	// origin's host name; "*" for any). Empty: any when anonymous clients are allowed
	// and no client certificates are asked for, else only the page's own host. A
	// client that sends no Origin (not a browser) is always accepted.
	WebSocketOrigins string `yaml:"websocket_origins"`
}

// WSSFiles are the wss listener's certificate and key files: its own, else mqtts's.
func (l Listeners) WSSFiles() (cert, key string) {
	if l.WSSCertFile != "" || l.WSSKeyFile != "" {
		return l.WSSCertFile, l.WSSKeyFile
	}
	return l.MQTTSCertFile, l.MQTTSKeyFile
}

// ListenerNames are the client listeners, as proxy_protocol and the metrics name them.
var ListenerNames = []string{"tcp", "mqtts", "websocket", "wss"}

// Proxied reports whether the listener name has the PROXY protocol on.
func (l Listeners) Proxied(name string) bool {
	for _, n := range strings.Split(l.ProxyProtocol, ",") {
		if strings.TrimSpace(n) == name {
			return true
		}
	}
	return false
}

// Origins is the WebSocket Origin allow list in force (see WebSocketOrigins).
func (c Config) Origins() []string {
	if c.Listeners.WebSocketOrigins == "" {
		// Any origin only when there is nothing a page could borrow from a visitor's
		// browser: anonymous access on and no client certificates (a browser presents
		// an installed certificate to any page that opens wss://).
		if c.Auth.AllowAnonymous && c.Listeners.TLSClientCerts == "none" {
			return []string{"*"}
		}
		return nil
	}
	var out []string
	for _, o := range strings.Split(c.Listeners.WebSocketOrigins, ",") {
		if o = strings.TrimSpace(o); o != "" {
			out = append(out, o)
		}
	}
	return out
}

// API configures the HTTP API: /healthz, /readyz and /metrics (Prometheus).
type API struct {
	Listen    string `yaml:"listen"`     // empty: off
	TokenFile string `yaml:"token_file"` // bearer token of /api/v1; empty: /api/v1 is off
	// TLSCertFile and TLSKeyFile serve the API over HTTPS (both or neither), read
	// again when they change.
	TLSCertFile string `yaml:"tls_cert_file"`
	TLSKeyFile  string `yaml:"tls_key_file"`
}

// Dashboard is the web dashboard: a login, then the management API's views
// (broker/dashboard).
type Dashboard struct {
	Listen string `yaml:"listen"` // usually :18083; empty: off
	// UsernameFile and PasswordFile hold the administrator's credentials, read at
	// every login; empty: admin/public, with a banner until they are set.
	UsernameFile string `yaml:"username_file"`
	PasswordFile string `yaml:"password_file"`
	// TLSCertFile and TLSKeyFile serve the dashboard over HTTPS (both or neither),
	// read again when they change; the session cookie is then Secure.
	TLSCertFile string `yaml:"tls_cert_file"`
	TLSKeyFile  string `yaml:"tls_key_file"`
}

// Store says where the node keeps its durable state (sessions, retained messages).
type Store struct {
	Dir string `yaml:"dir"` // empty: in memory, lost when mqttd stops
}

// Cluster configures the cluster port: nodes authenticate each other with the cookie,
// then keep membership (raft), routes and forwarded messages over these connections
// (docs/clustering.md).
type Cluster struct {
	Listen     string `yaml:"listen"`      // cluster port address; empty: no clustering
	CookieFile string `yaml:"cookie_file"` // file holding the cluster cookie (>= 16 bytes)
	NodeName   string `yaml:"node_name"`   // this node's name; empty: the host name
	Seeds      string `yaml:"seeds"`       // comma-separated host:port of nodes to join through
	Advertise  string `yaml:"advertise"`   // address other nodes dial; empty: the listen address
	Bootstrap  bool   `yaml:"bootstrap"`   // bootstrap a new cluster when the store holds none
	// TLS on the cluster port (all three or none): this node's certificate and key, and
	// the CA that signed every node's certificate. Both ends verify each other.
	TLSCertFile string `yaml:"tls_cert_file"`
	TLSKeyFile  string `yaml:"tls_key_file"`
	TLSCAFile   string `yaml:"tls_ca_file"`
}

// Auth configures client authentication and authorization. The users file and the
// ACL file are read again when they change (polled every ReloadInterval, which also
// sees Kubernetes' symlink swap of a mounted Secret or ConfigMap) and on SIGHUP; a
// file that does not parse keeps the rules in force.
type Auth struct {
	// AllowAnonymous lets clients in without a username.
	AllowAnonymous bool `yaml:"allow_anonymous"`
	// UsersFile holds one "username:bcrypt-hash" per line (empty: no users).
	UsersFile string `yaml:"users_file"`
	// ACLFile holds the ordered ACL rules (YAML; empty: everyone may do everything).
	ACLFile string `yaml:"acl_file"`
	// ClientIDOwnership: "on" lets a client take over only a client ID whose session
	// belongs to the same user; "off" lets anyone; "auto" is on when anonymous
	// clients are refused.
	ClientIDOwnership string `yaml:"client_id_ownership"`
	// ReloadInterval is how often the users and ACL files are checked for changes.
	ReloadInterval Duration `yaml:"reload_interval"`
}

// Log configures logging.
type Log struct {
	Level  string `yaml:"level"`  // debug, info, warn, error
	Format string `yaml:"format"` // text or json
}

// Limits bound what clients may do. The defaults protect a node of 2 cores; 0 turns
// a limit off (except where Validate says otherwise).
type Limits struct {
	MaxPacketSize     uint32   `yaml:"max_packet_size"`
	ReceiveMaximum    uint16   `yaml:"receive_maximum"`
	MaxInflight       int      `yaml:"max_inflight"`
	MaxQueued         int      `yaml:"max_queued_messages"`
	MaxQueuedBytes    int      `yaml:"max_queued_bytes"`  // payload bytes per session
	DropPolicy        string   `yaml:"queue_drop_policy"` // drop-newest or drop-oldest
	MaxKeepAlive      uint16   `yaml:"max_keepalive"`
	ConnectTimeout    Duration `yaml:"connect_timeout"`
	TopicAliasMaximum uint16   `yaml:"topic_alias_maximum"`
	MaxSessionExpiry  uint32   `yaml:"max_session_expiry"`
	MaxConnections    int      `yaml:"max_connections"`
	// MaxConnectionsPerListener caps each listener (tcp, websocket) on its own.
	MaxConnectionsPerListener int `yaml:"max_connections_per_listener"`
	// ConnectionRate is the new connections per second each listener accepts, in
	// bursts of up to ConnectionBurst; beyond it, accepting waits.
	ConnectionRate  int `yaml:"connection_rate"`
	ConnectionBurst int `yaml:"connection_burst"`
	// MaxRetained and MaxRetainedBytes (topic + payload) bound the node's retained
	// messages, and with them the cluster's raft log and snapshots.
	MaxRetained      int `yaml:"max_retained_messages"`
	MaxRetainedBytes int `yaml:"max_retained_bytes"`
	MaxSubscriptions int `yaml:"max_subscriptions"` // per client
	MaxTopicLength   int `yaml:"max_topic_length"`  // bytes, names and filters
	MaxTopicLevels   int `yaml:"max_topic_levels"`
	// PublishRate (messages) and PublishByteRate (payload bytes) per second and
	// client; beyond them the client is read more slowly, nothing is dropped.
	PublishRate     int `yaml:"publish_rate"`
	PublishByteRate int `yaml:"publish_byte_rate"`
}

// Duration is a time.Duration written as "10s" in YAML.
type Duration time.Duration

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML implements yaml.Marshaler.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// Default returns the built-in configuration.
func Default() Config {
	return Config{
		Listeners: Listeners{TCP: ":1883", WebSocket: ":8083", TLSMinVersion: "1.2", TLSClientCerts: "none"},
		API:       API{Listen: ":8080"},
		Log:       Log{Level: "info", Format: "text"},
		Limits: Limits{
			MaxPacketSize:     1 << 20,
			ReceiveMaximum:    1024,
			MaxInflight:       1024,
			MaxQueued:         10000,
			MaxQueuedBytes:    4 << 20,
			DropPolicy:        "drop-newest",
			ConnectTimeout:    Duration(10 * time.Second),
			TopicAliasMaximum: 1024,
			// A week: without a cap, every client ID ever used with a persistent
			// session would be kept forever (3.1.1 persistent sessions never expire).
			MaxSessionExpiry: 7 * 24 * 3600,
			MaxConnections:   10000,
			ConnectionRate:   200,
			ConnectionBurst:  500,
			MaxRetained:      100000,
			MaxRetainedBytes: 64 << 20,
			MaxSubscriptions: 100,
			MaxTopicLength:   1024,
			MaxTopicLevels:   32,
			PublishRate:      10000,
			PublishByteRate:  10 << 20,
		},
		Auth:            Auth{AllowAnonymous: true, ClientIDOwnership: "auto", ReloadInterval: Duration(2 * time.Second)},
		SysInterval:     Duration(10 * time.Second),
		ShutdownTimeout: Duration(10 * time.Second),
	}
}

// setting is one configuration key, settable from the environment and flags.
type setting struct {
	key  string // YAML path, e.g. limits.max_packet_size
	help string
	set  func(c *Config, v string) error
	get  func(c *Config) string
}

func (s setting) env() string {
	return "MQTTD_" + strings.ToUpper(strings.NewReplacer(".", "_").Replace(s.key))
}

func (s setting) flag() string { return strings.ReplaceAll(s.key, "_", "-") }

// Name spells a setting the way each source does, for error messages: the YAML key,
// the flag and the environment variable, as in
// "cluster.cookie_file (--cluster.cookie-file, MQTTD_CLUSTER_COOKIE_FILE)".
func Name(key string) string {
	s := setting{key: key}
	return fmt.Sprintf("%s (--%s, %s)", key, s.flag(), s.env())
}

func str(key, help string, p func(*Config) *string) setting {
	return setting{key, help,
		func(c *Config, v string) error { *p(c) = v; return nil },
		func(c *Config) string { return *p(c) }}
}

func integer[T int | uint16 | uint32](key, help string, p func(*Config) *T) setting {
	return setting{key, help,
		func(c *Config, v string) error {
			var zero T
			bits := 63 // int: non-negative values of a 64-bit int
			switch any(zero).(type) {
			case uint16:
				bits = 16
			case uint32:
				bits = 32
			}
			n, err := strconv.ParseUint(v, 10, bits)
			if err != nil {
				return fmt.Errorf("%s: %q is not a valid non-negative %d-bit integer", key, v, bits)
			}
			*p(c) = T(n)
			return nil
		},
		func(c *Config) string { return strconv.FormatInt(int64(*p(c)), 10) }}
}

func boolean(key, help string, p func(*Config) *bool) setting {
	return setting{key, help,
		func(c *Config, v string) error {
			b, err := strconv.ParseBool(v)
			if err != nil {
				return fmt.Errorf("%s: %q is not true or false", key, v)
			}
			*p(c) = b
			return nil
		},
		func(c *Config) string { return strconv.FormatBool(*p(c)) }}
}

func duration(key, help string, p func(*Config) *Duration) setting {
	return setting{key, help,
		func(c *Config, v string) error {
			d, err := time.ParseDuration(v)
			if err != nil {
				return fmt.Errorf("%s: %w", key, err)
			}
			*p(c) = Duration(d)
			return nil
		},
		func(c *Config) string { return time.Duration(*p(c)).String() }}
}

var settings = []setting{
	str("listeners.tcp", "MQTT over TCP listen address (empty: off)", func(c *Config) *string { return &c.Listeners.TCP }),
	str("listeners.websocket", "MQTT over WebSocket listen address (empty: off)", func(c *Config) *string { return &c.Listeners.WebSocket }),
	str("listeners.mqtts", "MQTT over TLS listen address, usually :8883 (empty: off; needs mqtts_cert_file and mqtts_key_file)", func(c *Config) *string { return &c.Listeners.MQTTS }),
	str("listeners.mqtts_cert_file", "PEM certificate (chain) of the mqtts listener, read again when it changes", func(c *Config) *string { return &c.Listeners.MQTTSCertFile }),
	str("listeners.mqtts_key_file", "PEM private key of the mqtts listener, read again when it changes", func(c *Config) *string { return &c.Listeners.MQTTSKeyFile }),
	str("listeners.wss", "MQTT over WebSocket over TLS listen address, usually :8084 (empty: off)", func(c *Config) *string { return &c.Listeners.WSS }),
	str("listeners.wss_cert_file", "PEM certificate (chain) of the wss listener, read again when it changes (empty: mqtts_cert_file)", func(c *Config) *string { return &c.Listeners.WSSCertFile }),
	str("listeners.wss_key_file", "PEM private key of the wss listener, read again when it changes (empty: mqtts_key_file)", func(c *Config) *string { return &c.Listeners.WSSKeyFile }),
	str("listeners.tls_min_version", "lowest TLS version the TLS listeners accept: 1.2 or 1.3", func(c *Config) *string { return &c.Listeners.TLSMinVersion }),
	str("listeners.tls_cipher_suites", "TLS 1.2 cipher suites allowed, comma-separated Go names (empty: Go's defaults)", func(c *Config) *string { return &c.Listeners.TLSCipherSuites }),
	str("listeners.tls_client_certs", "client certificates on the TLS listeners: none, optional or required", func(c *Config) *string { return &c.Listeners.TLSClientCerts }),
	str("listeners.tls_client_ca_file", "PEM CA bundle that client certificates must chain to", func(c *Config) *string { return &c.Listeners.TLSClientCAFile }),
	str("listeners.tls_username_from", "take the MQTT username from the client certificate: cn, dn, san_dns, san_email, san_uri (empty: the CONNECT's)", func(c *Config) *string { return &c.Listeners.TLSUsernameFrom }),
	str("listeners.proxy_protocol", "listeners whose connections start with a PROXY v1/v2 header, comma-separated: tcp, mqtts, websocket, wss", func(c *Config) *string { return &c.Listeners.ProxyProtocol }),
	str("listeners.websocket_origins", "browser origins the WebSocket listeners accept, comma-separated host patterns, * for any (empty: any with anonymous access, else same host)", func(c *Config) *string { return &c.Listeners.WebSocketOrigins }),
	str("api.listen", "HTTP API listen address: /healthz, /readyz, /metrics (empty: off)", func(c *Config) *string { return &c.API.Listen }),
	str("api.token_file", "file with the bearer token of /api/v1, at least 16 characters (empty: /api/v1 off)", func(c *Config) *string { return &c.API.TokenFile }),
	str("api.tls_cert_file", "PEM certificate: serve the HTTP API over HTTPS (with tls_key_file; read again when it changes)", func(c *Config) *string { return &c.API.TLSCertFile }),
	str("api.tls_key_file", "PEM private key of the HTTPS API", func(c *Config) *string { return &c.API.TLSKeyFile }),
	str("dashboard.listen", "web dashboard listen address, usually :18083 (empty: off)", func(c *Config) *string { return &c.Dashboard.Listen }),
	str("dashboard.username_file", "file with the dashboard administrator's username (empty: admin)", func(c *Config) *string { return &c.Dashboard.UsernameFile }),
	str("dashboard.password_file", "file with the dashboard administrator's password (empty: public, with a banner)", func(c *Config) *string { return &c.Dashboard.PasswordFile }),
	str("dashboard.tls_cert_file", "PEM certificate: serve the dashboard over HTTPS (with tls_key_file; read again when it changes)", func(c *Config) *string { return &c.Dashboard.TLSCertFile }),
	str("dashboard.tls_key_file", "PEM private key of the HTTPS dashboard", func(c *Config) *string { return &c.Dashboard.TLSKeyFile }),
	str("store.dir", "directory of the durable store (empty: memory only)", func(c *Config) *string { return &c.Store.Dir }),
	str("cluster.listen", "cluster port address (empty: no clustering)", func(c *Config) *string { return &c.Cluster.Listen }),
	str("cluster.cookie_file", "file with the cluster cookie, at least 16 bytes", func(c *Config) *string { return &c.Cluster.CookieFile }),
	str("cluster.node_name", "this node's name in the cluster (empty: the host name)", func(c *Config) *string { return &c.Cluster.NodeName }),
	str("cluster.seeds", "comma-separated host:port of cluster nodes to connect to", func(c *Config) *string { return &c.Cluster.Seeds }),
	str("cluster.advertise", "cluster address other nodes dial (empty: cluster.listen, or node name and its port)", func(c *Config) *string { return &c.Cluster.Advertise }),
	str("cluster.tls_cert_file", "TLS certificate of this node on the cluster port (with tls_key_file and tls_ca_file)", func(c *Config) *string { return &c.Cluster.TLSCertFile }),
	str("cluster.tls_key_file", "TLS private key of this node on the cluster port", func(c *Config) *string { return &c.Cluster.TLSKeyFile }),
	str("cluster.tls_ca_file", "CA certificate that signed every node's cluster certificate", func(c *Config) *string { return &c.Cluster.TLSCAFile }),
	boolean("cluster.bootstrap", "bootstrap a new cluster on start when the store holds none", func(c *Config) *bool { return &c.Cluster.Bootstrap }),
	str("log.level", "log level: debug, info, warn, error", func(c *Config) *string { return &c.Log.Level }),
	str("log.format", "log format: text or json", func(c *Config) *string { return &c.Log.Format }),
	integer("limits.max_packet_size", "largest packet accepted from clients, bytes", func(c *Config) *uint32 { return &c.Limits.MaxPacketSize }),
	integer("limits.receive_maximum", "unreleased inbound QoS 2 messages allowed per client", func(c *Config) *uint16 { return &c.Limits.ReceiveMaximum }),
	integer("limits.max_inflight", "outbound QoS 1/2 window per client", func(c *Config) *int { return &c.Limits.MaxInflight }),
	integer("limits.max_queued_messages", "messages queued per session before dropping", func(c *Config) *int { return &c.Limits.MaxQueued }),
	integer("limits.max_queued_bytes", "payload bytes queued per session before dropping (0: no limit)", func(c *Config) *int { return &c.Limits.MaxQueuedBytes }),
	str("limits.queue_drop_policy", "which message a full queue drops: drop-newest or drop-oldest", func(c *Config) *string { return &c.Limits.DropPolicy }),
	integer("limits.max_keepalive", "longest keepalive accepted, seconds (0: any)", func(c *Config) *uint16 { return &c.Limits.MaxKeepAlive }),
	duration("limits.connect_timeout", "time allowed between TCP accept and CONNECT", func(c *Config) *Duration { return &c.Limits.ConnectTimeout }),
	integer("limits.topic_alias_maximum", "topic aliases a client may use towards the broker", func(c *Config) *uint16 { return &c.Limits.TopicAliasMaximum }),
	integer("limits.max_session_expiry", "cap on the session expiry interval, seconds (0: none)", func(c *Config) *uint32 { return &c.Limits.MaxSessionExpiry }),
	integer("limits.max_connections", "concurrent connections allowed on the node (0: unlimited)", func(c *Config) *int { return &c.Limits.MaxConnections }),
	integer("limits.max_connections_per_listener", "concurrent connections allowed on each listener (0: only the node's cap)", func(c *Config) *int { return &c.Limits.MaxConnectionsPerListener }),
	integer("limits.connection_rate", "new connections per second accepted on each listener; beyond it accepting waits (0: unlimited)", func(c *Config) *int { return &c.Limits.ConnectionRate }),
	integer("limits.connection_burst", "new connections accepted at once before connection_rate applies", func(c *Config) *int { return &c.Limits.ConnectionBurst }),
	integer("limits.max_retained_messages", "retained messages kept by the node (0: unlimited)", func(c *Config) *int { return &c.Limits.MaxRetained }),
	integer("limits.max_retained_bytes", "topic + payload bytes of the retained messages (0: unlimited)", func(c *Config) *int { return &c.Limits.MaxRetainedBytes }),
	integer("limits.max_subscriptions", "subscriptions per client (0: unlimited)", func(c *Config) *int { return &c.Limits.MaxSubscriptions }),
	integer("limits.max_topic_length", "longest topic name or filter, bytes (0: the protocol's 65535)", func(c *Config) *int { return &c.Limits.MaxTopicLength }),
	integer("limits.max_topic_levels", "most levels in a topic name or filter (0: unlimited)", func(c *Config) *int { return &c.Limits.MaxTopicLevels }),
	integer("limits.publish_rate", "PUBLISH packets per second per client; beyond it the client is read more slowly (0: unlimited)", func(c *Config) *int { return &c.Limits.PublishRate }),
	integer("limits.publish_byte_rate", "payload bytes per second per client; beyond it the client is read more slowly (0: unlimited)", func(c *Config) *int { return &c.Limits.PublishByteRate }),
	boolean("auth.allow_anonymous", "let clients connect without a username", func(c *Config) *bool { return &c.Auth.AllowAnonymous }),
	str("auth.users_file", "file of username:bcrypt-hash lines (empty: no users)", func(c *Config) *string { return &c.Auth.UsersFile }),
	str("auth.acl_file", "YAML file of ordered ACL rules (empty: everything allowed)", func(c *Config) *string { return &c.Auth.ACLFile }),
	str("auth.client_id_ownership", "only the user owning a session may take its client ID over: on, off or auto (on without anonymous)", func(c *Config) *string { return &c.Auth.ClientIDOwnership }),
	duration("auth.reload_interval", "how often the users and ACL files are checked for changes (also on SIGHUP)", func(c *Config) *Duration { return &c.Auth.ReloadInterval }),
	duration("sys_interval", "how often $SYS statistics are published (0: never)", func(c *Config) *Duration { return &c.SysInterval }),
	duration("shutdown_timeout", "bound on graceful shutdown", func(c *Config) *Duration { return &c.ShutdownTimeout }),
}

// Load builds the configuration from args (without the program name) and the
// environment. It returns flag.ErrHelp after printing usage for -h/--help.
func Load(args []string, environ []string, usage io.Writer) (Config, error) {
	fs := flag.NewFlagSet("mqttd", flag.ContinueOnError)
	fs.SetOutput(usage)
	configPath := fs.String("config", "", "path of the YAML configuration file (env MQTTD_CONFIG)")
	flagValues := map[string]*string{}
	def := Default()
	for _, s := range settings {
		v := new(string)
		flagValues[s.key] = v
		fs.Var(stringValue{v}, s.flag(), fmt.Sprintf("%s (env %s, default %q)", s.help, s.env(), s.get(&def)))
	}
	fs.Usage = func() {
		fmt.Fprintf(usage, "mqttd: an MQTT 3.1/3.1.1/5.0 broker.\n\nUsage: mqttd [--config FILE] [--key value ...]\n\n"+
			"Settings come from defaults, then the YAML file, then MQTTD_* environment variables, then flags.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	env := map[string]string{}
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}
	cfg := Default()
	path := *configPath
	if path == "" {
		path = env["MQTTD_CONFIG"]
	}
	if path != "" {
		if err := loadFile(path, &cfg); err != nil {
			return Config{}, err
		}
	}
	for _, s := range settings {
		if v, ok := env[s.env()]; ok {
			if err := s.set(&cfg, v); err != nil {
				return Config{}, fmt.Errorf("environment %s: %w", s.env(), err)
			}
		}
	}
	var err error
	fs.Visit(func(f *flag.Flag) {
		for _, s := range settings {
			if s.flag() == f.Name && err == nil {
				if e := s.set(&cfg, *flagValues[s.key]); e != nil {
					err = fmt.Errorf("flag --%s: %w", f.Name, e)
				}
			}
		}
	})
	if err != nil {
		return Config{}, err
	}
	return cfg, cfg.Validate()
}

type stringValue struct{ p *string }

func (v stringValue) String() string {
	if v.p == nil {
		return ""
	}
	return *v.p
}
func (v stringValue) Set(s string) error { *v.p = s; return nil }

func loadFile(path string, cfg *Config) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("reading config: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true) // a misspelled key is an error, not a silent default
	if err := dec.Decode(cfg); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("config %s: %w", path, err)
	}
	return nil
}

// Validate checks values that parse but make no sense.
func (c Config) Validate() error {
	var errs []error
	l := c.Listeners
	if l.TCP == "" && l.WebSocket == "" && l.MQTTS == "" && l.WSS == "" {
		errs = append(errs, errors.New("listeners: at least one listener is needed"))
	}
	if l.MQTTS != "" && (l.MQTTSCertFile == "" || l.MQTTSKeyFile == "") {
		errs = append(errs, errors.New("listeners.mqtts_cert_file and listeners.mqtts_key_file: both are needed for listeners.mqtts"))
	}
	if cert, key := l.WSSFiles(); l.WSS != "" && (cert == "" || key == "") {
		errs = append(errs, errors.New("listeners.wss_cert_file and listeners.wss_key_file (or the mqtts ones): both are needed for listeners.wss"))
	}
	if (l.WSSCertFile == "") != (l.WSSKeyFile == "") {
		errs = append(errs, errors.New("listeners.wss_cert_file and listeners.wss_key_file: set both or neither"))
	}
	switch l.TLSClientCerts {
	case "none":
		if l.TLSUsernameFrom != "" {
			errs = append(errs, errors.New("listeners.tls_username_from: needs listeners.tls_client_certs optional or required"))
		}
	case "optional", "required":
		if l.TLSClientCAFile == "" {
			errs = append(errs, fmt.Errorf("listeners.tls_client_ca_file: required with listeners.tls_client_certs %s", l.TLSClientCerts))
		}
	default:
		errs = append(errs, fmt.Errorf("listeners.tls_client_certs: %q is not none, optional or required", l.TLSClientCerts))
	}
	switch l.TLSUsernameFrom {
	case "", "cn", "dn", "san_dns", "san_email", "san_uri":
	default:
		errs = append(errs, fmt.Errorf("listeners.tls_username_from: %q is not cn, dn, san_dns, san_email or san_uri", l.TLSUsernameFrom))
	}
	addrs := map[string]string{"tcp": l.TCP, "mqtts": l.MQTTS, "websocket": l.WebSocket, "wss": l.WSS}
	for _, n := range strings.Split(l.ProxyProtocol, ",") {
		switch n = strings.TrimSpace(n); {
		case n == "":
		case !slices.Contains(ListenerNames, n):
			errs = append(errs, fmt.Errorf("listeners.proxy_protocol: %q is not a listener (%s)", n, strings.Join(ListenerNames, ", ")))
		case addrs[n] == "":
			errs = append(errs, fmt.Errorf("listeners.proxy_protocol: the %s listener is off", n))
		}
	}
	// A TLS setting without a TLS listener would be accepted and do nothing.
	if l.MQTTS == "" && l.WSS == "" && (l.TLSClientCerts != "none" || l.TLSClientCAFile != "" || l.TLSCipherSuites != "" || l.TLSUsernameFrom != "") {
		errs = append(errs, errors.New("listeners.tls_*: TLS settings need a TLS listener (listeners.mqtts or listeners.wss)"))
	}
	if l.TLSClientCerts == "none" && l.TLSClientCAFile != "" {
		errs = append(errs, errors.New("listeners.tls_client_ca_file: set, but listeners.tls_client_certs is none (no certificate is asked for)"))
	}
	if l.TLSCipherSuites != "" && l.TLSMinVersion == "1.3" {
		errs = append(errs, errors.New("listeners.tls_cipher_suites: only TLS 1.2 suites are configurable, and tls_min_version is 1.3"))
	}
	for _, o := range strings.Split(l.WebSocketOrigins, ",") {
		if o = strings.TrimSpace(o); o != "" {
			if _, err := path.Match(o, ""); err != nil {
				errs = append(errs, fmt.Errorf("listeners.websocket_origins: %q is not a valid pattern", o))
			}
		}
	}
	switch c.Listeners.TLSMinVersion {
	case "1.2", "1.3":
	default:
		errs = append(errs, fmt.Errorf("listeners.tls_min_version: %q is not 1.2 or 1.3", c.Listeners.TLSMinVersion))
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("log.level: %q is not debug, info, warn or error", c.Log.Level))
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		errs = append(errs, fmt.Errorf("log.format: %q is not text or json", c.Log.Format))
	}
	switch c.Limits.DropPolicy {
	case "drop-newest", "drop-oldest":
	default:
		errs = append(errs, fmt.Errorf("limits.queue_drop_policy: %q is not drop-newest or drop-oldest", c.Limits.DropPolicy))
	}
	if (c.Cluster.Listen != "" || c.Cluster.Seeds != "") && c.Cluster.CookieFile == "" {
		errs = append(errs, errors.New("cluster.cookie_file: required with cluster.listen or cluster.seeds"))
	}
	if (c.Cluster.Listen != "" || c.Cluster.Seeds != "") && c.Store.Dir == "" {
		errs = append(errs, errors.New("store.dir: required with cluster.listen (the raft log and cluster identity live in the store)"))
	}
	if t := c.Cluster; (t.TLSCertFile != "" || t.TLSKeyFile != "" || t.TLSCAFile != "") && (t.TLSCertFile == "" || t.TLSKeyFile == "" || t.TLSCAFile == "") {
		errs = append(errs, errors.New("cluster.tls_cert_file, tls_key_file and tls_ca_file: set all three or none"))
	}
	if d := c.Dashboard; d.Listen == "" && (d.UsernameFile != "" || d.PasswordFile != "" || d.TLSCertFile != "") {
		errs = append(errs, errors.New("dashboard.username_file, password_file, tls_cert_file: set, but the dashboard is off (dashboard.listen)"))
	}
	if (c.Dashboard.TLSCertFile == "") != (c.Dashboard.TLSKeyFile == "") {
		errs = append(errs, errors.New("dashboard.tls_cert_file and dashboard.tls_key_file: set both or neither"))
	}
	if (c.API.TLSCertFile == "") != (c.API.TLSKeyFile == "") {
		errs = append(errs, errors.New("api.tls_cert_file and api.tls_key_file: set both or neither"))
	}
	if a := c.Cluster.Advertise; a != "" {
		if _, _, err := net.SplitHostPort(a); err != nil {
			errs = append(errs, fmt.Errorf("cluster.advertise: %q is not host:port", a))
		}
	}
	if c.Cluster.Seeds != "" && c.Cluster.Listen == "" {
		errs = append(errs, errors.New("cluster.listen: required with cluster.seeds"))
	}
	switch c.Auth.ClientIDOwnership {
	case "auto", "on", "off":
	default:
		errs = append(errs, fmt.Errorf("auth.client_id_ownership: %q is not auto, on or off", c.Auth.ClientIDOwnership))
	}
	if c.Auth.ReloadInterval < Duration(100*time.Millisecond) {
		errs = append(errs, errors.New("auth.reload_interval: must be at least 100ms"))
	}
	if !c.Auth.AllowAnonymous && c.Auth.UsersFile == "" {
		errs = append(errs, errors.New("auth.users_file: required when auth.allow_anonymous is false (nobody could connect)"))
	}
	if q := c.Limits.MaxQueuedBytes; q > 0 && c.Limits.MaxPacketSize > 0 && int64(c.Limits.MaxPacketSize) > int64(q) {
		errs = append(errs, fmt.Errorf("limits.max_queued_bytes (%d) is below limits.max_packet_size (%d): a large message would be accepted, then dropped for every subscriber", q, c.Limits.MaxPacketSize))
	}
	if c.Limits.MaxPacketSize != 0 && c.Limits.MaxPacketSize < 64 {
		errs = append(errs, errors.New("limits.max_packet_size: must be at least 64 bytes"))
	}
	if c.Limits.ConnectionRate > 0 && c.Limits.ConnectionBurst < 1 {
		errs = append(errs, errors.New("limits.connection_burst: must be at least 1 with a connection_rate"))
	}
	return errors.Join(errs...)
}

// Set sets one setting by its key (as in Keys, e.g. "limits.max_queued_messages") from
// its text form, as an environment variable or flag would. Call Validate afterwards.
func (c *Config) Set(key, value string) error {
	for _, s := range settings {
		if s.key == key {
			if err := s.set(c, value); err != nil {
				return fmt.Errorf("%s: %w", key, err)
			}
			return nil
		}
	}
	return fmt.Errorf("%s: unknown setting", key)
}

// YAML renders c as a configuration file that Load reads back to the same Config.
func (c Config) YAML() ([]byte, error) {
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(c); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Keys lists every setting key, sorted; used by documentation tests.
func Keys() []string {
	out := make([]string, 0, len(settings))
	for _, s := range settings {
		out = append(out, s.key)
	}
	sort.Strings(out)
	return out
}
