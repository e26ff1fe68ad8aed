package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mqtt-operator/mqtt-operator/broker/packet"
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

// runScenario connects sc's subscribers and publishers to addr, publishes, and
// measures the deliveries per second: from the first publish to the last delivery,
// once every subscriber has all it should get or nothing arrived for 3 s (QoS 0
// may be dropped). pid is the broker's, for its CPU time.
func runScenario(addr string, sc scenario, pid int) (loadResult, error) {
	if sc.Pairs {
		return runPairs(addr, sc, pid)
	}
	r := loadResult{Scenario: sc.Name, Expected: sc.expected()}
	counts := make([]atomic.Int64, sc.Subs) // each subscriber's deliveries
	delivered := func() (total int64) {
		for i := range counts {
			total += counts[i].Load()
		}
		return total
	}
	last := newLastDelivery()
	var subs []net.Conn
	defer func() { closeAll(subs) }()
	ended := make(chan error, sc.Subs)
	for i := range sc.Subs {
		c, br, err := loadConnect(addr, fmt.Sprintf("load-sub-%d", i), "load/#", sc.QoS)
		if err != nil {
			return r, err
		}
		subs = append(subs, c)
		go subscriber(c, br, &counts[i], last, ended)
	}
	var pubs []net.Conn
	defer func() { closeAll(pubs) }()
	var brs []*bufio.Reader
	for i := range sc.Pubs {
		c, br, err := loadConnect(addr, fmt.Sprintf("load-pub-%d", i), "", 0)
		if err != nil {
			return r, err
		}
		pubs = append(pubs, c)
		brs = append(brs, br)
	}
	brokerCPU0, err := cpuSeconds(pid)
	if err != nil {
		return r, err
	}
	toolCPU0, err := cpuSeconds(os.Getpid())
	if err != nil {
		return r, err
	}
	start := time.Now()
	errs := make(chan error, sc.Pubs)
	for i, c := range pubs {
		go func() { errs <- publisher(c, brs[i], "load/"+strconv.Itoa(i), sc.QoS, sc.Msgs/sc.Pubs) }()
	}
	for range pubs {
		if err := <-errs; err != nil {
			return r, err
		}
	}
	// Until everything arrived, or nothing more for 3 s.
	for prev, idle := int64(-1), time.Now(); delivered() < int64(r.Expected); {
		if d := delivered(); d != prev {
			prev, idle = d, time.Now()
		} else if time.Since(idle) > 3*time.Second {
			break
		}
		time.Sleep(5 * time.Millisecond) // polling the counters, bounded by the idle limit
	}
	select {
	case err := <-ended:
		return r, fmt.Errorf("a subscriber's connection ended after %d deliveries: %w", delivered(), err)
	default:
	}
	end := last.at()
	r.Delivered = int(delivered())
	r.MinShare = 100
	perSub := r.Expected / sc.Subs
	for i := range counts {
		r.MinShare = min(r.MinShare, 100*float64(counts[i].Load())/float64(perSub))
	}
	if sc.QoS > 0 && r.Delivered != r.Expected {
		return r, fmt.Errorf("QoS %d: %d of %d acknowledged messages delivered (the smallest share of a subscriber %.1f %%)", sc.QoS, r.Delivered, r.Expected, r.MinShare)
	}
	r.Seconds = end.Sub(start).Seconds()
	if r.Delivered == 0 || r.Seconds <= 0 {
		return r, errors.New("nothing was delivered")
	}
	r.Rate = float64(r.Delivered) / r.Seconds
	brokerCPU1, err := cpuSeconds(pid)
	if err != nil {
		return r, err
	}
	toolCPU1, err := cpuSeconds(os.Getpid())
	if err != nil {
		return r, err
	}
	// Per second of the measured span (an idle wait for lost messages adds no CPU).
	r.BrokerCPU, r.ToolCPU = (brokerCPU1-brokerCPU0)/r.Seconds, (toolCPU1-toolCPU0)/r.Seconds
	return r, nil
}

// loadConnect connects a clean MQTT 3.1.1 client, subscribed to filter unless empty.
func loadConnect(addr, id, filter string, qos byte) (net.Conn, *bufio.Reader, error) {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, nil, err
	}
	buf := (&packet.Packet{Type: packet.Connect, Connect: packet.ConnectFields{ProtocolName: "MQTT", ProtocolVersion: packet.V311, CleanStart: true, ClientID: id}}).Encode(nil, packet.V311)
	want := []packet.Type{packet.Connack}
	if filter != "" {
		buf = (&packet.Packet{Type: packet.Subscribe, PacketID: 1, Subscriptions: []packet.Subscription{{Filter: filter, QoS: qos}}}).Encode(buf, packet.V311)
		want = append(want, packet.Suback)
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(buf); err != nil {
		_ = c.Close()
		return nil, nil, err
	}
	br := bufio.NewReaderSize(c, 64<<10)
	for _, w := range want {
		p, err := packet.Read(br, packet.V311, 0)
		if err != nil || p.Type != w {
			_ = c.Close()
			return nil, nil, fmt.Errorf("%s: waiting for %v: %w (%v)", id, w, err, p)
		}
	}
	// No run takes this long: a broker that stops reading or writing fails the run
	// instead of hanging it.
	_ = c.SetDeadline(time.Now().Add(3 * time.Minute))
	return c, br, nil
}

// subscriber counts the PUBLISH packets read from c, acknowledging QoS 1 ones (the
// acks of what one read brought, written together), until c fails; then it
// returns why (on ended, if not nil).
func subscriber(c net.Conn, br *bufio.Reader, delivered *atomic.Int64, last *lastDelivery, ended chan<- error) {
	subscriberFunc(c, br, delivered, last, ended, nil)
}

// lastDelivery is the time of the latest delivery, on the monotonic clock: the
// duration since epoch.
type lastDelivery struct {
	epoch time.Time
	since atomic.Int64
}

func newLastDelivery() *lastDelivery { return &lastDelivery{epoch: time.Now()} }

func (l *lastDelivery) mark() {
	now := int64(time.Since(l.epoch))
	for {
		old := l.since.Load()
		if now <= old || l.since.CompareAndSwap(old, now) {
			return
		}
	}
}

// at is the time of the latest delivery.
func (l *lastDelivery) at() time.Time { return l.epoch.Add(time.Duration(l.since.Load())) }

// subscriberFunc is subscriber, calling onPublish (unless nil) at every delivery.
// QoS 2 deliveries get PUBREC, and their PUBREL a PUBCOMP.
func subscriberFunc(c net.Conn, br *bufio.Reader, delivered *atomic.Int64, last *lastDelivery, ended chan<- error, onPublish func()) {
	var p packet.Packet
	var acks []byte
	for {
		if err := packet.ReadInto(br, &p, packet.V311, 0); err != nil {
			if ended != nil {
				ended <- err
			}
			return
		}
		if p.Type == packet.Disconnect {
			if ended != nil {
				ended <- fmt.Errorf("DISCONNECT from the broker (reason 0x%02X)", byte(p.ReasonCode))
			}
			return
		}
		switch {
		case p.Type == packet.Pubrel:
			acks = (&packet.Packet{Type: packet.Pubcomp, PacketID: p.PacketID}).Encode(acks, packet.V311)
		case p.Type != packet.Publish:
			continue
		default:
			delivered.Add(1)
			last.mark()
			if onPublish != nil {
				onPublish()
			}
			switch p.QoS {
			case 1:
				acks = (&packet.Packet{Type: packet.Puback, PacketID: p.PacketID}).Encode(acks, packet.V311)
			case 2:
				acks = (&packet.Packet{Type: packet.Pubrec, PacketID: p.PacketID}).Encode(acks, packet.V311)
			}
		}
		if len(acks) > 0 && (br.Buffered() == 0 || len(acks) > 4096) {
			if _, err := c.Write(acks); err != nil {
				if ended != nil {
					ended <- err
				}
				return
			}
			acks = acks[:0]
		}
	}
}

// publisher sends n PUBLISH packets of 64 bytes on topic: QoS 0 as fast as the
// socket takes them (64 KiB writes), QoS 1 and 2 with up to 256 unfinished (the
// acks read, and PUBREC answered with PUBREL, by a goroutine of its own), and
// returns once all are written (QoS 0) or finished (PUBACK, PUBCOMP).
func publisher(c net.Conn, br *bufio.Reader, topic string, qos byte, n int) error {
	payload := make([]byte, 64)
	if qos == 0 {
		one := (&packet.Packet{Type: packet.Publish, Topic: topic, Payload: payload}).Encode(nil, packet.V311)
		per := max(1, (64<<10)/len(one))
		batch := make([]byte, 0, per*len(one))
		for range per {
			batch = append(batch, one...)
		}
		for sent := 0; sent < n; sent += per {
			k := min(per, n-sent)
			if _, err := c.Write(batch[:k*len(one)]); err != nil {
				return err
			}
		}
		return nil
	}
	// Up to window unfinished; once the window is full, the next publishes wait
	// until a quarter of it is free, and go out together (not one write per ack).
	const window = 256
	var mu sync.Mutex // inflight, rerr
	cond := sync.NewCond(&mu)
	inflight := 0
	var rerr error
	var wmu sync.Mutex // w: the publishes, and the PUBRELs the reader answers PUBREC with
	w := bufio.NewWriterSize(c, 64<<10)
	locked := func(f func() error) error {
		wmu.Lock()
		defer wmu.Unlock()
		return f()
	}
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		var p packet.Packet
		var rel []byte
		fail := func(err error) {
			mu.Lock()
			rerr = err
			cond.Broadcast()
			mu.Unlock()
		}
		unsent := false // PUBRELs written to w and not flushed
		for {
			if err := packet.ReadInto(br, &p, packet.V311, 0); err != nil {
				fail(err)
				return
			}
			switch p.Type {
			case packet.Puback, packet.Pubcomp:
				mu.Lock()
				inflight--
				if inflight == window*3/4 || inflight == 0 {
					cond.Broadcast()
				}
				mu.Unlock()
			case packet.Pubrec:
				rel = (&packet.Packet{Type: packet.Pubrel, PacketID: p.PacketID}).Encode(rel[:0], packet.V311)
				if err := locked(func() error { _, err := w.Write(rel); return err }); err != nil {
					fail(err)
					return
				}
				unsent = true
			}
			// What one read brought is handled: send the PUBRELs it asked for.
			if unsent && br.Buffered() == 0 {
				if err := locked(w.Flush); err != nil {
					fail(err)
					return
				}
				unsent = false
			}
		}
	}()
	// waitFor waits until ok holds (with mu held) or the reader failed.
	waitFor := func(ok func() bool) error {
		mu.Lock()
		defer mu.Unlock()
		for !ok() && rerr == nil {
			cond.Wait()
		}
		return rerr
	}
	p := packet.Packet{Type: packet.Publish, Topic: topic, Payload: payload, QoS: qos}
	var buf []byte
	for i := range n {
		mu.Lock()
		full := inflight >= window
		mu.Unlock()
		if full {
			if err := locked(w.Flush); err != nil {
				return err
			}
			if err := waitFor(func() bool { return inflight <= window*3/4 }); err != nil {
				return err
			}
		}
		mu.Lock()
		inflight++
		mu.Unlock()
		p.PacketID = uint16(i%65535 + 1)
		buf = p.Encode(buf[:0], packet.V311)
		if err := locked(func() error { _, err := w.Write(buf); return err }); err != nil {
			return err
		}
	}
	if err := locked(w.Flush); err != nil {
		return err
	}
	err := waitFor(func() bool { return inflight == 0 })
	_ = c.SetReadDeadline(time.Now()) // every ack is in: stop the reader
	<-readerDone
	return err
}

// runPairs runs a pairs scenario (see scenario.Pairs).
func runPairs(addr string, sc scenario, pid int) (loadResult, error) {
	r := loadResult{Scenario: sc.Name, Expected: sc.expected()}
	per := sc.Msgs / sc.Pubs
	var delivered atomic.Int64
	last := newLastDelivery()
	var conns []net.Conn
	defer func() { closeAll(conns) }()
	type pair struct {
		pub net.Conn
		got chan struct{}
	}
	pairs := make([]pair, sc.Pubs)
	for i := range pairs {
		got := make(chan struct{}, 1)
		sub, sbr, err := loadConnect(addr, fmt.Sprintf("pair-sub-%d", i), fmt.Sprintf("pair/%d", i), sc.QoS)
		if err != nil {
			return r, err
		}
		conns = append(conns, sub)
		go subscriberFunc(sub, sbr, &delivered, last, nil, func() {
			select {
			case got <- struct{}{}:
			default: // a duplicate: the publisher waits for one
			}
		})
		pub, pbr, err := loadConnect(addr, fmt.Sprintf("pair-pub-%d", i), "", 0)
		if err != nil {
			return r, err
		}
		conns = append(conns, pub)
		go func() { _, _ = io.Copy(io.Discard, pbr) }() // the PUBACKs
		pairs[i] = pair{pub, got}
	}
	brokerCPU0, err1 := cpuSeconds(pid)
	toolCPU0, err2 := cpuSeconds(os.Getpid())
	if err := errors.Join(err1, err2); err != nil {
		return r, err
	}
	lat := make([][]time.Duration, len(pairs))
	errs := make(chan error, len(pairs))
	var wg sync.WaitGroup
	start := time.Now()
	for i, pr := range pairs {
		wg.Go(func() {
			p := packet.Packet{Type: packet.Publish, Topic: fmt.Sprintf("pair/%d", i), Payload: make([]byte, 64), QoS: sc.QoS}
			var buf []byte
			for k := range per {
				p.PacketID = uint16(k%65535 + 1)
				buf = p.Encode(buf[:0], packet.V311)
				t0 := time.Now()
				if _, err := pr.pub.Write(buf); err != nil {
					errs <- err
					return
				}
				select {
				case <-pr.got:
				case <-time.After(10 * time.Second):
					errs <- fmt.Errorf("pair %d: message %d not delivered within 10 s", i, k)
					return
				}
				lat[i] = append(lat[i], time.Since(t0))
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		return r, err
	}
	r.Seconds = time.Since(start).Seconds()
	r.Delivered = int(delivered.Load())
	r.MinShare = 100 * float64(r.Delivered) / float64(r.Expected)
	r.Rate = float64(r.Delivered) / r.Seconds
	brokerCPU1, err1 := cpuSeconds(pid)
	toolCPU1, err2 := cpuSeconds(os.Getpid())
	if err := errors.Join(err1, err2); err != nil {
		return r, err
	}
	r.BrokerCPU, r.ToolCPU = (brokerCPU1-brokerCPU0)/r.Seconds, (toolCPU1-toolCPU0)/r.Seconds
	all := slices.Concat(lat...)
	slices.Sort(all)
	r.P50 = float64(all[len(all)/2]) / float64(time.Millisecond)
	r.P99 = float64(all[len(all)*99/100]) / float64(time.Millisecond)
	return r, nil
}

// toolPublishRate measures sc's publishers alone: into a sink that reads (and
// acknowledges QoS 1) but routes nothing.
func toolPublishRate(sc scenario) (float64, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer func() { _ = l.Close() }()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go sink(c)
		}
	}()
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, sc.Pubs)
	var conns []net.Conn
	defer func() { closeAll(conns) }()
	for i := range sc.Pubs {
		c, br, err := loadConnect(l.Addr().String(), "tool-pub-"+strconv.Itoa(i), "", 0)
		if err != nil {
			return 0, err
		}
		conns = append(conns, c)
		wg.Go(func() { errs <- publisher(c, br, "load/"+strconv.Itoa(i), sc.QoS, sc.Msgs/sc.Pubs) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return 0, err
		}
	}
	return float64(sc.Msgs/sc.Pubs*sc.Pubs) / time.Since(start).Seconds(), nil
}

// sink answers CONNECT and QoS 1 PUBLISH packets and otherwise only reads.
func sink(c net.Conn) {
	defer func() { _ = c.Close() }()
	br := bufio.NewReaderSize(c, 64<<10)
	var p packet.Packet
	var out []byte
	for {
		if err := packet.ReadInto(br, &p, packet.V311, 0); err != nil {
			return
		}
		switch {
		case p.Type == packet.Connect:
			out = (&packet.Packet{Type: packet.Connack}).Encode(out, packet.V311)
		case p.Type == packet.Publish && p.QoS == 1:
			out = (&packet.Packet{Type: packet.Puback, PacketID: p.PacketID}).Encode(out, packet.V311)
		case p.Type == packet.Publish && p.QoS == 2:
			out = (&packet.Packet{Type: packet.Pubrec, PacketID: p.PacketID}).Encode(out, packet.V311)
		case p.Type == packet.Pubrel:
			out = (&packet.Packet{Type: packet.Pubcomp, PacketID: p.PacketID}).Encode(out, packet.V311)
		}
		if len(out) > 0 && (br.Buffered() == 0 || len(out) > 4096) {
			if _, err := c.Write(out); err != nil {
				return
			}
			out = out[:0]
		}
	}
}

// toolReceiveRate measures sc's subscribers alone: fed by a source that writes
// their share of deliveries as fast as they take them (and reads their acks), in
// 64 KiB writes or (single) one packet per write, as a broker that does not batch.
func toolReceiveRate(sc scenario, single bool) (float64, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer func() { _ = l.Close() }()
	perSub := sc.expected() / sc.Subs
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go source(c, sc.QoS, perSub, single)
		}
	}()
	var delivered atomic.Int64
	last := newLastDelivery()
	start := time.Now()
	var conns []net.Conn
	defer func() { closeAll(conns) }()
	for i := range sc.Subs {
		c, br, err := loadConnect(l.Addr().String(), "tool-sub-"+strconv.Itoa(i), "load/#", sc.QoS)
		if err != nil {
			return 0, err
		}
		conns = append(conns, c)
		go subscriber(c, br, &delivered, last, nil)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for delivered.Load() < int64(sc.expected()) {
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("the tool's subscribers received %d of %d", delivered.Load(), sc.expected())
		}
		time.Sleep(5 * time.Millisecond) // polling the counter, bounded by the deadline
	}
	return float64(sc.expected()) / time.Since(start).Seconds(), nil
}

// source answers CONNECT and SUBSCRIBE, then writes n PUBLISH packets at qos in
// 64 KiB writes, reading (and dropping) the acks until the subscriber hangs up
// (closing first, with acks unread, would reset the connection and lose what the
// subscriber has not read yet).
func source(c net.Conn, qos byte, n int, single bool) {
	defer func() { _ = c.Close() }()
	br := bufio.NewReaderSize(c, 64<<10)
	for _, want := range []packet.Type{packet.Connect, packet.Subscribe} {
		p, err := packet.Read(br, packet.V311, 0)
		if err != nil || p.Type != want {
			return
		}
		reply := &packet.Packet{Type: packet.Connack}
		if want == packet.Subscribe {
			reply = &packet.Packet{Type: packet.Suback, PacketID: p.PacketID, ReasonCodes: []packet.Code{packet.Code(qos)}}
		}
		if _, err := c.Write(reply.Encode(nil, packet.V311)); err != nil {
			return
		}
	}
	drained := make(chan struct{})
	go func() { _, _ = io.Copy(io.Discard, br); close(drained) }()
	defer func() { <-drained }()
	p := packet.Packet{Type: packet.Publish, Topic: "load/0", Payload: make([]byte, 64), QoS: qos}
	var buf []byte
	for i := range n {
		if qos > 0 {
			p.PacketID = uint16(i%65535 + 1)
		}
		buf = p.Encode(buf, packet.V311)
		if single || len(buf) >= 64<<10 || i == n-1 {
			if _, err := c.Write(buf); err != nil {
				return
			}
			buf = buf[:0]
		}
	}
}

func closeAll(conns []net.Conn) {
	for _, c := range conns {
		_ = c.Close()
	}
}

// cpuSeconds is the user and system CPU time process pid has used.
func cpuSeconds(pid int) (float64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command (which may hold spaces, in parentheses): utime is
	// the 14th field, stime the 15th, in clock ticks (100 per second on Linux).
	s := string(data)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	if len(f) < 13 {
		return 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	ut, err1 := strconv.ParseFloat(f[11], 64)
	st, err2 := strconv.ParseFloat(f[12], 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return (ut + st) / 100, nil
}
