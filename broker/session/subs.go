package session

import "github.com/mqtt-operator/mqtt-operator/broker/topic"

// subSet is a session's subscriptions by key. Most clients hold a handful, so they are
// a slice searched in order (72 bytes a subscription, where a map's smallest table
// takes about 600); an index is built once there are more than subIndexAt.
type subSet struct {
	list  []keyedSub
	index map[string]int // key -> position in list; nil below subIndexAt
}

type keyedSub struct {
	key string
	sub topic.Subscription
}

const subIndexAt = 16

func (s *subSet) len() int { return len(s.list) }

func (s *subSet) find(key string) int {
	if s.index != nil {
		if i, ok := s.index[key]; ok {
			return i
		}
		return -1
	}
	for i := range s.list {
		if s.list[i].key == key {
			return i
		}
	}
	return -1
}

func (s *subSet) get(key string) (topic.Subscription, bool) {
	if i := s.find(key); i >= 0 {
		return s.list[i].sub, true
	}
	return topic.Subscription{}, false
}

// put adds or replaces the subscription under key; it reports whether one existed.
func (s *subSet) put(key string, sub topic.Subscription) bool {
	if i := s.find(key); i >= 0 {
		s.list[i].sub = sub
		return true
	}
	s.list = append(s.list, keyedSub{key, sub})
	if s.index != nil {
		s.index[key] = len(s.list) - 1
	} else if len(s.list) > subIndexAt {
		s.index = make(map[string]int, len(s.list))
		for i := range s.list {
			s.index[s.list[i].key] = i
		}
	}
	return false
}

// remove deletes the subscription under key (the last one takes its place).
func (s *subSet) remove(key string) (topic.Subscription, bool) {
	i := s.find(key)
	if i < 0 {
		return topic.Subscription{}, false
	}
	sub := s.list[i].sub
	last := len(s.list) - 1
	if s.index != nil {
		delete(s.index, key)
		if i != last {
			s.index[s.list[last].key] = i
		}
	}
	s.list[i] = s.list[last]
	s.list[last] = keyedSub{}
	s.list = s.list[:last]
	if len(s.list) == 0 {
		s.list, s.index = nil, nil
	}
	return sub, true
}
