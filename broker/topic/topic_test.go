package topic

import (
	"errors"
	"testing"
)

// matchTable is shared by the MatchFilter and Trie tests.
var matchTable = []struct {
	filter, topic string
	want          bool
}{
	// Exact matches.
	{"a", "a", true},
	{"a", "b", false},
	{"a/b", "a/b", true},
	{"a/b", "a", false},
	{"a", "a/b", false},
	{"a/b/c", "a/b/c", true},
	{"a/b/c", "a/b/d", false},
	{"A", "a", false},
	// Empty levels.
	{"a//b", "a//b", true},
	{"a//b", "a/b", false},
	{"a/b", "a//b", false},
	{"/a", "/a", true},
	{"/a", "a", false},
	{"a", "/a", false},
	{"a/", "a/", true},
	{"a/", "a", false},
	{"a", "a/", false},
	{"/", "/", true},
	{"//", "//", true},
	{"/", "//", false},
	// Single level wildcard.
	{"+", "a", true},
	{"+", "a/b", false},
	{"+", "/", false},
	{"+", "/a", false},
	{"a/+", "a/b", true},
	{"a/+", "a/", true},
	{"a/+", "a", false},
	{"a/+", "a/b/c", false},
	{"a/+/c", "a/b/c", true},
	{"a/+/c", "a//c", true},
	{"a/+/c", "a/b/d", false},
	{"+/+", "/finance", true},
	{"/+", "/finance", true},
	{"+", "/finance", false},
	{"+/+", "a/b", true},
	{"+/+", "a", false},
	{"+/+", "/", true},
	{"+/b/+", "a/b/c", true},
	{"+//+", "a//c", true},
	// Multi level wildcard.
	{"#", "a", true},
	{"#", "a/b/c", true},
	{"#", "/", true},
	{"#", "/a", true},
	{"a/#", "a", true},
	{"a/#", "a/", true},
	{"a/#", "a/b", true},
	{"a/#", "a/b/c", true},
	{"a/#", "ab", false},
	{"a/#", "b/a", false},
	{"a/b/#", "a", false},
	{"a/b/#", "a/b", true},
	{"/#", "/", true},
	{"/#", "/a/b", true},
	{"/#", "a", false},
	{"+/#", "a", true},
	{"+/#", "a/b/c", true},
	{"+/#", "/a", true},
	{"a/+/#", "a/b", true},
	{"a/+/#", "a", false},
	{"a//#", "a/", true},
	{"a//#", "a//x", true},
	{"a//#", "a/x", false},
	// MQTT 5.0 spec section 4.7 examples.
	{"sport/tennis/player1/#", "sport/tennis/player1", true},
	{"sport/tennis/player1/#", "sport/tennis/player1/ranking", true},
	{"sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", true},
	{"sport/tennis/player1/#", "sport/tennis/player2", false},
	{"sport/#", "sport", true},
	{"sport/tennis/+", "sport/tennis/player1", true},
	{"sport/tennis/+", "sport/tennis/player2", true},
	{"sport/tennis/+", "sport/tennis/player1/ranking", false},
	{"sport/+", "sport", false},
	{"sport/+", "sport/", true},
	{"+/tennis/#", "sport/tennis/player1", true},
	// $-topics.
	{"#", "$SYS", false},
	{"#", "$SYS/broker/uptime", false},
	{"+", "$SYS", false},
	{"+/monitor/Clients", "$SYS/monitor/Clients", false},
	{"+/broker/uptime", "$SYS/broker/uptime", false},
	{"+/#", "$SYS/x", false},
	{"$SYS/#", "$SYS/monitor/Clients", true},
	{"$SYS/#", "$SYS", true},
	{"$SYS/#", "$SYSX/a", false},
	{"$SYS/monitor/+", "$SYS/monitor/Clients", true},
	{"$SYS/broker/uptime", "$SYS/broker/uptime", true},
	{"$SYS", "$SYS", true},
	{"$", "$", true},
	{"a/$SYS", "a/$SYS", true},
	{"a/+", "a/$SYS", true},
	{"a/#", "a/$x/y", true},
	{"#", "a$", true},
	{"$share/#", "$share/a", true},
	// Invalid filters match nothing in MatchFilter.
	{"a/#/b", "a/x/b", false},
	{"", "a", false},
	{"a", "", false},
}

func TestMatchFilterTable(t *testing.T) {
	if len(matchTable) < 40 {
		t.Fatalf("table too small: %d", len(matchTable))
	}
	for _, tc := range matchTable {
		if got := MatchFilter(tc.filter, tc.topic); got != tc.want {
			t.Errorf("MatchFilter(%q, %q) = %v, want %v", tc.filter, tc.topic, got, tc.want)
		}
	}
}

func TestValidFilter(t *testing.T) {
	tests := []struct {
		filter string
		want   bool
	}{
		{"a", true},
		{"a/b/c", true},
		{"/", true},
		{"//", true},
		{"/a", true},
		{"a/", true},
		{"a//b", true},
		{"+", true},
		{"#", true},
		{"+/+", true},
		{"+/#", true},
		{"a/+/b", true},
		{"a/#", true},
		{"/#", true},
		{"$SYS/#", true},
		{"a b/c", true},
		{"ünïcødé/+", true},
		{"", false},
		{"a/#/b", false},
		{"#/a", false},
		{"##", false},
		{"a#", false},
		{"#a", false},
		{"a/b#", false},
		{"a/#b", false},
		{"a+", false},
		{"+a", false},
		{"a/+b", false},
		{"a/b+/c", false},
		{"++", false},
		{"a\x00b", false},
		{"\x00", false},
	}
	for _, tc := range tests {
		if got := ValidFilter(tc.filter); got != tc.want {
			t.Errorf("ValidFilter(%q) = %v, want %v", tc.filter, got, tc.want)
		}
	}
}

func TestValidTopicName(t *testing.T) {
	tests := []struct {
		topic string
		want  bool
	}{
		{"a", true},
		{"a/b", true},
		{"/", true},
		{"a//b", true},
		{"/a/", true},
		{"$SYS/broker/uptime", true},
		{"a b", true},
		{"", false},
		{"+", false},
		{"#", false},
		{"a/+", false},
		{"a/#", false},
		{"a+b", false},
		{"a#b", false},
		{"a\x00", false},
	}
	for _, tc := range tests {
		if got := ValidTopicName(tc.topic); got != tc.want {
			t.Errorf("ValidTopicName(%q) = %v, want %v", tc.topic, got, tc.want)
		}
	}
}

func TestValidShareGroup(t *testing.T) {
	for g, want := range map[string]bool{
		"g": true, "group-1": true, "$g": true,
		"": false, "a/b": false, "g+": false, "#": false, "g\x00": false,
	} {
		if got := ValidShareGroup(g); got != want {
			t.Errorf("ValidShareGroup(%q) = %v, want %v", g, got, want)
		}
	}
}

func TestParseShared(t *testing.T) {
	tests := []struct {
		in                string
		group, filter     string
		shared, wantError bool
	}{
		// Normal filters pass through untouched.
		{"a/b", "", "a/b", false, false},
		{"#", "", "#", false, false},
		{"$SYS/#", "", "$SYS/#", false, false},
		{"$shared/g/a", "", "$shared/g/a", false, false},
		{"$sharex", "", "$sharex", false, false},
		{"a/$share/g/b", "", "a/$share/g/b", false, false},
		// Valid shared filters.
		{"$share/g/a", "g", "a", true, false},
		{"$share/g/a/b/c", "g", "a/b/c", true, false},
		{"$share/group-1/#", "group-1", "#", true, false},
		{"$share/g/+/x/#", "g", "+/x/#", true, false},
		{"$share/g//", "g", "/", true, false},
		{"$share/g/$SYS/#", "g", "$SYS/#", true, false},
		// Malformed shared filters.
		{"$share", "", "", true, true},
		{"$share/", "", "", true, true},
		{"$share/g", "", "", true, true},
		{"$share//a", "", "", true, true},
		{"$share/g+/a", "", "", true, true},
		{"$share/+/a", "", "", true, true},
		{"$share/#/a", "", "", true, true},
		{"$share/g#/a", "", "", true, true},
		{"$share/g\x00/a", "", "", true, true},
		{"$share/g/", "", "", true, true},
		{"$share/g/a/#/b", "", "", true, true},
		{"$share/g/a+", "", "", true, true},
	}
	for _, tc := range tests {
		group, filter, shared, err := ParseShared(tc.in)
		if (err != nil) != tc.wantError {
			t.Errorf("ParseShared(%q) err = %v, want error %v", tc.in, err, tc.wantError)
			continue
		}
		if err != nil && !errors.Is(err, ErrMalformedShare) {
			t.Errorf("ParseShared(%q) err = %v, not ErrMalformedShare", tc.in, err)
		}
		if shared != tc.shared {
			t.Errorf("ParseShared(%q) shared = %v, want %v", tc.in, shared, tc.shared)
		}
		if err == nil && (group != tc.group || filter != tc.filter) {
			t.Errorf("ParseShared(%q) = (%q, %q), want (%q, %q)", tc.in, group, filter, tc.group, tc.filter)
		}
	}
}
