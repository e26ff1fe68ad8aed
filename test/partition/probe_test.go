package partition

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The probe is this test binary re-executed inside a node's namespace (TestMain runs
// runProbe when probeEnv is set) to hold a plain TCP connection across a cut.
const (
	probeEnv     = "MQP_PROBE"      // "listen" or "dial"
	probeAddrEnv = "MQP_PROBE_ADDR" // the address to listen on or dial
	probePort    = 5999
	probeDial    = 3 * time.Second // a probe's connect timeout
)

// runProbe is the probe's main. It reports what happens as lines on stdout:
// listen: "listening", then "accepted", "read N" and "readerr ERR" per connection;
// dial: "connected" (or "dialerr ERR"), then for each line on stdin, "write" answers
// "wrote" or "writeerr ERR", and "redial" answers "redial ok" or "redialerr ERR" with
// the time the attempt took.
func runProbe() int {
	var mu sync.Mutex
	say := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Printf(format+"\n", args...)
	}
	addr := os.Getenv(probeAddrEnv)
	switch os.Getenv(probeEnv) {
	case "listen":
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			say("listenerr %v", err)
			return 1
		}
		say("listening")
		for {
			conn, err := ln.Accept()
			if err != nil {
				say("accepterr %v", err)
				return 1
			}
			say("accepted %s", conn.RemoteAddr())
			go func() {
				buf := make([]byte, 64)
				for {
					n, err := conn.Read(buf)
					if err != nil {
						say("readerr %v", err)
						return
					}
					say("read %d", n)
				}
			}()
		}
	case "dial":
		conn, err := net.DialTimeout("tcp", addr, probeDial)
		if err != nil {
			say("dialerr %v", err)
			return 1
		}
		say("connected")
		in := bufio.NewScanner(os.Stdin)
		for in.Scan() {
			switch in.Text() {
			case "write":
				if _, err := conn.Write([]byte("x")); err != nil {
					say("writeerr %v", err)
				} else {
					say("wrote")
				}
			case "redial":
				start := time.Now()
				c, err := net.DialTimeout("tcp", addr, probeDial)
				if err != nil {
					say("redialerr after %v: %v", time.Since(start).Round(time.Millisecond), err)
					continue
				}
				_ = c.Close()
				say("redial ok after %v", time.Since(start).Round(time.Millisecond))
			}
		}
		return 0
	}
	return 2
}

// probe is a running probe process.
type probe struct {
	name  string
	stdin io.WriteCloser
	lines chan string
}

// startProbe runs the probe in mode inside node i's namespace.
func startProbe(t *testing.T, i int, mode, addr string) *probe {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", nsName(i), self)
	cmd.Env = append(os.Environ(), probeEnv+"="+mode, probeAddrEnv+"="+addr)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &probe{name: fmt.Sprintf("%s probe in %s", mode, nodeName(i)), lines: make(chan string, 100)}
	if p.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	live.Lock()
	live.procs = append(live.procs, cmd.Process)
	live.Unlock()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
		close(p.lines)
	}()
	return p
}

func (p *probe) send(t *testing.T, command string) {
	t.Helper()
	if _, err := fmt.Fprintln(p.stdin, command); err != nil {
		t.Fatalf("%s: %v", p.name, err)
	}
}

// expect waits up to timeout for the probe's next line and checks it starts with want.
func (p *probe) expect(t *testing.T, want string, timeout time.Duration) string {
	t.Helper()
	select {
	case l, ok := <-p.lines:
		if !ok {
			t.Fatalf("%s exited; wanted %q", p.name, want)
		}
		if !strings.HasPrefix(l, want) {
			t.Fatalf("%s: %q, want %q", p.name, l, want)
		}
		return l
	case <-time.After(timeout):
		t.Fatalf("%s: no %q within %v", p.name, want, timeout)
	}
	return ""
}

// quiet checks that the probe reports nothing for d.
func (p *probe) quiet(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case l := <-p.lines:
		t.Fatalf("%s reported %q while it should hear nothing", p.name, l)
	case <-time.After(d):
	}
}

// TestCutIsSilent checks the harness's cut on a plain TCP connection between the
// namespaces of nodes 0 and 2: while cut, a write succeeds locally and nothing
// arrives, no reset or error reaches either end, a new connection attempt times out
// (it is not refused at once), and the test process still reaches both nodes; after
// the heal, the byte written during the cut arrives and connecting works again.
func TestCutIsSilent(t *testing.T) {
	nw := newNetwork(t)
	addr := net.JoinHostPort(nw.ip(2), strconv.Itoa(probePort))
	listener := startProbe(t, 2, "listen", addr)
	listener.expect(t, "listening", startTimeout)
	dialer := startProbe(t, 0, "dial", addr)
	dialer.expect(t, "connected", startTimeout)
	listener.expect(t, "accepted", mqttTimeout)
	dialer.send(t, "write")
	dialer.expect(t, "wrote", mqttTimeout)
	listener.expect(t, "read 1", mqttTimeout)

	nw.cut(t, 0, 2)
	dialer.send(t, "write")
	dialer.expect(t, "wrote", mqttTimeout) // no local error
	dialer.send(t, "redial")
	l := dialer.expect(t, "redialerr", probeDial+5*time.Second)
	if !strings.Contains(l, "timeout") {
		t.Errorf("a connect across the cut failed otherwise than by a timeout: %s", l)
	}
	listener.quiet(t, time.Second) // no data and no reset reached it meanwhile
	// The test process still reaches both: the listener accepts, and node 0 answers a
	// connect to a closed port with a reset.
	c, err := net.DialTimeout("tcp", addr, mqttTimeout)
	if err != nil {
		t.Fatalf("the test process cannot reach node 2 during the cut: %v", err)
	}
	_ = c.Close()
	listener.expect(t, "accepted", mqttTimeout)
	listener.expect(t, "readerr", mqttTimeout) // that connection's EOF
	if _, err := net.DialTimeout("tcp", net.JoinHostPort(nw.ip(0), strconv.Itoa(probePort)), mqttTimeout); err == nil ||
		!strings.Contains(err.Error(), "refused") {
		t.Fatalf("the test process does not reach node 0 during the cut: %v", err)
	}

	nw.heal(t, 0, 2)
	listener.expect(t, "read 1", 15*time.Second) // TCP retransmitted the byte written during the cut
	dialer.send(t, "redial")
	dialer.expect(t, "redial ok", mqttTimeout)
}
