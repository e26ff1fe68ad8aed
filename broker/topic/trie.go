package topic

import (
	"strings"

	"github.com/mqtt-operator/mqtt-operator/broker/internal/lockorder"
)

// Subscription is one client's subscription to one filter.
type Subscription struct {
	ClientID          string
	Filter            string // the topic filter, without any $share/{group}/ prefix
	ShareGroup        string // "" unless this is a shared subscription
	QoS               byte
	NoLocal           bool
	RetainAsPublished bool
	RetainHandling    byte
	Identifier        uint32 // v5 subscription identifier, 0 = none
}

// SharedGroup is the set of members of one shared subscription
// ($share/Group/Filter).
//
// A *SharedGroup obtained from Match is an immutable snapshot: when the
// membership changes the trie installs a new SharedGroup value (with a new
// Members slice) instead of modifying the old one, so it may be read freely
// after Match returns without any locking. Consequently the pointer identity
// of a group changes whenever its membership changes; use (Group, Filter) as
// a stable key, e.g. for round-robin state.
type SharedGroup struct {
	Group   string
	Filter  string
	Members []Subscription // read-only snapshot: the trie replaces the slice on change (copy-on-write), never mutates it
}

// Matches is a reusable result buffer for Match.
type Matches struct {
	Subs   []Subscription // non-shared subscriptions that match; a client with several overlapping filters appears several times
	Shared []*SharedGroup // each matching shared subscription (group+filter) once
}

// Reset empties m keeping capacity.
func (m *Matches) Reset() {
	clear(m.Subs) // drop string references so they can be collected
	m.Subs = m.Subs[:0]
	clear(m.Shared)
	m.Shared = m.Shared[:0]
}

// collect appends the subscriptions held directly by n.
func (m *Matches) collect(n *node) {
	if len(n.subs) > 0 {
		m.Subs = append(m.Subs, n.subs...)
	}
	if len(n.shared) > 0 {
		m.Shared = append(m.Shared, n.shared...)
	}
}

// indexThreshold is the number of non-shared subscriptions on one node from
// which a ClientID -> index map is maintained; below it a linear scan is
// cheaper in both time and memory.
const indexThreshold = 16

// node is one level of the trie. The path from the root spells the filter.
type node struct {
	parent *node
	key    string // level in parent: a literal, "+" or "#"

	children children // literal levels
	plus     *node    // the '+' child
	hash     *node    // the '#' child (always a leaf)

	subs   []Subscription // non-shared subscriptions with exactly this filter
	subIdx map[string]int // ClientID -> index in subs; nil below indexThreshold

	shared    []*SharedGroup // shared subscriptions with exactly this filter
	sharedIdx map[string]int // Group -> index in shared; nil when empty
}

func (n *node) empty() bool {
	return len(n.subs) == 0 && len(n.shared) == 0 &&
		n.children.len() == 0 && n.plus == nil && n.hash == nil
}

// child returns the child for level, or nil.
func (n *node) child(level string) *node {
	switch level {
	case "+":
		return n.plus
	case "#":
		return n.hash
	}
	return n.children.get(level)
}

// ensureChild returns the child for level, creating it if necessary.
func (n *node) ensureChild(level string) *node {
	if c := n.child(level); c != nil {
		return c
	}
	c := &node{parent: n}
	switch level {
	case "+":
		c.key = "+"
		n.plus = c
	case "#":
		c.key = "#"
		n.hash = c
	default:
		// Clone so the trie does not pin the caller's (possibly larger) buffer.
		c.key = strings.Clone(level)
		n.children.add(c)
	}
	return c
}

// removeChild unlinks the empty child c.
func (n *node) removeChild(c *node) {
	switch {
	case n.plus == c:
		n.plus = nil
	case n.hash == c:
		n.hash = nil
	default:
		n.children.remove(c)
	}
	c.parent = nil
}

func (n *node) findSub(clientID string) int {
	if n.subIdx != nil {
		if i, ok := n.subIdx[clientID]; ok {
			return i
		}
		return -1
	}
	for i := range n.subs {
		if n.subs[i].ClientID == clientID {
			return i
		}
	}
	return -1
}

// addSub adds or replaces a non-shared subscription; reports whether it existed.
func (n *node) addSub(s Subscription) bool {
	if i := n.findSub(s.ClientID); i >= 0 {
		n.subs[i] = s
		return true
	}
	n.subs = append(n.subs, s)
	switch {
	case n.subIdx != nil:
		n.subIdx[s.ClientID] = len(n.subs) - 1
	case len(n.subs) >= indexThreshold:
		n.subIdx = make(map[string]int, len(n.subs))
		for i := range n.subs {
			n.subIdx[n.subs[i].ClientID] = i
		}
	}
	return false
}

// removeSub removes the non-shared subscription of clientID; reports whether it existed.
func (n *node) removeSub(clientID string) bool {
	i := n.findSub(clientID)
	if i < 0 {
		return false
	}
	last := len(n.subs) - 1
	if i != last {
		n.subs[i] = n.subs[last]
		if n.subIdx != nil {
			n.subIdx[n.subs[i].ClientID] = i
		}
	}
	n.subs[last] = Subscription{}
	n.subs = n.subs[:last]
	if n.subIdx != nil {
		delete(n.subIdx, clientID)
		if len(n.subs) < indexThreshold/2 {
			n.subIdx = nil
		}
	}
	switch {
	case len(n.subs) == 0:
		n.subs = nil
	case cap(n.subs) > 32 && len(n.subs) < cap(n.subs)/4:
		n.subs = append([]Subscription(nil), n.subs...)
	}
	return true
}

// addShared adds or replaces a member of a shared group; reports whether it existed.
func (n *node) addShared(s Subscription) bool {
	if i, ok := n.sharedIdx[s.ShareGroup]; ok {
		g := n.shared[i]
		for j := range g.Members {
			if g.Members[j].ClientID == s.ClientID {
				members := make([]Subscription, len(g.Members))
				copy(members, g.Members)
				members[j] = s
				n.shared[i] = &SharedGroup{Group: g.Group, Filter: g.Filter, Members: members}
				return true
			}
		}
		members := make([]Subscription, len(g.Members), len(g.Members)+1)
		copy(members, g.Members)
		members = append(members, s)
		n.shared[i] = &SharedGroup{Group: g.Group, Filter: g.Filter, Members: members}
		return false
	}
	if n.sharedIdx == nil {
		n.sharedIdx = make(map[string]int)
	}
	group := strings.Clone(s.ShareGroup)
	n.sharedIdx[group] = len(n.shared)
	n.shared = append(n.shared, &SharedGroup{Group: group, Filter: s.Filter, Members: []Subscription{s}})
	return false
}

// removeShared removes clientID from group; reports whether it was a member.
// An empty group is removed from the node.
func (n *node) removeShared(clientID, group string) bool {
	i, ok := n.sharedIdx[group]
	if !ok {
		return false
	}
	g := n.shared[i]
	j := -1
	for k := range g.Members {
		if g.Members[k].ClientID == clientID {
			j = k
			break
		}
	}
	if j < 0 {
		return false
	}
	if len(g.Members) > 1 {
		members := make([]Subscription, 0, len(g.Members)-1)
		members = append(members, g.Members[:j]...)
		members = append(members, g.Members[j+1:]...)
		n.shared[i] = &SharedGroup{Group: g.Group, Filter: g.Filter, Members: members}
		return true
	}
	// Last member: drop the group.
	last := len(n.shared) - 1
	if i != last {
		n.shared[i] = n.shared[last]
		n.sharedIdx[n.shared[i].Group] = i
	}
	n.shared[last] = nil
	n.shared = n.shared[:last]
	delete(n.sharedIdx, group)
	if len(n.shared) == 0 {
		n.shared = nil
		n.sharedIdx = nil
	}
	return true
}

// Trie is a subscription trie keyed by topic filter levels. It is safe for
// concurrent use: mutations take the write lock, Match takes the read lock.
// The zero value is not usable; create one with New.
type Trie struct {
	mu    lockorder.RWMutex
	root  *node
	count int
}

// New returns an empty Trie.
func New() *Trie {
	return &Trie{root: &node{}}
}

// Subscribe adds s, or replaces the subscription with the same (ClientID,
// ShareGroup, Filter). It returns true when one existed already.
//
// s.Filter must be the filter without any "$share/{group}/" prefix (see
// ParseShared) and satisfy ValidFilter; s.ShareGroup must be "" or satisfy
// ValidShareGroup. If either is invalid the trie is left unchanged and
// Subscribe returns false.
func (t *Trie) Subscribe(s Subscription) (existed bool) {
	if !ValidFilter(s.Filter) || (s.ShareGroup != "" && !ValidShareGroup(s.ShareGroup)) {
		return false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	n := t.root
	f := s.Filter
	for start := 0; ; {
		end := levelEnd(f, start)
		n = n.ensureChild(f[start:end])
		if end == len(f) {
			break
		}
		start = end + 1
	}
	if s.ShareGroup == "" {
		existed = n.addSub(s)
	} else {
		existed = n.addShared(s)
	}
	if !existed {
		t.count++
	}
	return existed
}

// Unsubscribe removes the subscription (clientID, shareGroup, filter); reports
// whether it existed. Empty trie nodes are pruned. filter is given without any
// "$share/{group}/" prefix.
func (t *Trie) Unsubscribe(clientID, shareGroup, filter string) bool {
	if filter == "" {
		return false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	n := t.root
	for start := 0; ; {
		end := levelEnd(filter, start)
		if n = n.child(filter[start:end]); n == nil {
			return false
		}
		if end == len(filter) {
			break
		}
		start = end + 1
	}
	var removed bool
	if shareGroup == "" {
		removed = n.removeSub(clientID)
	} else {
		removed = n.removeShared(clientID, shareGroup)
	}
	if !removed {
		return false
	}
	t.count--
	for n != t.root && n.empty() {
		p := n.parent
		p.removeChild(n)
		n = p
	}
	return true
}

// Match resets m and appends every subscription matching the topic name.
// It does not allocate when m's slices have enough capacity. topic is assumed
// to be a valid topic name (see ValidTopicName); an empty topic matches
// nothing.
func (t *Trie) Match(topic string, m *Matches) {
	m.Reset()
	if topic == "" {
		return
	}
	t.mu.RLock()
	root := t.root
	end := levelEnd(topic, 0)
	// Filters starting with a wildcard never match topics starting with '$'.
	if topic[0] != '$' {
		if root.hash != nil {
			m.collect(root.hash)
		}
		if root.plus != nil {
			walk(root.plus, topic, end+1, m)
		}
	}
	if c := root.children.get(topic[:end]); c != nil {
		walk(c, topic, end+1, m)
	}
	t.mu.RUnlock()
}

// walk collects matches below n, the node reached after consuming every
// topic level before pos. pos > len(topic) means all levels are consumed.
func walk(n *node, topic string, pos int, m *Matches) {
	for {
		if n.hash != nil {
			// '#' matches the parent level and any number of children.
			m.collect(n.hash)
		}
		if pos > len(topic) {
			m.collect(n)
			return
		}
		end := levelEnd(topic, pos)
		next := end + 1
		lit := n.children.get(topic[pos:end])
		switch {
		case lit != nil && n.plus != nil:
			walk(n.plus, topic, next, m)
			n = lit
		case lit != nil:
			n = lit
		case n.plus != nil:
			n = n.plus
		default:
			return
		}
		pos = next
	}
}

// Len returns the number of subscriptions held (shared members counted
// individually).
func (t *Trie) Len() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.count
}

// children are a node's literal child levels. Most nodes of a large tree have one
// child or a few (a device's own levels): up to fewChildren they are a slice searched
// in order (8 bytes a child, where a map's smallest table takes about 250); beyond,
// a map.
type children struct {
	few  []*node
	many map[string]*node
}

const fewChildren = 8

func (cs *children) len() int {
	if cs.many != nil {
		return len(cs.many)
	}
	return len(cs.few)
}

func (cs *children) get(level string) *node {
	if cs.many != nil {
		return cs.many[level]
	}
	for _, c := range cs.few {
		if c.key == level {
			return c
		}
	}
	return nil
}

// add adds c, whose key no child has.
func (cs *children) add(c *node) {
	switch {
	case cs.many != nil:
		cs.many[c.key] = c
	case len(cs.few) < fewChildren:
		cs.few = append(cs.few, c)
	default:
		cs.many = make(map[string]*node, 2*fewChildren)
		for _, o := range cs.few {
			cs.many[o.key] = o
		}
		cs.many[c.key] = c
		cs.few = nil
	}
}

func (cs *children) remove(c *node) {
	if cs.many != nil {
		delete(cs.many, c.key)
		if len(cs.many) == 0 {
			cs.many = nil
		}
		return
	}
	for i, o := range cs.few {
		if o == c {
			last := len(cs.few) - 1
			cs.few[i] = cs.few[last]
			cs.few[last] = nil
			cs.few = cs.few[:last]
			break
		}
	}
	if len(cs.few) == 0 {
		cs.few = nil
	}
}

// each calls f for every child.
func (cs *children) each(f func(*node)) {
	for _, c := range cs.few {
		f(c)
	}
	for _, c := range cs.many {
		f(c)
	}
}
