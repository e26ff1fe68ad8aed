package mqttdproc

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"sync"
)

// Ports hands out loopback addresses for nodes' cluster ports. A node keeps its
// cluster address across restarts (the raft configuration records it), so while it
// is down nothing else may take the port: the range lies below the kernel's
// ephemeral port range (no outgoing connection or port-0 listener lands there), each
// test package that runs beside others uses a range of its own, and a port is handed
// out at most once per process.
type Ports struct {
	mu     sync.Mutex
	lo, hi int
	used   map[int]bool
}

// NewPorts hands out ports in [lo, hi), cut at the start of the ephemeral range.
func NewPorts(lo, hi int) *Ports {
	return &Ports{lo: lo, hi: min(hi, ephemeralLow()), used: map[int]bool{}}
}

// Next returns an address whose port is free now and was not handed out before.
func (p *Ports) Next() (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.hi <= p.lo {
		return "", fmt.Errorf("no ports in [%d, %d) below the ephemeral range", p.lo, p.hi)
	}
	for range 200 {
		port := p.lo + rand.IntN(p.hi-p.lo)
		if p.used[port] {
			continue
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue // taken by another process
		}
		addr := l.Addr().String()
		if err := l.Close(); err != nil {
			return "", err
		}
		p.used[port] = true
		return addr, nil
	}
	return "", fmt.Errorf("no free port in [%d, %d)", p.lo, p.hi)
}

// ephemeralLow is the first port of the kernel's ephemeral range (32768 when the
// range cannot be read).
func ephemeralLow() int {
	lo, hi := 32768, 0
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if _, err := fmt.Sscan(string(b), &lo, &hi); err != nil {
			lo = 32768
		}
	}
	return lo
}
