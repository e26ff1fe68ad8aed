package config

import (
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func write(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "mqttd.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPrecedenceFileEnvFlag(t *testing.T) {
	path := write(t, "listeners:\n  tcp: \":1000\"\nlimits:\n  max_queued_messages: 5\n  connect_timeout: 3s\n")
	cfg, err := Load([]string{"--config", path, "--limits.max-queued-messages", "7"},
		[]string{"MQTTD_LISTENERS_TCP=:2000", "MQTTD_LIMITS_MAX_QUEUED_MESSAGES=6", "MQTTD_LIMITS_MAX_INFLIGHT=9"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Listeners.TCP != ":2000" {
		t.Errorf("env must override file: tcp = %q", cfg.Listeners.TCP)
	}
	if cfg.Limits.MaxQueued != 7 {
		t.Errorf("flag must override env: max_queued = %d", cfg.Limits.MaxQueued)
	}
	if cfg.Limits.MaxInflight != 9 {
		t.Errorf("env not applied: max_inflight = %d", cfg.Limits.MaxInflight)
	}
	if time.Duration(cfg.Limits.ConnectTimeout) != 3*time.Second {
		t.Errorf("file not applied: connect_timeout = %v", time.Duration(cfg.Limits.ConnectTimeout))
	}
	if cfg.Listeners.WebSocket != Default().Listeners.WebSocket {
		t.Errorf("default lost: websocket = %q", cfg.Listeners.WebSocket)
	}
}

func TestConfigFromEnvPath(t *testing.T) {
	path := write(t, "log:\n  level: debug\n")
	cfg, err := Load(nil, []string{"MQTTD_CONFIG=" + path}, io.Discard)
	if err != nil || cfg.Log.Level != "debug" {
		t.Fatalf("cfg=%+v err=%v", cfg.Log, err)
	}
}

func TestErrors(t *testing.T) {
	cases := []struct {
		name string
		file string
		args []string
		env  []string
		want string
	}{
		{name: "unknown key", file: "limits:\n  max_packets: 3\n", want: "max_packets"},
		{name: "bad duration in file", file: "sys_interval: soon\n", want: "soon"},
		{name: "bad integer flag", args: []string{"--limits.receive-maximum", "70000"}, want: "limits.receive_maximum"},
		{name: "negative env", env: []string{"MQTTD_LIMITS_MAX_CONNECTIONS=-1"}, want: "MQTTD_LIMITS_MAX_CONNECTIONS"},
		{name: "bad level", args: []string{"--log.level", "loud"}, want: "log.level"},
		{name: "bad policy", args: []string{"--limits.queue-drop-policy", "random"}, want: "queue_drop_policy"},
		{name: "no listeners", args: []string{"--listeners.tcp", "", "--listeners.websocket", ""}, want: "at least one listener"},
		{name: "mqtts without its certificate", args: []string{"--listeners.mqtts", ":8883"}, want: "mqtts_cert_file and listeners.mqtts_key_file"},
		{name: "unknown TLS version", args: []string{"--listeners.tls-min-version", "1.1"}, want: "tls_min_version"},
		{name: "wss without any certificate", args: []string{"--listeners.wss", ":8084"}, want: "both are needed for listeners.wss"},
		{name: "wss with half its own pair", args: []string{"--listeners.wss", ":8084", "--listeners.wss-cert-file", "c.pem"}, want: "set both or neither"},
		{name: "unknown client certificate mode", args: []string{"--listeners.tls-client-certs", "maybe"}, want: "tls_client_certs"},
		{name: "client certificates without a CA", args: []string{"--listeners.tls-client-certs", "required"}, want: "tls_client_ca_file: required"},
		{name: "username from certificates none are asked for", args: []string{"--listeners.tls-username-from", "cn"}, want: "needs listeners.tls_client_certs"},
		{name: "unknown username source", args: []string{"--listeners.tls-client-certs", "optional", "--listeners.tls-client-ca-file", "ca.pem", "--listeners.tls-username-from", "serial"}, want: "tls_username_from"},
		{name: "PROXY protocol on an unknown listener", args: []string{"--listeners.proxy-protocol", "tcp,http"}, want: `"http" is not a listener`},
		{name: "PROXY protocol on a listener that is off", args: []string{"--listeners.proxy-protocol", "mqtts"}, want: "the mqtts listener is off"},
		{name: "client certificates without a TLS listener", args: []string{"--listeners.tls-client-certs", "optional", "--listeners.tls-client-ca-file", "ca.pem"}, want: "TLS settings need a TLS listener"},
		{name: "a CA bundle no certificate is asked for", args: []string{"--listeners.mqtts", ":8883", "--listeners.mqtts-cert-file", "c", "--listeners.mqtts-key-file", "k", "--listeners.tls-client-ca-file", "ca.pem"}, want: "tls_client_certs is none"},
		{name: "cipher suites at TLS 1.3", args: []string{"--listeners.mqtts", ":8883", "--listeners.mqtts-cert-file", "c", "--listeners.mqtts-key-file", "k", "--listeners.tls-min-version", "1.3", "--listeners.tls-cipher-suites", "X"}, want: "only TLS 1.2 suites"},
		{name: "a bad origin pattern", args: []string{"--listeners.websocket-origins", "[bad"}, want: "not a valid pattern"},
		{name: "tiny packets", args: []string{"--limits.max-packet-size", "10"}, want: "max_packet_size"},
		{name: "missing file", args: []string{"--config", "/nonexistent/mqttd.yaml"}, want: "reading config"},
		{name: "stray argument", args: []string{"extra"}, want: "unexpected argument"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			args := tc.args
			if tc.file != "" {
				args = append([]string{"--config", write(t, tc.file)}, args...)
			}
			_, err := Load(args, tc.env, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tc.want)
			}
		})
	}
}

// TestShippedConfigLoads keeps config/mqttd/mqttd.yaml valid and complete: it must load
// and mention every setting key.
func TestShippedConfigLoads(t *testing.T) {
	path := filepath.Join("..", "..", "config", "mqttd", "mqttd.yaml")
	if _, err := Load([]string{"--config", path}, nil, io.Discard); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range Keys() {
		leaf := k[strings.LastIndex(k, ".")+1:]
		if !strings.Contains(string(data), leaf+":") {
			t.Errorf("config/mqttd/mqttd.yaml does not document %s", k)
		}
	}
}

func TestHelpListsEveryKey(t *testing.T) {
	var out strings.Builder
	_, err := Load([]string{"--help"}, nil, &out)
	if err == nil {
		t.Fatal("--help must return flag.ErrHelp")
	}
	for _, s := range settings {
		if !strings.Contains(out.String(), "-"+s.flag()) || !strings.Contains(out.String(), s.env()) {
			t.Errorf("--help lacks %s / %s", s.flag(), s.env())
		}
	}
}

// TestSetAndYAMLRoundTrip sets every key through Set (as the operator does with a
// cluster's extra settings), renders the YAML and loads it back unchanged.
func TestSetAndYAMLRoundTrip(t *testing.T) {
	cfg := Default()
	for key, value := range map[string]string{
		"listeners.tcp":              "0.0.0.0:1883",
		"log.format":                 "json",
		"limits.max_queued_messages": "5000",
		"limits.queue_drop_policy":   "drop-oldest",
		"limits.connect_timeout":     "3s",
		"sys_interval":               "1m",
	} {
		if err := cfg.Set(key, value); err != nil {
			t.Fatalf("Set(%q, %q): %v", key, value, err)
		}
	}
	raw, err := cfg.YAML()
	if err != nil {
		t.Fatal(err)
	}
	back, err := Load([]string{"--config", write(t, string(raw))}, nil, io.Discard)
	if err != nil {
		t.Fatalf("loading rendered YAML:\n%s\n%v", raw, err)
	}
	if back != cfg {
		t.Fatalf("round trip changed the config:\n got %+v\nwant %+v", back, cfg)
	}
	if back.Limits.MaxQueued != 5000 || time.Duration(back.Limits.ConnectTimeout) != 3*time.Second {
		t.Fatalf("values not applied: %+v", back.Limits)
	}

	for _, bad := range []struct{ key, value, want string }{
		{"limits.nope", "1", "unknown setting"},
		{"limits.max_queued_messages", "many", "limits.max_queued_messages"},
		{"limits.connect_timeout", "soon", "limits.connect_timeout"},
	} {
		err := cfg.Set(bad.key, bad.value)
		if err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("Set(%q, %q) = %v, want an error mentioning %q", bad.key, bad.value, err, bad.want)
		}
	}
}

// TestOrigins: without websocket_origins, any origin is allowed only when anonymous
// access is on and no client certificates are asked for; else only the page's own
// host (an empty list).
func TestOrigins(t *testing.T) {
	for _, tc := range []struct {
		anonymous   bool
		clientCerts string
		set         string
		want        []string
	}{
		{true, "none", "", []string{"*"}},
		{false, "none", "", nil},
		{true, "optional", "", nil},
		{true, "required", "", nil},
		{false, "none", " *.example.com , app.example.org", []string{"*.example.com", "app.example.org"}},
	} {
		c := Default()
		c.Auth.AllowAnonymous, c.Listeners.TLSClientCerts, c.Listeners.WebSocketOrigins = tc.anonymous, tc.clientCerts, tc.set
		if got := c.Origins(); !slices.Equal(got, tc.want) {
			t.Errorf("anonymous %v, client certificates %s, set %q: %q, want %q", tc.anonymous, tc.clientCerts, tc.set, got, tc.want)
		}
	}
}
