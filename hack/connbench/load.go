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
}

func (sc scenario) expected() int { return sc.Msgs / sc.Pubs * sc.Pubs * sc.Subs }

type loadResult struct {
	Broker    string  `json:"broker"`
	Scenario  string  `json:"scenario"`
	Round     int     `json:"round"`
	Delivered int     `json:"delivered"`
	Expected  int     `json:"expected"`
	Seconds   float64 `json:"seconds"`
	Rate      float64 `json:"deliveredPerSecond"`
	BrokerCPU float64 `json:"brokerCores"` // CPU seconds per second of the run
	ToolCPU   float64 `json:"toolCores"`
	// BrokerDropped is what mqttd counted as dropped (mqttd_messages_dropped_total).
	BrokerDropped float64 `json:"brokerDropped,omitempty"`
}

func loadRun(args []string) error {
	fs := flag.NewFlagSet("load", flag.ContinueOnError)
	mqttd := fs.String("mqttd", "bin/mqttd", "the mqttd binary")
	mosquitto := fs.String("mosquitto", "/usr/sbin/mosquitto", "the mosquitto binary")
	rounds := fs.Int("rounds", 5, "rounds; each runs every scenario on both brokers")
	msgs := fs.Int("messages", 200000, "messages published per QoS 0 scenario")
	msgs1 := fs.Int("qos1-messages", 100000, "messages published per QoS 1 scenario")
	out := fs.String("out", "", "write the results as JSON here too")
	doc := fs.String("doc", "", "replace the text between the bench-compare markers of this Markdown file with the results")
	only := fs.String("only", "", "run only the scenarios whose name contains this")
	pin := fs.Bool("pin", false, "run the tool on CPU 0 and the brokers on CPU 1 (taskset): a core each")
	if err := fs.Parse(args); err != nil {
		return err
	}
	command := "connbench load " + strings.Join(args, " ")
	scenarios := []scenario{
		{Name: "fan-in: 4 publishers, 1 subscriber, QoS 0", Pubs: 4, Subs: 1, QoS: 0, Msgs: *msgs},
		{Name: "fan-out: 1 publisher, 10 subscribers, QoS 0", Pubs: 1, Subs: 10, QoS: 0, Msgs: *msgs / 10},
		{Name: "1 publisher, 1 subscriber, QoS 1", Pubs: 1, Subs: 1, QoS: 1, Msgs: *msgs1},
		{Name: "fan-in: 4 publishers, 1 subscriber, QoS 1", Pubs: 4, Subs: 1, QoS: 1, Msgs: *msgs1},
	}
	if *pin {
		if out, err := exec.Command("taskset", "-a", "-p", "-c", "0", strconv.Itoa(os.Getpid())).CombinedOutput(); err != nil {
			return fmt.Errorf("pinning the tool to CPU 0: %w: %s", err, out)
		}
		brokerCPUs = "1"
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
	tool := map[string][2]float64{}
	for _, sc := range scenarios {
		pub, err := toolPublishRate(sc)
		if err != nil {
			return err
		}
		sub, err := toolReceiveRate(sc)
		if err != nil {
			return err
		}
		tool[sc.Name] = [2]float64{pub, sub}
		fmt.Printf("  %-46s publish %9.0f msgs/s, receive %9.0f deliveries/s\n", sc.Name, pub, sub)
	}

	brokers := []string{"mqttd", "mosquitto"}
	var results []loadResult
	for round := 1; round <= *rounds; round++ {
		order := brokers
		if round%2 == 0 {
			order = []string{brokers[1], brokers[0]}
		}
		for _, sc := range scenarios {
			for _, b := range order {
				bin := *mqttd
				if b == "mosquitto" {
					bin = *mosquitto
				}
				dir := filepath.Join(tmp, fmt.Sprintf("%s-%d-%d", b, round, len(results)))
				if err := os.MkdirAll(dir, 0o755); err != nil {
					return err
				}
				// A throughput test: both brokers without publish rate limits, with
				// queues that hold a whole run (nothing dropped) and mqttd's window of
				// 1,024 messages. (mqttd takes a max_queued_messages of 0 for its
				// default, 10,000: hence a number.)
				addr, metricsURL, cmd, stop, err := startBrokerConf(b, bin, dir,
					"max_inflight_messages 1024\nmax_queued_messages 1000000\nmax_queued_bytes 0\n",
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
				fmt.Printf("%-9s round %d %-46s %9.0f deliveries/s (%d of %d in %.2f s, %.0f counted dropped), broker %.2f cores, tool %.2f cores\n",
					b, round, sc.Name, r.Rate, r.Delivered, r.Expected, r.Seconds, r.BrokerDropped, r.BrokerCPU, r.ToolCPU)
			}
		}
	}
	table := summarizeLoad(scenarios, results, tool)
	fmt.Print("\nmedians:\n" + table)
	if *out != "" {
		data, _ := json.MarshalIndent(results, "", "  ")
		if err := os.WriteFile(*out, data, 0o644); err != nil {
			return err
		}
	}
	if *doc != "" {
		marker := "bench-compare"
		if *pin {
			marker = "bench-compare-pinned"
		}
		return writeDoc(*doc, marker, table, command, *mosquitto, *rounds)
	}
	return nil
}

// writeDoc replaces what is between the markers named marker in file with the
// results, the machine, the versions and the command.
func writeDoc(file, marker, table, command, mosquitto string, rounds int) error {
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
	fmt.Fprintf(&b, "- mosquitto: %s (`%s`)\n", firstLine(mosquitto, "-h"), mosquitto)
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
// rate and CPU, the ratio, and the tool's own rates.
func summarizeLoad(scenarios []scenario, results []loadResult, tool map[string][2]float64) string {
	var b strings.Builder
	b.WriteString("| scenario | mqttd deliveries/s | mosquitto deliveries/s | mqttd / mosquitto | delivered (mqttd, mosquitto) | broker cores (mqttd, mosquitto) | tool cores (with mqttd, mosquitto) | tool alone: publish, receive per s |\n")
	b.WriteString("| --- | ---: | ---: | ---: | --- | --- | --- | --- |\n")
	for _, sc := range scenarios {
		med := func(b string, f func(loadResult) float64) float64 {
			var v []float64
			for _, r := range results {
				if r.Broker == b && r.Scenario == sc.Name {
					v = append(v, f(r))
				}
			}
			return median(v)
		}
		rate := func(r loadResult) float64 { return r.Rate }
		bc := func(r loadResult) float64 { return r.BrokerCPU }
		tc := func(r loadResult) float64 { return r.ToolCPU }
		m, q := med("mqttd", rate), med("mosquitto", rate)
		share := func(r loadResult) float64 { return 100 * float64(r.Delivered) / float64(r.Expected) }
		fmt.Fprintf(&b, "| %s | %.0f | %.0f | %.2fx | %.1f %%, %.1f %% | %.2f, %.2f | %.2f, %.2f | %.0f, %.0f |\n", sc.Name, m, q, m/q,
			med("mqttd", share), med("mosquitto", share),
			med("mqttd", bc), med("mosquitto", bc), med("mqttd", tc), med("mosquitto", tc), tool[sc.Name][0], tool[sc.Name][1])
	}
	return b.String()
}

// runScenario connects sc's subscribers and publishers to addr, publishes, and
// measures the deliveries per second: from the first publish to the last delivery,
// once every subscriber has all it should get or nothing arrived for 3 s (QoS 0
// may be dropped). pid is the broker's, for its CPU time.
func runScenario(addr string, sc scenario, pid int) (loadResult, error) {
	r := loadResult{Scenario: sc.Name, Expected: sc.expected()}
	var delivered, last atomic.Int64
	var subs []net.Conn
	defer func() { closeAll(subs) }()
	ended := make(chan error, sc.Subs)
	for i := range sc.Subs {
		c, br, err := loadConnect(addr, fmt.Sprintf("load-sub-%d", i), "load/#", sc.QoS)
		if err != nil {
			return r, err
		}
		subs = append(subs, c)
		go subscriber(c, br, &delivered, &last, ended)
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
	for prev, idle := int64(-1), time.Now(); delivered.Load() < int64(r.Expected); {
		if d := delivered.Load(); d != prev {
			prev, idle = d, time.Now()
		} else if time.Since(idle) > 3*time.Second {
			break
		}
		time.Sleep(5 * time.Millisecond) // polling the counters, bounded by the idle limit
	}
	select {
	case err := <-ended:
		return r, fmt.Errorf("a subscriber's connection ended after %d deliveries: %w", delivered.Load(), err)
	default:
	}
	end := time.Unix(0, last.Load())
	r.Delivered = int(delivered.Load())
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
	_ = c.SetDeadline(time.Time{})
	return c, br, nil
}

// subscriber counts the PUBLISH packets read from c, acknowledging QoS 1 ones (the
// acks of what one read brought, written together), until c fails; then it
// returns why (on ended, if not nil).
func subscriber(c net.Conn, br *bufio.Reader, delivered, last *atomic.Int64, ended chan<- error) {
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
		if p.Type != packet.Publish {
			continue
		}
		delivered.Add(1)
		last.Store(time.Now().UnixNano())
		if p.QoS == 1 {
			acks = (&packet.Packet{Type: packet.Puback, PacketID: p.PacketID}).Encode(acks, packet.V311)
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
// socket takes them (64 KiB writes), QoS 1 with up to 256 unacknowledged (the acks
// read by a goroutine of its own), and returns once all are written (QoS 0) or
// acknowledged (QoS 1).
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
	const window = 256
	room := make(chan struct{}, window)
	acked := make(chan error, 1)
	go func() {
		var p packet.Packet
		for got := 0; got < n; {
			if err := packet.ReadInto(br, &p, packet.V311, 0); err != nil {
				acked <- err
				return
			}
			if p.Type == packet.Puback {
				got++
				<-room
			}
		}
		acked <- nil
	}()
	w := bufio.NewWriterSize(c, 64<<10)
	p := packet.Packet{Type: packet.Publish, Topic: topic, Payload: payload, QoS: 1}
	var buf []byte
	for i := range n {
		select {
		case room <- struct{}{}:
		default: // the window is full: send what is buffered, then wait
			if err := w.Flush(); err != nil {
				return err
			}
			room <- struct{}{}
		}
		p.PacketID = uint16(i%65535 + 1)
		buf = p.Encode(buf[:0], packet.V311)
		if _, err := w.Write(buf); err != nil {
			return err
		}
	}
	if err := w.Flush(); err != nil {
		return err
	}
	return <-acked
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
// their share of deliveries as fast as they take them (and reads their acks).
func toolReceiveRate(sc scenario) (float64, error) {
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
			go source(c, sc.QoS, perSub)
		}
	}()
	var delivered, last atomic.Int64
	start := time.Now()
	var conns []net.Conn
	defer func() { closeAll(conns) }()
	for i := range sc.Subs {
		c, br, err := loadConnect(l.Addr().String(), "tool-sub-"+strconv.Itoa(i), "load/#", sc.QoS)
		if err != nil {
			return 0, err
		}
		conns = append(conns, c)
		go subscriber(c, br, &delivered, &last, nil)
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
func source(c net.Conn, qos byte, n int) {
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
		if len(buf) >= 64<<10 || i == n-1 {
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
