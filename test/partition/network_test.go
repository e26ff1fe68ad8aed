package partition

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// Names of what the package creates. Every namespace and link starts with namePrefix
// and the test process's PID, so a run never touches another live run's network and a
// later run recognizes the leftovers of a dead one.
const (
	namePrefix = "mqp"
	nodeCount  = 3
	// bogusMAC is the hardware address a cut gives a peer in a node's neighbor table:
	// no interface has it, so the bridge floods the frames and every port drops them.
	bogusMAC = "02:00:00:00:de:ad"
	// ifName is each node's interface inside its namespace.
	ifName = "eth0"
)

var runPrefix = fmt.Sprintf("%s%d", namePrefix, os.Getpid())

// network is a bridge in a namespace of its own (the switch), one namespace per node
// linked to it by a veth (addresses .11, .12, .13 of the /24), and a veth from the root
// namespace (the test process's side, address .1) to it. Nodes reach each other over
// the bridge; the test process reaches every node directly. The bridge is not in the
// root namespace because a host that runs Docker or Kubernetes filters bridged traffic
// there (br_netfilter with an iptables FORWARD policy of DROP): the switch's own
// iptables are empty.
type network struct {
	subnet string // the first three octets of the /24, e.g. "10.213.201"

	mu   sync.Mutex
	cuts map[[2]int]bool // directed: [a, b] means a's packets to b are dropped
	gone bool            // torn down
}

func nsName(i int) string           { return fmt.Sprintf("%s-n%d", runPrefix, i) }
func switchNS() string              { return runPrefix + "-sw" }
func uplinkName() string            { return runPrefix + "up" }
func vethName(i int) string         { return fmt.Sprintf("v%d", i) } // in the switch namespace
func (nw *network) gateway() string { return nw.subnet + ".1" }
func (nw *network) ip(i int) string { return fmt.Sprintf("%s.%d", nw.subnet, 11+i) }

// live holds the networks and processes of this run, for teardownAll.
var live struct {
	sync.Mutex
	networks []*network
	procs    []*os.Process
}

// newNetwork sets up the bridge and the namespaces and removes them when the test
// ends (call it before starting nodes: cleanups run last-in first-out, so the nodes
// are killed before their namespaces go).
func newNetwork(t *testing.T) *network {
	t.Helper()
	subnet, err := freeSubnet()
	if err != nil {
		t.Fatal(err)
	}
	nw := &network{subnet: subnet, cuts: map[[2]int]bool{}}
	live.Lock()
	live.networks = append(live.networks, nw)
	live.Unlock()
	t.Cleanup(func() {
		if err := nw.teardown(); err != nil {
			t.Errorf("removing the test network: %v", err)
		}
	})
	sw := switchNS()
	steps := [][]string{
		{"netns", "add", sw},
		{"-n", sw, "link", "set", "lo", "up"},
		{"-n", sw, "link", "add", "br0", "type", "bridge"},
		{"-n", sw, "link", "set", "br0", "up"},
		{"link", "add", uplinkName(), "type", "veth", "peer", "name", "uplink", "netns", sw},
		{"-n", sw, "link", "set", "dev", "uplink", "master", "br0"},
		{"-n", sw, "link", "set", "dev", "uplink", "up"},
		{"addr", "add", nw.gateway() + "/24", "dev", uplinkName()},
		{"link", "set", uplinkName(), "up"},
	}
	for i := range nodeCount {
		steps = append(steps,
			[]string{"netns", "add", nsName(i)},
			[]string{"-n", sw, "link", "add", vethName(i), "type", "veth", "peer", "name", ifName, "netns", nsName(i)},
			[]string{"-n", sw, "link", "set", "dev", vethName(i), "master", "br0"},
			[]string{"-n", sw, "link", "set", "dev", vethName(i), "up"},
			[]string{"-n", nsName(i), "link", "set", "lo", "up"},
			[]string{"-n", nsName(i), "addr", "add", nw.ip(i) + "/24", "dev", ifName},
			[]string{"-n", nsName(i), "link", "set", ifName, "up"},
		)
	}
	for _, s := range steps {
		if err := ipCmd(s...); err != nil {
			t.Fatalf("setting up the test network: %v", err)
		}
	}
	return nw
}

// cut drops every packet between nodes a and b, both ways, silently: each node's
// neighbor table gets a permanent entry that maps the other's address to a hardware
// address no interface has. The frames still leave (so the sender sees no error: a
// write succeeds, a connect times out instead of failing at once), the bridge floods
// them and every port drops them; no reset, no ICMP, no ARP. The test process keeps
// its own neighbor entries and reaches both. TestCutIsSilent checks all of this.
func (nw *network) cut(t testing.TB, a, b int) {
	t.Helper()
	if err := nw.setCut(a, b, true); err != nil {
		t.Fatal(err)
	}
}

// heal undoes cut: the entries are removed and the nodes resolve each other again.
func (nw *network) heal(t testing.TB, a, b int) {
	t.Helper()
	if err := nw.setCut(a, b, false); err != nil {
		t.Fatal(err)
	}
}

// isolate cuts node n from every other node.
func (nw *network) isolate(t testing.TB, n int) {
	t.Helper()
	for o := range nodeCount {
		if o != n {
			nw.cut(t, n, o)
		}
	}
}

// healAll removes every cut.
func (nw *network) healAll(t testing.TB) {
	t.Helper()
	if err := nw.healAllErr(); err != nil {
		t.Fatal(err)
	}
}

func (nw *network) healAllErr() error {
	var errs []error
	for a := range nodeCount {
		for b := a + 1; b < nodeCount; b++ {
			errs = append(errs, nw.setCut(a, b, false))
		}
	}
	return errors.Join(errs...)
}

func (nw *network) setCut(a, b int, cut bool) error {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	if nw.gone {
		return nil
	}
	for _, d := range [][2]int{{a, b}, {b, a}} {
		if nw.cuts[d] == cut {
			continue
		}
		args := []string{"-n", nsName(d[0]), "neigh", "replace", nw.ip(d[1]), "lladdr", bogusMAC, "dev", ifName, "nud", "permanent"}
		if !cut {
			args = []string{"-n", nsName(d[0]), "neigh", "del", nw.ip(d[1]), "dev", ifName}
		}
		if err := ipCmd(args...); err != nil {
			return err
		}
		nw.cuts[d] = cut
	}
	return nil
}

// teardown heals every cut (so that sockets can end normally), kills what still runs
// in the namespaces (only this run's processes can be there), and deletes the veths,
// the namespaces and the bridge. It may be called more than once.
func (nw *network) teardown() error {
	err := nw.healAllErr()
	nw.mu.Lock()
	defer nw.mu.Unlock()
	if nw.gone {
		return nil
	}
	nw.gone = true
	return errors.Join(err, removeRun(runPrefix))
}

// removeRun removes every namespace and link of the run with prefix: processes in the
// namespaces first, then the veths (deleting a namespace alone leaves its veth behind
// for as long as a socket of it lingers), the namespaces and the bridge.
func removeRun(prefix string) error {
	var errs []error
	nss := namespaces()
	for i := range nodeCount {
		if ns := fmt.Sprintf("%s-n%d", prefix, i); slices.Contains(nss, ns) {
			killNamespace(ns)
		}
	}
	sw := prefix + "-sw"
	if slices.Contains(nss, sw) {
		for i := range nodeCount {
			_ = ipCmd("-n", sw, "link", "del", vethName(i)) // gone already when its node's went
		}
	}
	if slices.Contains(links(), prefix+"up") {
		errs = append(errs, ipCmd("link", "del", prefix+"up"))
	}
	for i := range nodeCount {
		if ns := fmt.Sprintf("%s-n%d", prefix, i); slices.Contains(nss, ns) {
			errs = append(errs, ipCmd("netns", "del", ns))
		}
	}
	for _, ns := range []string{sw, prefix + "-check"} {
		if slices.Contains(nss, ns) {
			errs = append(errs, ipCmd("netns", "del", ns))
		}
	}
	return errors.Join(errs...)
}

// killNamespace kills, by PID, every process that runs in ns (one of this package's
// namespaces: only its own mqttd and probe processes run there); it does not wait.
func killNamespace(ns string) {
	out, err := exec.Command("ip", "netns", "pids", ns).Output()
	if err != nil {
		return
	}
	for _, f := range strings.Fields(string(out)) {
		if pid, err := strconv.Atoi(f); err == nil && pid > 1 {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// teardownAll kills this run's processes and removes its networks (at exit or on a
// signal).
func teardownAll() {
	live.Lock()
	procs, networks := live.procs, live.networks
	live.Unlock()
	for _, p := range procs {
		_ = p.Kill()
	}
	for _, nw := range networks {
		_ = nw.teardown()
	}
	_ = removeRun(runPrefix)
}

// removeLeftovers removes the namespaces and links of earlier runs of this package
// whose test process is gone (one killed by a timeout or a signal it could not catch).
func removeLeftovers() {
	re := regexp.MustCompile(`^(` + namePrefix + `(\d+))(?:-n\d+|-check|-sw|up)$`)
	seen := map[string]bool{}
	for _, name := range append(namespaces(), links()...) {
		m := re.FindStringSubmatch(name)
		if m == nil || seen[m[1]] {
			continue
		}
		seen[m[1]] = true
		pid, _ := strconv.Atoi(m[2])
		if pid == os.Getpid() || runAlive(pid) {
			continue
		}
		if err := removeRun(m[1]); err != nil {
			fmt.Fprintf(os.Stderr, "removing leftovers of %s: %v\n", m[1], err)
		} else {
			fmt.Fprintf(os.Stderr, "removed leftovers of an earlier run (%s)\n", m[1])
		}
	}
}

// runAlive reports whether pid is a live test binary of this package (and not a later
// process that reuses a dead run's PID).
func runAlive(pid int) bool {
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return err == nil && strings.Contains(string(cmdline), "partition.test")
}

// namespaces lists the names of the network namespaces `ip netns` knows.
func namespaces() []string {
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		return nil
	}
	var names []string
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) > 0 {
			names = append(names, f[0])
		}
	}
	return names
}

// links lists the names of the root namespace's network interfaces.
func links() []string {
	out, err := exec.Command("ip", "-o", "link", "show").Output()
	if err != nil {
		return nil
	}
	var names []string
	for _, l := range strings.Split(string(out), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
		names = append(names, name)
	}
	return names
}

// freeSubnet picks a /24 of 10.213.0.0/16 that no route of the root namespace
// overlaps.
func freeSubnet() (string, error) {
	out, err := exec.Command("ip", "-4", "route", "show", "table", "all").Output()
	if err != nil {
		return "", fmt.Errorf("ip route: %w", err)
	}
	routes := string(out)
	for k := range 200 {
		x := 20 + (os.Getpid()+k)%200
		subnet := fmt.Sprintf("10.213.%d", x)
		if !strings.Contains(routes, subnet+".") && !strings.Contains(routes, "10.213.0.0/16") &&
			!strings.Contains(routes, "10.0.0.0/8") {
			return subnet, nil
		}
	}
	return "", errors.New("no free /24 in 10.213.0.0/16")
}

// ipCmd runs ip(8) with args.
func ipCmd(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// preflight checks that this process can create network namespaces.
func preflight() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("the tests need root to create network namespaces (euid %d)", os.Geteuid())
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return fmt.Errorf("the tests need ip(8) from iproute2: %w", err)
	}
	check := runPrefix + "-check"
	if err := ipCmd("netns", "add", check); err != nil {
		return fmt.Errorf("`ip netns` does not work: %w", err)
	}
	if err := ipCmd("-n", check, "link", "set", "lo", "up"); err != nil {
		_ = ipCmd("netns", "del", check)
		return fmt.Errorf("cannot configure a network namespace: %w", err)
	}
	return ipCmd("netns", "del", check)
}
