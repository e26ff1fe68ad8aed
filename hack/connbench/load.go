package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The load mode (`connbench load`, `make bench-compare`) measures message throughput
// through mqttd and Debian's mosquitto side by side: each scenario runs against a
// fresh broker process, the brokers alternating (which goes first alternates by
// round), and the medians of the rounds are compared. The clients are this process's
// goroutines over loopback TCP, MQTT 3.1.1 written with the broker's own codec,
// 64-byte payloads. It also measures the tool alone (publishers into a sink that only
// reads, subscribers fed by a source that only writes) and the CPU time of the broker
// and of the tool in every run, to show where the limit is.

// scenario is one load shape: pubs publishers each sending msgs/pubs messages on
// load/<publisher>, subs subscribers on load/#, all at qos.
type scenario struct {
	Name       string `json:"name"`
	Pubs, Subs int
	QoS        byte
	Msgs       int // published in all
	// Pairs: Pubs publisher and subscriber pairs, each on a topic of its own, each
	// publisher sending its next message once its subscriber got the last one: the
	// latency from publish to delivery, one message in flight per pair.
	Pairs bool
}

func (sc scenario) expected() int {
	if sc.Pairs {
		return sc.Msgs / sc.Pubs * sc.Pubs
	}
	return sc.Msgs / sc.Pubs * sc.Pubs * sc.Subs
}

type loadResult struct {
	Broker    string `json:"broker"`
	Scenario  string `json:"scenario"`
	Round     int    `json:"round"`
	Delivered int    `json:"delivered"`
	// MinShare is the smallest share of what it should get that a subscriber got, %.
	MinShare  float64 `json:"minSubscriberShare"`
	Expected  int     `json:"expected"`
	Seconds   float64 `json:"seconds"`
	Rate      float64 `json:"deliveredPerSecond"`
	BrokerCPU float64 `json:"brokerCores"` // CPU seconds per second of the run
	ToolCPU   float64 `json:"toolCores"`
	// BrokerDropped is what mqttd counted as dropped (mqttd_messages_dropped_total).
	BrokerDropped float64 `json:"brokerDropped,omitempty"`
	// Pairs: publish-to-delivery latency, median and 99th percentile, milliseconds.
	P50 float64 `json:"latencyP50Ms,omitempty"`
	P99 float64 `json:"latencyP99Ms,omitempty"`
}

// brokerSpec is one broker the run compares: its name in the tables, its kind
// ("mqttd" or "mosquitto") and binary.
type brokerSpec struct{ name, kind, bin string }

func loadRun(args []string) error {
	fs := flag.NewFlagSet("load", flag.ContinueOnError)
	mqttd := fs.String("mqttd", "bin/mqttd", "the mqttd binary")
	mosquitto := fs.String("mosquitto", "/usr/sbin/mosquitto", "the mosquitto binary")
	rounds := fs.Int("rounds", 5, "rounds; each runs every scenario on both brokers")
	msgs := fs.Int("messages", 500000, "messages published per QoS 0 scenario")
	msgs1 := fs.Int("qos1-messages", 200000, "messages published per QoS 1 scenario (QoS 2: half, pairs: a tenth)")
	out := fs.String("out", "", "write the results as JSON here too")
	doc := fs.String("doc", "", "replace the text between the bench-compare markers of this Markdown file with the results")
	only := fs.String("only", "", "run only the scenarios whose name contains this")
	pin := fs.Bool("pin", false, "run the tool on CPU 0 and the brokers on CPU 1 (taskset): a core each")
	before := fs.String("before", "", "instead of mosquitto, compare with this mqttd binary (an earlier commit's): mqttd before and after")
	beforeName := fs.String("before-name", "before", "the -before binary's name in the tables")
	if err := fs.Parse(args); err != nil {
		return err
	}
	command := "connbench load " + strings.Join(args, " ")
	scenarios := []scenario{
		{Name: "fan-in: 4 publishers, 1 subscriber, QoS 0", Pubs: 4, Subs: 1, QoS: 0, Msgs: *msgs},
		{Name: "fan-out: 1 publisher, 10 subscribers, QoS 0", Pubs: 1, Subs: 10, QoS: 0, Msgs: *msgs / 10},
		{Name: "1 publisher, 1 subscriber, QoS 1", Pubs: 1, Subs: 1, QoS: 1, Msgs: *msgs1},
		{Name: "fan-in: 4 publishers, 1 subscriber, QoS 1", Pubs: 4, Subs: 1, QoS: 1, Msgs: *msgs1},
		{Name: "1 publisher, 1 subscriber, QoS 2", Pubs: 1, Subs: 1, QoS: 2, Msgs: *msgs1 / 2},
		{Name: "pairs: 20 publisher-subscriber pairs, QoS 1, one in flight each", Pubs: 20, Subs: 20, QoS: 1, Msgs: *msgs1 / 10, Pairs: true},
	}
	brokers := []brokerSpec{{"mqttd", "mqttd", *mqttd}, {"mosquitto", "mosquitto", *mosquitto}}
	if *before != "" {
		brokers = []brokerSpec{{"mqttd", "mqttd", *mqttd}, {*beforeName, "mqttd", *before}}
	}
	if *pin {
		if out, err := exec.Command("taskset", "-a", "-p", "-c", "0", strconv.Itoa(os.Getpid())).CombinedOutput(); err != nil {
			return fmt.Errorf("pinning the tool to CPU 0: %w: %s", err, out)
		}
		brokerCPUs = "1"
	}
	for _, sc := range scenarios {
		if sc.Msgs/sc.Pubs < 1 {
			return fmt.Errorf("%s: %d messages for %d publishers: raise -messages or -qos1-messages", sc.Name, sc.Msgs, sc.Pubs)
		}
	}
	if *before != "" && *pin && *doc != "" {
		return errors.New("-before with -pin has no section in the -doc file")
	}
	if *only != "" {
		scenarios = slices.DeleteFunc(scenarios, func(sc scenario) bool { return !strings.Contains(sc.Name, *only) })
	}
	tmp, err := os.MkdirTemp("", "connbench-load-")
	if err != nil {
		return err
	}
	defer func() { _ = os.RemoveAll(tmp) }()

	fmt.Println("the tool alone (publishers into a sink, subscribers fed by a source):")
	tool := map[string][3]float64{}
	for _, sc := range scenarios {
		if sc.Pairs {
			continue // one message in flight per pair: latency, not the tool's capacity
		}
		pub, err := toolPublishRate(sc)
		if err != nil {
			return err
		}
		sub, err := toolReceiveRate(sc, false)
		if err != nil {
			return err
		}
		single, err := toolReceiveRate(sc, true)
		if err != nil {
			return err
		}
		tool[sc.Name] = [3]float64{pub, sub, single}
		fmt.Printf("  %-46s publish %9.0f msgs/s, receive %9.0f deliveries/s (%9.0f one packet per write)\n", sc.Name, pub, sub, single)
	}

	var results []loadResult
	for round := 1; round <= *rounds; round++ {
		order := brokers
		if round%2 == 0 {
			order = []brokerSpec{brokers[1], brokers[0]}
		}
		for _, sc := range scenarios {
			for _, bs := range order {
				b, bin := bs.name, bs.bin
				dir := filepath.Join(tmp, fmt.Sprintf("%d-%d-%d", slices.Index(brokers, bs), round, len(results)))
				if err := os.MkdirAll(dir, 0o755); err != nil {
					return err
				}
				// A throughput test: both brokers without publish rate limits, with
				// queues that hold a whole run (nothing dropped), mqttd's window of
				// 1,024 messages, and TCP_NODELAY (Go sets it on mqttd's sockets;
				// mosquitto's default is off). (mqttd takes a max_queued_messages of 0
				// for its default, 10,000: hence a number.)
				addr, metricsURL, cmd, stop, err := startBrokerConf(bs.kind, bin, dir,
					"max_inflight_messages 1024\nmax_queued_messages 1000000\nmax_queued_bytes 0\nset_tcp_nodelay true\n",
					"--limits.publish-rate", "0", "--limits.publish-byte-rate", "0",
					"--limits.max-queued-messages", "1000000", "--limits.max-queued-bytes", "0")
				if err != nil {
					return fmt.Errorf("%s: %w", b, err)
				}
				r, err := runScenario(addr, sc, cmd.Process.Pid)
				if metricsURL != "" && err == nil {
					r.BrokerDropped, err = sumMetric([]string{strings.TrimSuffix(strings.TrimPrefix(metricsURL, "http://"), "/metrics")}, "mqttd_messages_dropped_total")
				}
				stop()
				if err != nil {
					return fmt.Errorf("%s, %s: %w", b, sc.Name, err)
				}
				r.Broker, r.Round = b, round
				results = append(results, r)
				fmt.Printf("%-9s round %d %-46s %9.0f deliveries/s (%d of %d in %.2f s, %.0f counted dropped), broker %.2f cores, tool %.2f cores",
					b, round, sc.Name, r.Rate, r.Delivered, r.Expected, r.Seconds, r.BrokerDropped, r.BrokerCPU, r.ToolCPU)
				if sc.Pairs {
					fmt.Printf(", latency p50 %.3f ms, p99 %.3f ms", r.P50, r.P99)
				}
				fmt.Println()
			}
		}
	}
	table := summarizeLoad(scenarios, brokers[0].name, brokers[1].name, results, tool)
	fmt.Print("\nmedians:\n" + table)
	if *out != "" {
		data, _ := json.MarshalIndent(results, "", "  ")
		if err := os.WriteFile(*out, data, 0o644); err != nil {
			return err
		}
	}
	if *doc != "" {
		marker := "bench-compare"
		if *before != "" {
			marker = "bench-before-after"
		}
		if *pin {
			marker += "-pinned"
		}
		second := fmt.Sprintf("- mosquitto: %s (`%s`)", firstLine(*mosquitto, "-h"), *mosquitto)
		if *before != "" {
			second = fmt.Sprintf("- %s: mqttd `%s`", *beforeName, *before)
		}
		return writeDoc(*doc, marker, table, command, second, *rounds)
	}
	return nil
}

// writeDoc replaces what is between the markers named marker in file with the
// results, the machine, the versions and the command.
func writeDoc(file, marker, table, command, second string, rounds int) error {
	data, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	docStart := "<!-- " + marker + ":start (written by make bench-compare) -->"
	docEnd := "<!-- " + marker + ":end -->"
	text := string(data)
	i, j := strings.Index(text, docStart), strings.Index(text, docEnd)
	if i < 0 || j < i {
		return fmt.Errorf("%s has no %q ... %q markers", file, docStart, docEnd)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s\n\nRun %s on %s; %d rounds, the brokers alternating (which goes first alternates by round); medians.\n\n",
		docStart, time.Now().UTC().Format("2006-01-02 15:04 UTC"), machine(), rounds)
	fmt.Fprintf(&b, "- mqttd: %s (this repository, `bin/mqttd`), %s\n", sourceVersion(), runtime.Version())
	b.WriteString(second + "\n")
	fmt.Fprintf(&b, "- command: `make bench-compare`, which ran `%s`\n\n", command)
	b.WriteString(table)
	b.WriteString("\n" + docEnd)
	return os.WriteFile(file, []byte(text[:i]+b.String()+text[j+len(docEnd):]), 0o644)
}

// sourceVersion is the repository's commit, and whether files outside docs/ (which
// this run writes) differ from it.
func sourceVersion() string {
	v := firstLine("git", "rev-parse", "--short", "HEAD")
	if out, err := exec.Command("git", "status", "--porcelain", "--", ".", ":(exclude)docs").Output(); err != nil || len(out) > 0 {
		v += " with uncommitted changes"
	}
	return v
}

// machine describes the CPU, cores, memory and kernel.
func machine() string {
	cpu := "unknown CPU"
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	mem := ""
	if data, err := os.ReadFile("/proc/meminfo"); err == nil {
		if f := strings.Fields(string(data)); len(f) > 1 {
			if kb, err := strconv.ParseFloat(f[1], 64); err == nil {
				mem = fmt.Sprintf(", %.0f GiB", kb/(1<<20))
			}
		}
	}
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return fmt.Sprintf("%d x %s%s, Linux %s %s", runtime.NumCPU(), cpu, mem, strings.TrimSpace(string(kernel)), runtime.GOARCH)
}

// firstLine is the first line name args prints (stdout and stderr), or "unknown".
func firstLine(name string, args ...string) string {
	out, _ := exec.Command(name, args...).CombinedOutput()
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	if line == "" {
		return "unknown"
	}
	return line
}

// summarizeLoad returns a Markdown table with, per scenario, each broker's median
// rate and CPU, the ratio (a over b), and the tool's own rates; then the pairs'
// latencies.
func summarizeLoad(scenarios []scenario, a, b string, results []loadResult, tool map[string][3]float64) string {
	var t strings.Builder
	fmt.Fprintf(&t, "| scenario | %[1]s deliveries/s | %[2]s deliveries/s | %[1]s / %[2]s | delivered, least of a subscriber (%[1]s, %[2]s) | broker cores (%[1]s, %[2]s) | tool cores (with %[1]s, %[2]s) | tool alone per s: publish, receive, receive one packet per write |\n", a, b)
	t.WriteString("| --- | ---: | ---: | ---: | --- | --- | --- | --- |\n")
	var pairs []string
	for _, sc := range scenarios {
		med := func(broker string, f func(loadResult) float64) float64 {
			var v []float64
			for _, r := range results {
				if r.Broker == broker && r.Scenario == sc.Name {
					v = append(v, f(r))
				}
			}
			return median(v)
		}
		rate := func(r loadResult) float64 { return r.Rate }
		bc := func(r loadResult) float64 { return r.BrokerCPU }
		tc := func(r loadResult) float64 { return r.ToolCPU }
		share := func(broker string) float64 { // the smallest a subscriber got, over the rounds
			v := 100.0
			for _, r := range results {
				if r.Broker == broker && r.Scenario == sc.Name {
					v = min(v, r.MinShare)
				}
			}
			return v
		}
		ra, rb := med(a, rate), med(b, rate)
		alone := "-"
		if ts, ok := tool[sc.Name]; ok {
			alone = fmt.Sprintf("%.0f, %.0f, %.0f", ts[0], ts[1], ts[2])
		}
		fmt.Fprintf(&t, "| %s | %.0f | %.0f | %.2fx | %.1f %%, %.1f %% | %.2f, %.2f | %.2f, %.2f | %s |\n", sc.Name, ra, rb, ra/rb,
			share(a), share(b), med(a, bc), med(b, bc), med(a, tc), med(b, tc), alone)
		if sc.Pairs {
			p50 := func(r loadResult) float64 { return r.P50 }
			p99 := func(r loadResult) float64 { return r.P99 }
			pairs = append(pairs, fmt.Sprintf("| %s | %.3f ms | %.3f ms | %.3f ms | %.3f ms |", sc.Name, med(a, p50), med(b, p50), med(a, p99), med(b, p99)))
		}
	}
	if len(pairs) > 0 {
		fmt.Fprintf(&t, "\n| latency, publish to delivery | %[1]s median | %[2]s median | %[1]s p99 | %[2]s p99 |\n| --- | ---: | ---: | ---: | ---: |\n", a, b)
		t.WriteString(strings.Join(pairs, "\n") + "\n")
	}
	return t.String()
}
