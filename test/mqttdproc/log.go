package mqttdproc

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"
	"sync"
)

// reportHeaders start the reports that fail a process test: the race detector's, and
// go-deadlock's in a lockorder build (a lock-order inversion or a lock held too long).
var reportHeaders = []string{"WARNING: DATA RACE", "POTENTIAL DEADLOCK:"}

// Log keeps every line a node's processes wrote, across restarts.
type Log struct {
	mu    sync.Mutex
	lines []string
	race  int // index of the first line of the first race report (when seen)
	seen  bool
}

// Add appends one line.
func (l *Log) Add(line string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.seen && slices.ContainsFunc(reportHeaders, func(h string) bool { return strings.Contains(line, h) }) {
		l.seen, l.race = true, len(l.lines)
	}
	l.lines = append(l.lines, line)
}

// Tail returns the last n lines (all with n <= 0).
func (l *Log) Tail(n int) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	lines := l.lines
	if n > 0 && len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// String returns every line.
func (l *Log) String() string { return l.Tail(0) }

// Contains reports whether a line contains s (case-insensitive).
func (l *Log) Contains(s string) bool {
	return strings.Contains(strings.ToLower(l.String()), strings.ToLower(s))
}

// Race returns the first report of the race detector (a process built with -race
// found a data race) or of the lock-order checker (built with -tags lockorder), or ""
// when there was none.
func (l *Log) Race() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.seen {
		return ""
	}
	end := min(len(l.lines), l.race+120)
	return strings.Join(l.lines[l.race:end], "\n")
}

// Listening is a {"msg":"listening"} line of mqttd's JSON log: one listener open.
type Listening struct{ Listener, Address string }

// ParseListening reads a Listening line.
func ParseListening(line string) (Listening, bool) {
	var rec struct{ Msg, Listener, Address string }
	if json.Unmarshal([]byte(line), &rec) != nil || rec.Msg != "listening" {
		return Listening{}, false
	}
	return Listening{rec.Listener, rec.Address}, true
}

// LineWriter splits what a process writes into lines for OnLine.
type LineWriter struct {
	OnLine func(string)
	mu     sync.Mutex
	buf    []byte
}

func (w *LineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			return len(p), nil
		}
		w.OnLine(string(w.buf[:i]))
		w.buf = w.buf[i+1:]
	}
}

// Flush passes on a last line that has no newline.
func (w *LineWriter) Flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.buf) > 0 {
		w.OnLine(string(w.buf))
		w.buf = nil
	}
}
