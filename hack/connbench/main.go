// Command connbench measures what idle MQTT connections cost a broker: the resident
// memory (RSS) per connection at several connection counts, and the connect rate.
// It runs mqttd and Debian's mosquitto side by side on the same machine, in
// alternating rounds. docs/benchmarks.md has the figures; `make bench-conns` runs it.
//
// A process here may hold at most 20,000 open files, so the connections are opened by
// several client processes (the program runs itself with "hold"), each from its own
// range of 127.0.0.0/8 source addresses. Every connection is MQTT 3.1.1, clean
// session, keepalive 60 s, and subscribes to one topic of its own at QoS 1; each
// sends PINGREQ once a minute, as a client with nothing else to send does, the
// connections' pings spread evenly over the minute (as a fleet's are), and is
// otherwise silent.
//
// For each broker and each level N: start the broker fresh, read its RSS once it
// settles (the base), open N connections, read the RSS again once it settles, and
// report (RSS - base) / N. Connect rate: N divided by the time from starting the
// client processes to the last SUBACK (dial, CONNECT, CONNACK, SUBSCRIBE, SUBACK;
// 64 at a time per process).
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mqtt-operator/mqtt-operator/broker/packet"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "hold" {
		if err := hold(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "hold:", err)
			os.Exit(1)
		}
		return
	}
	if len(os.Args) > 1 && os.Args[1] == "cluster" {
		if err := clusterRun(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "connbench cluster:", err)
			os.Exit(1)
		}
		return
	}
	if len(os.Args) > 1 && os.Args[1] == "load" {
		if err := loadRun(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "connbench load:", err)
			os.Exit(1)
		}
		return
	}
	if err := measure(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "connbench:", err)
		os.Exit(1)
	}
}

// hold opens n connections, reports "ready <n> <seconds>" on stdout, pings each once a
// minute (spread evenly) and exits when stdin closes (the parent ended) or on SIGTERM.
func hold(args []string) error {
	fs := flag.NewFlagSet("hold", flag.ContinueOnError)
	addr := fs.String("addr", "", "broker address")
	n := fs.Int("n", 0, "connections")
	srcNet := fs.Int("src", 1, "second octet of the 127.x.0.0/16 source range")
	prefix := fs.String("prefix", "c", "client ID prefix")
	conc := fs.Int("concurrency", 64, "connections opened at a time")
	fleet := fs.Int("fleet", 0, "the first this many connections also subscribe to fleet/all (QoS 0)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	conns := make([]net.Conn, *n)
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, *conc)
	start := time.Now()
	for range *conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= *n {
					return
				}
				c, err := connect(*addr, *srcNet, i, fmt.Sprintf("%s-%d", *prefix, i), i < *fleet)
				if err != nil {
					errs <- fmt.Errorf("connection %d: %w", i, err)
					next.Store(int64(*n)) // stop the others
					return
				}
				conns[i] = c
			}
		}()
	}
	wg.Wait()
	select {
	case err := <-errs:
		return err
	default:
	}
	fmt.Printf("ready %d %.6f\n", *n, time.Since(start).Seconds())
	for _, c := range conns[:min(*fleet, len(conns))] {
		go func() { _, _ = io.Copy(io.Discard, c) }() // fleet/all's messages: read, as a device would
	}

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	stdinClosed := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		close(stdinClosed)
	}()
	ping := (&packet.Packet{Type: packet.Pingreq}).Encode(nil, packet.V311)
	const step = 100 * time.Millisecond
	perStep := (len(conns) + 599) / 600 // every connection once in 600 steps: a minute
	tick := time.NewTicker(step)
	defer tick.Stop()
	turn := 0
	for {
		select {
		case <-stop:
			return nil
		case <-stdinClosed:
			return nil
		case <-tick.C:
			for range perStep {
				c := conns[turn]
				_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
				if _, err := c.Write(ping); err != nil {
					return fmt.Errorf("ping %d: %w", turn, err)
				}
				turn = (turn + 1) % len(conns)
			}
		}
	}
}

// connect dials from 127.src.(i/250).(i%250+1), sends CONNECT and SUBSCRIBE and
// waits for CONNACK and SUBACK.
func connect(addr string, src, i int, id string, fleet bool) (net.Conn, error) {
	local := &net.TCPAddr{IP: net.IPv4(127, byte(src), byte(i/250), byte(i%250+1))}
	d := net.Dialer{LocalAddr: local, Timeout: 30 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	conn := &packet.Packet{Type: packet.Connect}
	conn.Connect = packet.ConnectFields{ProtocolName: "MQTT", ProtocolVersion: packet.V311, CleanStart: true, KeepAlive: 60, ClientID: id}
	sub := &packet.Packet{Type: packet.Subscribe, PacketID: 1,
		Subscriptions: []packet.Subscription{{Filter: "devices/" + id + "/cmd", QoS: 1}}}
	buf := conn.Encode(nil, packet.V311)
	buf = sub.Encode(buf, packet.V311)
	acks := []packet.Type{packet.Connack, packet.Suback}
	if fleet {
		all := &packet.Packet{Type: packet.Subscribe, PacketID: 2, Subscriptions: []packet.Subscription{{Filter: "fleet/all"}}}
		buf = all.Encode(buf, packet.V311)
		acks = append(acks, packet.Suback)
	}
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := c.Write(buf); err != nil {
		_ = c.Close()
		return nil, err
	}
	br := bufio.NewReaderSize(c, 64)
	for _, want := range acks {
		p, err := packet.Read(br, packet.V311, 0)
		if err != nil {
			_ = c.Close()
			return nil, fmt.Errorf("waiting for %v: %w", want, err)
		}
		if p.Type != want || (want == packet.Connack && p.ReasonCode != 0) || (want == packet.Suback && (len(p.ReasonCodes) != 1 || p.ReasonCodes[0] > 2)) {
			_ = c.Close()
			return nil, fmt.Errorf("want %v, got %v (code %d %v)", want, p.Type, byte(p.ReasonCode), p.ReasonCodes)
		}
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}

// result is one measurement.
type result struct {
	Broker      string  `json:"broker"`
	Round       int     `json:"round"`
	Conns       int     `json:"conns"`
	BaseRSS     int64   `json:"baseRSSBytes"`
	RSS         int64   `json:"rssBytes"`
	PerConn     float64 `json:"rssPerConnBytes"`
	BaseHeap    int64   `json:"baseGoHeapBytes,omitempty"` // mqttd: live heap and stacks (goHeap)
	Heap        int64   `json:"goHeapBytes,omitempty"`
	HeapPerConn float64 `json:"goHeapPerConnBytes,omitempty"`
	ConnectRate float64 `json:"connectsPerSecond"`
	Clients     int     `json:"clientProcesses"`
}

func measure(args []string) error {
	fs := flag.NewFlagSet("connbench", flag.ContinueOnError)
	mqttd := fs.String("mqttd", "bin/mqttd", "the mqttd binary")
	mosquitto := fs.String("mosquitto", "/usr/sbin/mosquitto", "the mosquitto binary (empty: skip)")
	levels := fs.String("levels", "5000,10000,19000", "connection counts")
	perProcess := fs.Int("per-process", 5000, "connections per client process")
	rounds := fs.Int("rounds", 1, "rounds; each runs every broker at every level, alternating")
	out := fs.String("out", "", "write the results as JSON here too")
	settle := fs.Duration("settle", 130*time.Second, "wait at least this long before reading the memory (Go's runtime collects garbage at least every 2 minutes, and returns memory after)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var ns []int
	for _, s := range strings.Split(*levels, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n <= 0 {
			return fmt.Errorf("bad level %q", s)
		}
		ns = append(ns, n)
	}
	brokers := []string{"mqttd"}
	if *mosquitto != "" {
		brokers = append(brokers, "mosquitto")
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "connbench-")
	if err != nil {
		return err
	}
	defer func() { _ = os.RemoveAll(tmp) }()

	var results []result
	for round := 1; round <= *rounds; round++ {
		for _, n := range ns {
			for _, b := range brokers {
				bin := *mqttd
				if b == "mosquitto" {
					bin = *mosquitto
				}
				r, err := runOne(self, b, bin, filepath.Join(tmp, fmt.Sprintf("%s-%d-%d", b, round, n)), n, *perProcess, *settle)
				if err != nil {
					return fmt.Errorf("%s at %d connections: %w", b, n, err)
				}
				r.Round = round
				results = append(results, r)
				fmt.Printf("%-9s round %d %6d conns: base %6.1f MiB, rss %6.1f MiB, %7.2f KiB/conn (live Go heap+stacks %.2f KiB/conn), %7.0f connects/s\n",
					b, round, n, mib(r.BaseRSS), mib(r.RSS), r.PerConn/1024, r.HeapPerConn/1024, r.ConnectRate)
			}
		}
	}
	summarize(results)
	if *out != "" {
		data, _ := json.MarshalIndent(results, "", "  ")
		if err := os.WriteFile(*out, data, 0o644); err != nil {
			return err
		}
	}
	return nil
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// summarize prints the median of every broker and level, and mqttd's ratios.
func summarize(results []result) {
	type key struct {
		broker string
		n      int
	}
	per := map[key][]float64{}
	heap := map[key][]float64{}
	rate := map[key][]float64{}
	var keys []key
	for _, r := range results {
		k := key{r.Broker, r.Conns}
		if _, ok := per[k]; !ok {
			keys = append(keys, k)
		}
		per[k] = append(per[k], r.PerConn)
		heap[k] = append(heap[k], r.HeapPerConn)
		rate[k] = append(rate[k], r.ConnectRate)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].n != keys[j].n {
			return keys[i].n < keys[j].n
		}
		return keys[i].broker < keys[j].broker
	})
	fmt.Println("\nmedians:")
	fmt.Println("| connections | broker | RSS per connection | live Go heap + stacks per connection | connects/s |")
	fmt.Println("| ---: | --- | ---: | ---: | ---: |")
	for _, k := range keys {
		h := "-"
		if k.broker == "mqttd" {
			h = fmt.Sprintf("%.2f KiB", median(heap[k])/1024)
		}
		fmt.Printf("| %d | %s | %.2f KiB | %s | %.0f |\n", k.n, k.broker, median(per[k])/1024, h, median(rate[k]))
	}
}

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// runOne starts the broker, measures the base, connects n clients and measures again.
func runOne(self, broker, bin, dir string, n, perProcess int, settle time.Duration) (result, error) {
	r := result{Broker: broker, Conns: n}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return r, err
	}
	addr, metricsURL, cmd, stop, err := startBroker(broker, bin, dir, "--limits.max-connections", "0", "--limits.connection-rate", "0")
	if err != nil {
		return r, err
	}
	defer stop()
	if r.BaseRSS, err = settledRSS(cmd.Process.Pid, 0); err != nil {
		return r, err
	}
	if r.BaseHeap, err = goHeap(metricsURL); err != nil {
		return r, err
	}

	procs := (n + perProcess - 1) / perProcess
	r.Clients = procs
	h := newHolders(self)
	defer h.stop()
	start := time.Now()
	for i := range procs {
		cn := perProcess
		if i == procs-1 {
			cn = n - perProcess*(procs-1)
		}
		if err := h.start("-addr", addr, "-n", strconv.Itoa(cn), "-src", strconv.Itoa(i+1),
			"-prefix", fmt.Sprintf("%s-%d", broker, i)); err != nil {
			return r, err
		}
	}
	if err := h.wait(); err != nil {
		return r, err
	}
	r.ConnectRate = float64(n) / time.Since(start).Seconds()
	if r.RSS, err = settledRSS(cmd.Process.Pid, settle); err != nil {
		return r, err
	}
	if r.Heap, err = goHeap(metricsURL); err != nil {
		return r, err
	}
	r.PerConn = float64(r.RSS-r.BaseRSS) / float64(n)
	r.HeapPerConn = float64(r.Heap-r.BaseHeap) / float64(n)
	return r, nil
}

// startBroker starts broker ("mqttd" or "mosquitto", binary bin) on a free
// loopback port with its files in dir and waits until it listens. mqttdFlags are
// added to mqttd's command line; mosquittoConf to mosquitto's configuration file.
// metricsURL is mqttd's /metrics (empty for mosquitto). stop ends it (SIGTERM, then
// SIGKILL after 30 s).
func startBroker(broker, bin, dir string, mqttdFlags ...string) (addr, metricsURL string, cmd *exec.Cmd, stop func(), err error) {
	return startBrokerConf(broker, bin, dir, "", mqttdFlags...)
}

func startBrokerConf(broker, bin, dir, mosquittoConf string, mqttdFlags ...string) (addr, metricsURL string, cmd *exec.Cmd, stop func(), err error) {
	port, err := freePort()
	if err != nil {
		return "", "", nil, nil, err
	}
	addr = fmt.Sprintf("127.0.0.1:%d", port)
	apiPort, err := freePort()
	if err != nil {
		return "", "", nil, nil, err
	}
	switch broker {
	case "mqttd":
		metricsURL = fmt.Sprintf("http://127.0.0.1:%d/metrics", apiPort)
		cmd = exec.Command(bin, append([]string{"--listeners.tcp", addr, "--listeners.websocket", "", "--api.listen", fmt.Sprintf("127.0.0.1:%d", apiPort),
			"--store.dir", filepath.Join(dir, "store"), "--log.level", "warn"}, mqttdFlags...)...)
	case "mosquitto":
		conf := filepath.Join(dir, "mosquitto.conf")
		text := fmt.Sprintf("listener %d 127.0.0.1\nallow_anonymous true\nmax_connections -1\npersistence false\nlog_dest none\n%s", port, mosquittoConf)
		if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
			return "", "", nil, nil, err
		}
		cmd = exec.Command(bin, "-c", conf)
	default:
		return "", "", nil, nil, fmt.Errorf("unknown broker %q", broker)
	}
	if brokerCPUs != "" { // taskset execs the broker: the pid stays the broker's
		cmd = exec.Command("taskset", append([]string{"-c", brokerCPUs}, cmd.Args...)...)
	}
	logFile, err := os.Create(filepath.Join(dir, "broker.log"))
	if err != nil {
		return "", "", nil, nil, err
	}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		_ = logFile.Close()
		return "", "", nil, nil, err
	}
	proc := cmd
	stop = func() {
		_ = proc.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = proc.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = proc.Process.Kill()
			<-done
		}
		_ = logFile.Close()
	}
	if err := waitListening(addr, 30*time.Second); err != nil {
		stop()
		return "", "", nil, nil, err
	}
	return addr, metricsURL, cmd, stop, nil
}

// brokerCPUs, when set, is the CPU list (taskset -c) the brokers run on.
var brokerCPUs string

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer func() { _ = l.Close() }()
	if a, ok := l.Addr().(*net.TCPAddr); ok {
		return a.Port, nil
	}
	return 0, fmt.Errorf("not a TCP address: %v", l.Addr())
}

func waitListening(addr string, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			return c.Close()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the broker does not listen on %s: %w", addr, err)
		}
		time.Sleep(100 * time.Millisecond) // polling a process we started, with a deadline
	}
}

// settledRSS reads the process's RSS every second, for at least atLeast and then until
// three readings in a row are within 0.5 % of each other (or 60 s more pass), and
// returns the last.
func settledRSS(pid int, atLeast time.Duration) (int64, error) {
	start := time.Now()
	deadline := start.Add(atLeast + 60*time.Second)
	var prev []int64
	for {
		rss, err := readRSS(pid)
		if err != nil {
			return 0, err
		}
		prev = append(prev, rss)
		if len(prev) >= 3 {
			a, b, c := prev[len(prev)-3], prev[len(prev)-2], prev[len(prev)-1]
			lo, hi := min(a, b, c), max(a, b, c)
			if time.Since(start) >= atLeast && float64(hi-lo) <= 0.005*float64(hi) || time.Now().After(deadline) {
				return c, nil
			}
		}
		time.Sleep(time.Second) // sampling interval, bounded by the deadline above
	}
}

func readRSS(pid int) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			kb, err := strconv.ParseInt(f[0], 10, 64)
			return kb * 1024, err
		}
	}
	return 0, errors.New("no VmRSS in /proc status")
}

// goHeap reads what mqttd's last garbage collection found live on the heap, plus the
// goroutine stacks in use, from its /metrics (0 without a URL): the memory a limit
// (GOMEMLIMIT, or the container's, which mqttd applies) has to hold.
func goHeap(url string) (int64, error) {
	if url == "" {
		return 0, nil
	}
	resp, err := http.Get(url)
	if err != nil {
		return 0, err
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	var total float64
	found := 0
	for _, line := range strings.Split(string(body), "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && (f[0] == "go_gc_heap_live_bytes" || f[0] == "go_memstats_stack_inuse_bytes") {
			v, err := strconv.ParseFloat(f[1], 64)
			if err != nil {
				return 0, err
			}
			total += v
			found++
		}
	}
	if found != 2 {
		return 0, fmt.Errorf("%s: no live heap and stack figures", url)
	}
	return int64(total), nil
}

// holders are the client processes ("hold") of one measurement.
type holders struct {
	self   string
	cmds   []*exec.Cmd
	stdins []io.WriteCloser
	ready  chan error // one report per process: nil once its connections are up
}

func newHolders(self string) *holders { return &holders{self: self, ready: make(chan error, 1024)} }

// start runs one client process with the hold flags args.
func (h *holders) start(args ...string) error {
	c := exec.Command(h.self, append([]string{"hold"}, args...)...)
	stdin, err := c.StdinPipe()
	if err != nil {
		return err
	}
	stdout, err := c.StdoutPipe()
	if err != nil {
		return err
	}
	c.Stderr = os.Stderr
	if err := c.Start(); err != nil {
		return err
	}
	h.cmds = append(h.cmds, c)
	h.stdins = append(h.stdins, stdin)
	n := len(h.cmds)
	go func() {
		line, err := bufio.NewReader(stdout).ReadString('\n')
		if err == nil && !strings.HasPrefix(line, "ready ") {
			err = fmt.Errorf("said %q", line)
		}
		if err != nil {
			err = fmt.Errorf("client process %d: %w", n, err)
		}
		h.ready <- err
		_, _ = io.Copy(io.Discard, stdout)
	}()
	return nil
}

// wait returns once every process started has its connections up (or one failed),
// within 10 minutes.
func (h *holders) wait() error {
	deadline := time.After(10 * time.Minute)
	for range h.cmds {
		select {
		case err := <-h.ready:
			if err != nil {
				return err
			}
		case <-deadline:
			return errors.New("the clients did not connect within 10 minutes")
		}
	}
	return nil
}

// stop ends the processes (a closed stdin) and waits for them.
func (h *holders) stop() {
	for _, in := range h.stdins {
		_ = in.Close()
	}
	for _, c := range h.cmds {
		_ = c.Wait()
	}
}
