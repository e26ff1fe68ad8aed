package main

import (
	"log/slog"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
)

// cgroupMemoryFiles hold the container's memory limit: cgroup v2, then v1.
var cgroupMemoryFiles = []string{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"}

// memoryLimitShare is the part of the container's memory limit the Go runtime keeps
// the process under; the rest is for what it does not count (thread stacks, the
// binary, page tables).
const memoryLimitShare = 0.9

// applyMemoryLimit gives the Go runtime a soft memory limit of 90 % of the
// container's, unless GOMEMLIMIT sets one. Without it the heap grows to twice what is
// live before a collection (GOGC=100) whatever the container allows, and a node
// holding many connections is killed for memory it did not need; with it the runtime
// collects more often as the limit nears. It returns the limit set (0: none).
func applyMemoryLimit(environ []string, files []string, log *slog.Logger) int64 {
	for _, kv := range environ {
		if strings.HasPrefix(kv, "GOMEMLIMIT=") {
			log.Info("memory limit from GOMEMLIMIT", "bytes", debug.SetMemoryLimit(-1))
			return 0
		}
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		v := strings.TrimSpace(string(data))
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n <= 0 || n >= 1<<60 { // "max", or v1's "no limit" (a huge number)
			return 0
		}
		limit := int64(float64(n) * memoryLimitShare)
		debug.SetMemoryLimit(limit)
		log.Info("memory limit from the container's", "containerBytes", n, "bytes", limit)
		return limit
	}
	return 0
}
