package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mqtt-operator/mqtt-operator/broker/apiv1"
)

// renderer prints an API answer as a table.
type renderer func(raw []byte, w io.Writer) error

// table decodes raw into T and prints rows under a header, tab-aligned.
func table[T any](header string, rows func(T) [][]string, footer func(T) string) renderer {
	return func(raw []byte, w io.Writer) error {
		var v T
		if err := json.Unmarshal(raw, &v); err != nil {
			return err
		}
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, header)
		for _, r := range rows(v) {
			fmt.Fprintln(tw, strings.Join(r, "\t"))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		if footer != nil {
			if f := footer(v); f != "" {
				fmt.Fprintln(w, f)
			}
		}
		return nil
	}
}

// fields prints one object as "key: value" lines.
func fields[T any](lines func(T) [][2]string) renderer {
	return func(raw []byte, w io.Writer) error {
		var v T
		if err := json.Unmarshal(raw, &v); err != nil {
			return err
		}
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		for _, l := range lines(v) {
			fmt.Fprintf(tw, "%s:\t%s\n", l[0], l[1])
		}
		return tw.Flush()
	}
}

func metaFooter(m apiv1.Meta) string {
	pages := max(1, (m.Count+m.Limit-1)/max(1, m.Limit))
	s := fmt.Sprintf("page %d of %d, %d in all", m.Page, pages, m.Count)
	if len(m.Unreachable) > 0 {
		s += "; not asked (their part is missing): " + strings.Join(m.Unreachable, ", ")
	}
	return s
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func uptime(s int64) string { return (time.Duration(s) * time.Second).String() }

func nodeLines(n apiv1.Node) [][2]string {
	ready := yesNo(n.Ready)
	if n.NotReadyReason != "" {
		ready += " (" + n.NotReadyReason + ")"
	}
	return [][2]string{{"name", n.Name}, {"cluster ID", n.ClusterID}, {"raft state", n.RaftState}, {"store state", n.StoreState},
		{"ready", ready}, {"evacuating", yesNo(n.Evacuating)}, {"version", n.Version}, {"connections", strconv.FormatInt(n.Connections, 10)},
		{"unreachable", strings.Join(n.Unreachable, ", ")}}
}

var (
	renderNode    = fields(nodeLines)
	renderCluster = table("NAME\tADDRESS\tREACHABLE\tVOTER\tLEADER", func(c apiv1.Cluster) [][]string {
		var out [][]string
		for _, m := range c.Members {
			out = append(out, []string{m.Name, m.Address, yesNo(m.Reachable), yesNo(m.Voter), yesNo(m.Name == c.Leader)})
		}
		return out
	}, func(c apiv1.Cluster) string { return "cluster " + c.ClusterID })
	renderEvacuation = fields(func(e apiv1.Evacuation) [][2]string {
		return [][2]string{{"state", e.State}, {"clients", strconv.Itoa(e.Clients)}, {"sessions", strconv.Itoa(e.Sessions)}, {"moved", strconv.Itoa(e.Moved)}}
	})
)

// listFlags parses a list command's flags; names maps a flag to its query parameter.
func listFlags(cmd string, args []string, names map[string]string) (string, error) {
	fs := flag.NewFlagSet("mqttd ctl "+cmd, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	vals := map[string]*string{}
	for f := range names {
		vals[f] = fs.String(f, "", "")
	}
	page := fs.Int("page", 1, "")
	limit := fs.Int("limit", 100, "")
	if err := fs.Parse(args); err != nil {
		return "", fmt.Errorf("%s: %w", cmd, err)
	}
	if fs.NArg() > 0 {
		return "", fmt.Errorf("%s: unexpected argument %q", cmd, fs.Arg(0))
	}
	q := url.Values{}
	for f, p := range names {
		if *vals[f] != "" {
			q.Set(p, *vals[f])
		}
	}
	q.Set("page", strconv.Itoa(*page))
	q.Set("limit", strconv.Itoa(*limit))
	return q.Encode(), nil
}

// ctlCommand maps a command line to an API request and the table its answer prints as.
func ctlCommand(args []string) (method, path string, body []byte, render renderer, err error) {
	one := func() (string, error) {
		if len(args) != 3 || args[2] == "" {
			return "", fmt.Errorf("%q needs one argument", strings.Join(args[:min(2, len(args))], " "))
		}
		return args[2], nil
	}
	rest := func() []string { // a list command's flags
		if len(args) < 2 {
			return nil
		}
		return args[2:]
	}
	cmd := strings.Join(args[:min(2, len(args))], " ")
	switch {
	case len(args) == 1 && args[0] == "status":
		return http.MethodGet, "/api/v1/nodes", nil, table("NAME\tREADY\tRAFT\tSTORE\tVERSION\tUPTIME\tCONNECTIONS\tSESSIONS", func(l apiv1.NodeList) [][]string {
			var out [][]string
			for _, n := range l.Data {
				out = append(out, []string{n.Name, yesNo(n.Ready), n.RaftState, n.StoreState, n.Version, uptime(n.UptimeSeconds),
					strconv.FormatInt(n.Connections, 10), strconv.Itoa(n.Sessions)})
			}
			return out
		}, func(l apiv1.NodeList) string {
			s := "cluster " + l.ClusterID + ", leader " + l.Leader
			if len(l.Unreachable) > 0 {
				s += "; not answering: " + strings.Join(l.Unreachable, ", ")
			}
			return s
		}), nil
	case len(args) == 1 && args[0] == "stats":
		return http.MethodGet, "/api/v1/stats", nil, table("NODE\tCONNECTIONS\tSESSIONS\tSUBSCRIPTIONS\tRETAINED\tRECEIVED\tSENT\tDROPPED", func(s apiv1.Stats) [][]string {
			row := func(n apiv1.NodeStats) []string {
				u := func(v uint64) string { return strconv.FormatUint(v, 10) }
				return []string{n.Name, strconv.FormatInt(n.Connections, 10), strconv.Itoa(n.Sessions), strconv.Itoa(n.Subscriptions),
					strconv.Itoa(n.Retained), u(n.MessagesReceived), u(n.MessagesSent), u(n.MessagesDropped)}
			}
			var out [][]string
			for _, n := range s.Nodes {
				out = append(out, row(n))
			}
			total := s.Total
			total.Name = "(all)"
			return append(out, row(total))
		}, func(s apiv1.Stats) string {
			if len(s.Unreachable) > 0 {
				return "not answering: " + strings.Join(s.Unreachable, ", ")
			}
			return ""
		}), nil
	case len(args) == 1 && args[0] == "cluster":
		return http.MethodGet, "/api/v1/cluster", nil, renderCluster, nil
	case cmd == "clients list":
		q, err := listFlags(cmd, rest(), map[string]string{"node": "node", "user": "username", "prefix": "clientid_prefix", "connected": "connected"})
		if err != nil {
			return "", "", nil, nil, err
		}
		return http.MethodGet, "/api/v1/clients?" + q, nil, table("CLIENT ID\tNODE\tUSER\tCONNECTED\tADDRESS\tSUBSCRIPTIONS\tQUEUED\tINFLIGHT", func(l apiv1.ClientList) [][]string {
			var out [][]string
			for _, c := range l.Data {
				out = append(out, []string{c.ClientID, c.Node, c.Username, yesNo(c.Connected), c.Remote, strconv.Itoa(c.Subscriptions),
					strconv.Itoa(c.Queued), strconv.Itoa(c.Inflight)})
			}
			return out
		}, func(l apiv1.ClientList) string { return metaFooter(l.Meta) }), nil
	case cmd == "clients show":
		id, err := one()
		if err != nil {
			return "", "", nil, nil, err
		}
		return http.MethodGet, "/api/v1/clients/" + url.PathEscape(id), nil, fields(func(c apiv1.ClientDetail) [][2]string {
			out := [][2]string{{"client ID", c.ClientID}, {"node", c.Node}, {"user", c.Username}, {"connected", yesNo(c.Connected)},
				{"address", c.Remote}, {"listener", c.Listener}, {"protocol version", strconv.Itoa(int(c.ProtocolVersion))},
				{"connected at", c.ConnectedAt}, {"disconnected at", c.DisconnectedAt}, {"session expiry", strconv.FormatUint(uint64(c.ExpiryInterval), 10) + "s"},
				{"queued", strconv.Itoa(c.Queued)}, {"inflight", strconv.Itoa(c.Inflight)}, {"dropped", strconv.FormatUint(c.Dropped, 10)}}
			for _, s := range c.SubscriptionList {
				out = append(out, [2]string{"subscription", fmt.Sprintf("%s (QoS %d)", s.Topic, s.QoS)})
			}
			return out
		}), nil
	case cmd == "clients kick":
		id, err := one()
		if err != nil {
			return "", "", nil, nil, err
		}
		return http.MethodDelete, "/api/v1/clients/" + url.PathEscape(id), nil, func(raw []byte, w io.Writer) error {
			var k apiv1.KickResult
			if err := json.Unmarshal(raw, &k); err != nil {
				return err
			}
			_, err := fmt.Fprintf(w, "%s disconnected from %s\n", k.ClientID, k.Node)
			return err
		}, nil
	case cmd == "subscriptions list":
		q, err := listFlags(cmd, rest(), map[string]string{"topic": "topic", "client": "clientid", "node": "node"})
		if err != nil {
			return "", "", nil, nil, err
		}
		return http.MethodGet, "/api/v1/subscriptions?" + q, nil, table("CLIENT ID\tNODE\tTOPIC\tQOS", func(l apiv1.SubscriptionList) [][]string {
			var out [][]string
			for _, s := range l.Data {
				out = append(out, []string{s.ClientID, s.Node, s.Topic, strconv.Itoa(int(s.QoS))})
			}
			return out
		}, func(l apiv1.SubscriptionList) string { return metaFooter(l.Meta) }), nil
	case cmd == "routes list":
		q, err := listFlags(cmd, rest(), map[string]string{"topic": "topic"})
		if err != nil {
			return "", "", nil, nil, err
		}
		return http.MethodGet, "/api/v1/routes?" + q, nil, table("TOPIC\tNODES", func(l apiv1.RouteList) [][]string {
			var out [][]string
			for _, r := range l.Data {
				out = append(out, []string{r.Topic, strings.Join(r.Nodes, ",")})
			}
			return out
		}, func(l apiv1.RouteList) string { return metaFooter(l.Meta) }), nil
	case cmd == "retained list":
		q, err := listFlags(cmd, rest(), map[string]string{"prefix": "topic_prefix"})
		if err != nil {
			return "", "", nil, nil, err
		}
		return http.MethodGet, "/api/v1/retained?" + q, nil, table("TOPIC\tQOS\tSIZE\tPAYLOAD", func(l apiv1.RetainedList) [][]string {
			var out [][]string
			for _, m := range l.Data {
				p := m.Payload
				if m.PayloadEncoding == apiv1.EncodingBase64 {
					p = "base64:" + p
				}
				if len(p) > 60 {
					p = p[:60] + "…"
				}
				out = append(out, []string{m.Topic, strconv.Itoa(int(m.QoS)), strconv.Itoa(m.PayloadSize), strings.ReplaceAll(p, "\n", `\n`)})
			}
			return out
		}, func(l apiv1.RetainedList) string { return metaFooter(l.Meta) }), nil
	case cmd == "retained show":
		t, err := one()
		if err != nil {
			return "", "", nil, nil, err
		}
		return http.MethodGet, "/api/v1/retained/message?topic=" + url.QueryEscape(t), nil, fields(func(m apiv1.RetainedMessage) [][2]string {
			return [][2]string{{"topic", m.Topic}, {"qos", strconv.Itoa(int(m.QoS))}, {"size", strconv.Itoa(m.PayloadSize)},
				{"encoding", m.PayloadEncoding}, {"payload", m.Payload}}
		}), nil
	case cmd == "retained delete":
		t, err := one()
		if err != nil {
			return "", "", nil, nil, err
		}
		return http.MethodDelete, "/api/v1/retained/message?topic=" + url.QueryEscape(t), nil, func(_ []byte, w io.Writer) error {
			_, err := fmt.Fprintf(w, "retained message on %s deleted\n", t)
			return err
		}, nil
	case len(args) >= 1 && args[0] == "publish":
		fs := flag.NewFlagSet("mqttd ctl publish", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		qos := fs.Int("qos", 0, "")
		retain := fs.Bool("retain", false, "")
		b64 := fs.Bool("base64", false, "")
		// Flags may come before or after TOPIC PAYLOAD.
		var pos []string
		rest := args[1:]
		for len(rest) > 0 {
			if err := fs.Parse(rest); err != nil {
				return "", "", nil, nil, fmt.Errorf("publish: %w", err)
			}
			if fs.NArg() == 0 {
				break
			}
			pos, rest = append(pos, fs.Arg(0)), fs.Args()[1:]
		}
		if len(pos) != 2 {
			return "", "", nil, nil, fmt.Errorf("publish needs TOPIC and PAYLOAD")
		}
		if *qos < 0 || *qos > 2 {
			return "", "", nil, nil, fmt.Errorf("publish: --qos %d: want 0, 1 or 2", *qos)
		}
		req := apiv1.PublishRequest{Topic: pos[0], Payload: pos[1], QoS: byte(*qos), Retain: *retain}
		if *b64 {
			req.PayloadEncoding = apiv1.EncodingBase64
		}
		body, _ = json.Marshal(req)
		return http.MethodPost, "/api/v1/publish", body, func(raw []byte, w io.Writer) error {
			var r apiv1.PublishResult
			if err := json.Unmarshal(raw, &r); err != nil {
				return err
			}
			_, err := fmt.Fprintf(w, "published to %s: %d subscriber(s) got it\n", r.Topic, r.Sessions)
			if err == nil && r.NotRetained != "" {
				_, err = fmt.Fprintf(w, "not retained: %s\n", r.NotRetained)
			}
			return err
		}, nil
	}
	method, path, body, err = ctlRequest(args)
	if err != nil {
		return "", "", nil, nil, err
	}
	switch {
	case strings.HasPrefix(path, "/api/v1/cluster") && path != "/api/v1/cluster/bootstrap" && path != "/api/v1/cluster/join" && path != "/api/v1/cluster/leave":
		render = renderCluster
	case strings.HasPrefix(path, "/api/v1/node/evacua"):
		render = renderEvacuation
	default:
		render = renderNode
	}
	return method, path, body, render, nil
}
