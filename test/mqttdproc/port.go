package mqttdproc

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
)

// ClusterAddr returns a loopback address for a node's cluster port: free now, and
// outside the kernel's ephemeral port range. A node keeps its cluster address across
// restarts (the raft configuration records it), and while it is down no outgoing
// connection or port-0 listener of another test may take a port outside that range.
func ClusterAddr() (string, error) {
	lo := ephemeralLow()
	const base = 10000
	for range 100 {
		port := base + rand.IntN(lo-base)
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue // taken: another test's node
		}
		addr := l.Addr().String()
		if err := l.Close(); err != nil {
			return "", err
		}
		return addr, nil
	}
	return "", fmt.Errorf("no free port between %d and %d", base, lo)
}

// ephemeralLow is the first port of the kernel's ephemeral range (32768 when the
// range cannot be read).
func ephemeralLow() int {
	lo, hi := 32768, 0
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if _, err := fmt.Sscan(string(b), &lo, &hi); err != nil || lo <= 11000 {
			lo = 32768
		}
	}
	return lo
}
