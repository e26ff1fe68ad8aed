package api

import (
	"io"
	"log/slog"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mqtt-operator/mqtt-operator/broker/server"
)

// allDescs describes every metric mqttd can export.
func allDescs(t *testing.T) map[string]string {
	t.Helper()
	srv, err := server.New(server.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), SysInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Shutdown(t.Context()) })
	ch := make(chan *prometheus.Desc, 256)
	for _, c := range []prometheus.Collector{newCollector(srv), clusterCollector{}, authCollector{}, dashboardCollector{}, listenerCollector{}} {
		c.Describe(ch)
	}
	close(ch)
	nameRE := regexp.MustCompile(`fqName: "([^"]+)", help: "((?:[^"\\]|\\.)*)"`)
	out := map[string]string{}
	for d := range ch {
		m := nameRE.FindStringSubmatch(d.String())
		if m == nil {
			t.Fatalf("unparsable descriptor %s", d)
		}
		out[m[1]] = m[2]
	}
	return out
}

// TestMetricsDocumented checks docs/metrics.md, the one table of mqttd's metrics,
// against the metrics the collectors describe: every metric has a row and every row
// a metric. Names follow Prometheus's conventions: the mqttd_ prefix, counters end in
// _total (the table's Type column says counter), units spelled out as suffixes.
func TestMetricsDocumented(t *testing.T) {
	descs := allDescs(t)
	doc, err := os.ReadFile("../../docs/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	rowRE := regexp.MustCompile("(?m)^\\| `(mqttd_[a-z0-9_]+)` \\| (counter|gauge) \\|")
	documented := map[string]string{}
	for _, m := range rowRE.FindAllStringSubmatch(string(doc), -1) {
		documented[m[1]] = m[2]
	}
	var names []string
	for n := range descs {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		typ, ok := documented[n]
		if !ok {
			t.Errorf("%s is exported but not in docs/metrics.md (help: %s)", n, descs[n])
			continue
		}
		if (typ == "counter") != strings.HasSuffix(n, "_total") {
			t.Errorf("%s: a %s; counters, and only counters, end in _total", n, typ)
		}
	}
	for n := range documented {
		if _, ok := descs[n]; !ok {
			t.Errorf("docs/metrics.md lists %s, which mqttd does not export", n)
		}
	}
	// The server's metrics, collected: the table gives their real types.
	srv, err := server.New(server.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), SysInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = srv.Shutdown(t.Context()) }()
	reg := prometheus.NewRegistry()
	reg.MustRegister(newCollector(srv))
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		want := strings.ToLower(f.GetType().String())
		if got := documented[f.GetName()]; got != want {
			t.Errorf("%s is a %s, docs/metrics.md says %q", f.GetName(), want, got)
		}
	}
}
