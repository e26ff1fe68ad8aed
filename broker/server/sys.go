package server

import (
	"strconv"
	"time"

	"github.com/mqtt-operator/mqtt-operator/broker/session"
)

// sysLoop publishes the broker's statistics under $SYS every SysInterval, retained, in
// the topic layout Mosquitto uses so existing dashboards work.
func (s *Server) sysLoop() {
	defer s.loops.Done()
	t := time.NewTicker(s.opts.SysInterval)
	defer t.Stop()
	s.publishSys()
	for {
		select {
		case <-s.done:
			return
		case <-t.C:
			s.publishSys()
		}
	}
}

func (s *Server) publishSys() {
	st := s.Stats()
	u := func(v uint64) string { return strconv.FormatUint(v, 10) }
	values := [][2]string{
		{"$SYS/broker/version", "mqttd " + s.opts.Version},
		{"$SYS/broker/uptime", strconv.FormatInt(int64(st.Uptime/time.Second), 10) + " seconds"},
		{"$SYS/broker/clients/connected", strconv.FormatInt(st.ClientsConnected, 10)},
		{"$SYS/broker/clients/total", strconv.Itoa(st.Sessions)},
		{"$SYS/broker/connections/total", u(st.ClientsTotal)},
		{"$SYS/broker/subscriptions/count", strconv.Itoa(st.Subscriptions)},
		{"$SYS/broker/retained messages/count", strconv.Itoa(st.Retained)},
		{"$SYS/broker/messages/received", u(st.MessagesReceived)},
		{"$SYS/broker/messages/sent", u(st.MessagesSent)},
		{"$SYS/broker/messages/dropped", u(st.MessagesDropped)},
		{"$SYS/broker/messages/expired", u(st.MessagesExpired)},
		{"$SYS/broker/bytes/received", u(st.BytesReceived)},
		{"$SYS/broker/bytes/sent", u(st.BytesSent)},
		{"$SYS/broker/packets/malformed", u(st.MalformedPackets)},
		{"$SYS/broker/packets/protocol errors", u(st.ProtocolErrors)},
		{"$SYS/broker/store/errors", u(st.StoreErrors)},
	}
	for _, v := range values {
		s.publish(&session.Message{Topic: v[0], Payload: []byte(v[1]), Retain: true})
	}
}
