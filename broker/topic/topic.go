// Package topic implements MQTT 3.1.1 / 5.0 topic name and topic filter
// handling: validation, shared-subscription parsing, pure filter matching and
// a concurrent subscription trie used on the broker's publish hot path.
//
// Matching follows the specification exactly:
//   - levels are separated by '/'; empty levels are valid and significant
//     ("a//b", "/a" and "a/" each have an empty level);
//   - '+' matches exactly one level, which may be empty;
//   - '#' matches its parent level and any number of child levels, so
//     "a/#" matches "a", "a/" and "a/b/c";
//   - topic names beginning with '$' are not matched by filters whose first
//     level is a wildcard ('+' or '#'); they are matched by filters whose
//     first level is the same literal (e.g. "$SYS/#").
package topic

import (
	"errors"
	"fmt"
	"strings"
)

// SharePrefix is the prefix of a shared subscription topic filter,
// "$share/{group}/{filter}".
const SharePrefix = "$share/"

// shareLevel is the first level of every shared subscription filter.
const shareLevel = "$share"

// ErrMalformedShare is returned (wrapped) by ParseShared when a filter uses
// the $share form but is not a valid shared subscription filter.
var ErrMalformedShare = errors.New("topic: malformed shared subscription filter")

// ParseShared splits "$share/group/filter". shared=false and err=nil for a
// normal filter (one whose first level is not "$share"); the normal filter is
// then returned unchanged in topicFilter and is not validated.
//
// A filter whose first level is exactly "$share" is a shared subscription:
// shared=true, and err != nil (wrapping ErrMalformedShare) when the $share
// form is malformed — missing group, group containing '+', '#' or U+0000,
// missing or empty filter, or a filter for which ValidFilter is false.
func ParseShared(filter string) (group, topicFilter string, shared bool, err error) {
	if !strings.HasPrefix(filter, shareLevel) {
		return "", filter, false, nil
	}
	rest := filter[len(shareLevel):]
	if rest == "" {
		return "", "", true, fmt.Errorf("%w: %q: missing share name", ErrMalformedShare, filter)
	}
	if rest[0] != '/' {
		// First level is e.g. "$shared": an ordinary filter.
		return "", filter, false, nil
	}
	rest = rest[1:]
	slash := strings.IndexByte(rest, '/')
	if slash < 0 {
		if rest == "" {
			return "", "", true, fmt.Errorf("%w: %q: missing share name", ErrMalformedShare, filter)
		}
		return "", "", true, fmt.Errorf("%w: %q: missing topic filter", ErrMalformedShare, filter)
	}
	group, topicFilter = rest[:slash], rest[slash+1:]
	if !ValidShareGroup(group) {
		return "", "", true, fmt.Errorf("%w: %q: invalid share name %q", ErrMalformedShare, filter, group)
	}
	if topicFilter == "" {
		return "", "", true, fmt.Errorf("%w: %q: empty topic filter", ErrMalformedShare, filter)
	}
	if !ValidFilter(topicFilter) {
		return "", "", true, fmt.Errorf("%w: %q: invalid topic filter %q", ErrMalformedShare, filter, topicFilter)
	}
	return group, topicFilter, true, nil
}

// ValidShareGroup reports whether group is a valid shared subscription share
// name: non-empty and containing none of '/', '+', '#' or U+0000.
func ValidShareGroup(group string) bool {
	if group == "" {
		return false
	}
	for i := 0; i < len(group); i++ {
		switch group[i] {
		case '/', '+', '#', 0:
			return false
		}
	}
	return true
}

// ValidFilter reports whether a (non-shared) filter is valid: non-empty, '#'
// only as the last whole level, '+' only as a whole level, no U+0000.
func ValidFilter(filter string) bool {
	if filter == "" {
		return false
	}
	n := len(filter)
	for i := 0; i < n; i++ {
		switch filter[i] {
		case 0:
			return false
		case '+':
			if (i > 0 && filter[i-1] != '/') || (i+1 < n && filter[i+1] != '/') {
				return false
			}
		case '#':
			if (i > 0 && filter[i-1] != '/') || i+1 != n {
				return false
			}
		}
	}
	return true
}

// ValidTopicName reports whether topic is a valid topic name for PUBLISH:
// non-empty, no '+' or '#', no U+0000.
func ValidTopicName(topic string) bool {
	if topic == "" {
		return false
	}
	for i := 0; i < len(topic); i++ {
		switch topic[i] {
		case '+', '#', 0:
			return false
		}
	}
	return true
}

// MatchFilter reports whether topic matches filter. It is a pure function
// (used for retained messages) and gives the same answer as Trie.Match.
// Empty filters or topics never match; a '#' that is not the last level makes
// the filter match nothing. The topic is assumed to be a valid topic name.
func MatchFilter(filter, topic string) bool {
	if filter == "" || topic == "" {
		return false
	}
	if topic[0] == '$' && (filter[0] == '+' || filter[0] == '#') {
		return false
	}
	fi, ti := 0, 0
	topicDone := false
	for {
		fe := levelEnd(filter, fi)
		fl := filter[fi:fe]
		if fl == "#" {
			return fe == len(filter)
		}
		if topicDone {
			return false
		}
		te := levelEnd(topic, ti)
		if fl != "+" && fl != topic[ti:te] {
			return false
		}
		if fe == len(filter) {
			return te == len(topic)
		}
		if te == len(topic) {
			topicDone = true
		} else {
			ti = te + 1
		}
		fi = fe + 1
	}
}

// levelEnd returns the index of the '/' ending the level that starts at
// start, or len(s) if it is the last level.
func levelEnd(s string, start int) int {
	if i := strings.IndexByte(s[start:], '/'); i >= 0 {
		return start + i
	}
	return len(s)
}
