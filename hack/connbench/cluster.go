package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/mqtt-operator/mqtt-operator/broker/packet"
)

// clusterRun holds idle connections on the three nodes of an mqttd cluster while a
// publisher on the first node sends QoS 1 messages to fleet/all, which -subscribers
// of the held connections (spread over the nodes) and one probe subscriber on the last
// node receive. It reports each node's RSS per connection, and what the publisher and
// the probe saw: that the cluster keeps working under the load.
func clusterRun(args []string) error {
	fs := flag.NewFlagSet("cluster", flag.ContinueOnError)
	mqttd := fs.String("mqttd", "bin/mqttd", "the mqttd binary")
	perNode := fs.Int("per-node", 19000, "idle connections per node")
	perProcess := fs.Int("per-process", 5000, "connections per client process")
	subscribers := fs.Int("subscribers", 1000, "held connections that also subscribe to fleet/all, spread over the nodes")
	rate := fs.Int("rate", 50, "messages per second the publisher sends to fleet/all")
	settle := fs.Duration("settle", 130*time.Second, "how long the publisher runs after every connection is up, before the memory is read")
	if err := fs.Parse(args); err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "connbench-cluster-")
	if err != nil {
		return err
	}
	defer func() { _ = os.RemoveAll(dir) }()
	token := filepath.Join(dir, "token")
	cookie := filepath.Join(dir, "cookie")
	if err := os.WriteFile(token, []byte("connbench-api-token-0123456789\n"), 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(cookie, []byte("connbench-cluster-cookie-0123456789\n"), 0o600); err != nil {
		return err
	}

	type node struct {
		name, mqtt, api, cluster string
		cmd                      *exec.Cmd
		base, baseHeap           int64
	}
	nodes := make([]*node, 3)
	defer func() {
		for _, n := range nodes {
			if n != nil && n.cmd != nil {
				_ = n.cmd.Process.Signal(syscall.SIGTERM)
				_ = n.cmd.Wait()
			}
		}
	}()
	for i := range nodes {
		ports := make([]int, 3)
		for j := range ports {
			if ports[j], err = freePort(); err != nil {
				return err
			}
		}
		n := &node{name: fmt.Sprintf("node-%d", i), mqtt: fmt.Sprintf("127.0.0.1:%d", ports[0]),
			api: fmt.Sprintf("127.0.0.1:%d", ports[1]), cluster: fmt.Sprintf("127.0.0.1:%d", ports[2])}
		logFile, err := os.Create(filepath.Join(dir, n.name+".log"))
		if err != nil {
			return err
		}
		n.cmd = exec.Command(*mqttd, "--listeners.tcp", n.mqtt, "--listeners.websocket", "", "--api.listen", n.api,
			"--api.token-file", token, "--store.dir", filepath.Join(dir, n.name), "--log.level", "warn",
			"--limits.max-connections", "0", "--limits.connection-rate", "0",
			"--cluster.listen", n.cluster, "--cluster.cookie-file", cookie, "--cluster.node-name", n.name)
		n.cmd.Stdout, n.cmd.Stderr = logFile, logFile
		if err := n.cmd.Start(); err != nil {
			return err
		}
		nodes[i] = n
		if err := waitListening(n.api, 30*time.Second); err != nil {
			return err
		}
	}
	tokenBytes, _ := os.ReadFile(token)
	post := func(n *node, path, body string) error {
		req, err := http.NewRequest(http.MethodPost, "http://"+n.api+path, strings.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tokenBytes)))
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		defer func() { _ = resp.Body.Close() }()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("POST %s on %s: %d %s", path, n.name, resp.StatusCode, b)
		}
		return nil
	}
	if err := retry(30*time.Second, func() error { return post(nodes[0], "/api/v1/cluster/bootstrap", "") }); err != nil {
		return err
	}
	for _, n := range nodes[1:] {
		if err := retry(60*time.Second, func() error {
			return post(n, "/api/v1/cluster/join", fmt.Sprintf(`{"seed":%q}`, nodes[0].cluster))
		}); err != nil {
			return err
		}
	}
	for _, n := range nodes {
		if n.base, err = settledRSS(n.cmd.Process.Pid, 0); err != nil {
			return err
		}
		if n.baseHeap, err = goHeap("http://" + n.api + "/metrics"); err != nil {
			return err
		}
	}
	fmt.Printf("cluster of 3 up; base RSS %.1f / %.1f / %.1f MiB\n", mib(nodes[0].base), mib(nodes[1].base), mib(nodes[2].base))

	// The idle fleet.
	h := newHolders(self)
	defer h.stop()
	start := time.Now()
	src := 1
	for i, n := range nodes {
		fleet := *subscribers / 3
		if i == 0 {
			fleet += *subscribers % 3
		}
		for left := *perNode; left > 0; left -= *perProcess {
			cn := min(left, *perProcess)
			if err := h.start("-addr", n.mqtt, "-n", strconv.Itoa(cn), "-src", strconv.Itoa(src),
				"-prefix", fmt.Sprintf("%s-p%d", n.name, src), "-fleet", strconv.Itoa(min(fleet, cn))); err != nil {
				return err
			}
			fleet -= min(fleet, cn)
			src++
		}
	}
	if err := h.wait(); err != nil {
		return err
	}
	total := 3 * *perNode
	fmt.Printf("%d idle connections up in %.1f s (%.0f connects/s over the cluster)\n", total, time.Since(start).Seconds(),
		float64(total)/time.Since(start).Seconds())

	// The probe: a subscriber on the last node, a QoS 1 publisher on the first.
	probe, probeR, err := loadConnect(nodes[2].mqtt, "probe-sub", "fleet/all", 1)
	if err != nil {
		return err
	}
	defer func() { _ = probe.Close() }()
	received := make(chan time.Duration, 1<<16)
	go func() {
		for {
			p, err := packet.Read(probeR, packet.V311, 0)
			if err != nil {
				close(received)
				return
			}
			if p.Type == packet.Publish {
				ack := &packet.Packet{Type: packet.Puback, PacketID: p.PacketID}
				if _, err := probe.Write(ack.Encode(nil, packet.V311)); err != nil {
					close(received)
					return
				}
				if sent, err := strconv.ParseInt(string(bytes.TrimSpace(p.Payload)), 10, 64); err == nil {
					received <- time.Since(time.Unix(0, sent))
				}
			}
		}
	}()
	pub, br, err := loadConnect(nodes[0].mqtt, "probe-pub", "", 0)
	if err != nil {
		return err
	}
	defer func() { _ = pub.Close() }()
	acked := make(chan struct{}, 1<<16)
	go func() {
		for {
			p, err := packet.Read(br, packet.V311, 0)
			if err != nil {
				return
			}
			if p.Type == packet.Puback {
				acked <- struct{}{}
			}
		}
	}()
	apis := []string{nodes[0].api, nodes[1].api, nodes[2].api}
	sentBefore, err := sumMetric(apis, "mqttd_messages_sent_total")
	if err != nil {
		return err
	}
	tick := time.NewTicker(time.Second / time.Duration(*rate))
	deadline := time.Now().Add(*settle)
	published := 0
	for time.Now().Before(deadline) {
		<-tick.C
		published++
		p := &packet.Packet{Type: packet.Publish, QoS: 1, PacketID: uint16(published%65535 + 1), Topic: "fleet/all",
			Payload: []byte(strconv.FormatInt(time.Now().UnixNano(), 10))}
		_ = pub.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if _, err := pub.Write(p.Encode(nil, packet.V311)); err != nil {
			return fmt.Errorf("publish: %w", err)
		}
	}
	tick.Stop()
	wait := time.After(10 * time.Second)
	nAcked, nReceived := 0, 0
	var lat []float64
	for nAcked < published || nReceived < published {
		select {
		case <-acked:
			nAcked++
		case d, ok := <-received:
			if !ok {
				return errors.New("the probe subscriber's connection ended")
			}
			nReceived++
			lat = append(lat, d.Seconds()*1000)
		case <-wait:
			goto done
		}
	}
done:
	sentAfter, err := sumMetric(apis, "mqttd_messages_sent_total")
	if err != nil {
		return err
	}
	sent := sentAfter - sentBefore
	fmt.Printf("publisher on node-0: %d QoS 1 messages at %d/s, %d acknowledged; probe on node-2 received %d, latency median %.1f ms, max %.1f ms\n",
		published, *rate, nAcked, nReceived, median(lat), maxOf(lat))
	fmt.Printf("deliveries counted by the three nodes: %.0f (%.1f per message; %d subscribers + the probe)\n",
		sent, sent/float64(max(published, 1)), *subscribers)
	for _, n := range nodes {
		rss, err := settledRSS(n.cmd.Process.Pid, 0)
		if err != nil {
			return err
		}
		heap, err := goHeap("http://" + n.api + "/metrics")
		if err != nil {
			return err
		}
		fmt.Printf("%s: RSS %.1f MiB, %.2f KiB per connection over its base; live Go heap+stacks %.1f MiB, %.2f KiB per connection\n",
			n.name, mib(rss), float64(rss-n.base)/float64(*perNode)/1024, mib(heap), float64(heap-n.baseHeap)/float64(*perNode)/1024)
	}
	if nAcked < published || nReceived < published {
		return fmt.Errorf("%d of %d acknowledged, %d received", nAcked, published, nReceived)
	}
	return nil
}

func maxOf(v []float64) float64 {
	m := 0.0
	for _, x := range v {
		m = max(m, x)
	}
	return m
}

func retry(within time.Duration, f func() error) error {
	deadline := time.Now().Add(within)
	for {
		err := f()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(500 * time.Millisecond) // retrying a cluster step, with a deadline
	}
}

// sumMetric adds up one metric over the nodes' /metrics.
func sumMetric(apis []string, name string) (float64, error) {
	total := 0.0
	for _, a := range apis {
		resp, err := http.Get("http://" + a + "/metrics")
		if err != nil {
			return 0, err
		}
		body, err := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if err != nil {
			return 0, err
		}
		found := false
		for _, line := range strings.Split(string(body), "\n") {
			if f := strings.Fields(line); len(f) == 2 && f[0] == name {
				v, err := strconv.ParseFloat(f[1], 64)
				if err != nil {
					return 0, err
				}
				total += v
				found = true
			}
		}
		if !found {
			return 0, fmt.Errorf("%s: no %s", a, name)
		}
	}
	return total, nil
}
