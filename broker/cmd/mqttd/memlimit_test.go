package main

import (
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"runtime/debug"
	"testing"
)

func TestApplyMemoryLimit(t *testing.T) {
	old := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(old) })
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	v2 := write("memory.max", "2147483648\n")
	unlimited := write("memory.max.unlimited", "max\n")
	v1none := write("limit_in_bytes", "9223372036854771712\n")
	missing := filepath.Join(dir, "missing")
	for _, tc := range []struct {
		name    string
		environ []string
		files   []string
		want    int64
	}{
		{"cgroup v2 limit", nil, []string{v2}, 2147483648 * 9 / 10},
		{"v1 after a missing v2", nil, []string{missing, v2}, 2147483648 * 9 / 10},
		{"no limit (max)", nil, []string{unlimited}, 0},
		{"no limit (v1)", nil, []string{v1none}, 0},
		{"no cgroup files", nil, []string{missing}, 0},
		{"GOMEMLIMIT wins", []string{"GOMEMLIMIT=1GiB"}, []string{v2}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			debug.SetMemoryLimit(math.MaxInt64)
			got := applyMemoryLimit(tc.environ, tc.files, log)
			if got != tc.want {
				t.Fatalf("limit %d, want %d", got, tc.want)
			}
			inForce := debug.SetMemoryLimit(-1)
			if tc.want != 0 && inForce != tc.want {
				t.Fatalf("runtime limit %d, want %d", inForce, tc.want)
			}
			if tc.want == 0 && inForce != math.MaxInt64 {
				t.Fatalf("runtime limit changed to %d", inForce)
			}
		})
	}
}
