package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/mqtt-operator/mqtt-operator/broker/apiv1"
)

// TestCtlManagement drives the management commands of `mqttd ctl` against a real
// mqttd with a real mosquitto_sub: clients list (table and -o json), show, publish
// (received by mosquitto_sub), subscriptions, retained list/show/delete, status,
// stats, and the kick that ends mosquitto_sub's connection.
func TestCtlManagement(t *testing.T) {
	token := writeCookie(t, "api-token-0123456789")
	_, _, addr, api := startMqttd(t, "--api.token-file", token)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	subOut := make(chan string, 1)
	go func() {
		_, out := mosquitto(ctx, t, "mosquitto_sub", "-h", "127.0.0.1", "-p", portOf(addr), "-i", "ctl-sub", "-q", "1",
			"-t", "ctl/#", "-v", "-C", "3", "-W", "50")
		subOut <- out
	}()
	waitMetric(t, api, `mqttd_subscriptions 1\b`)

	run := func(want int, args ...string) string {
		t.Helper()
		code, out, errOut := ctl(t, api, token, append([]string{"-o", "table"}, args...)...)
		if code != want {
			t.Fatalf("mqttd ctl %s: exit %d, want %d: %s %s", strings.Join(args, " "), code, want, out, errOut)
		}
		return out + errOut
	}
	if out := run(exitOK, "clients", "list"); !strings.Contains(out, "CLIENT ID") || !strings.Contains(out, "ctl-sub") || !strings.Contains(out, "1 in all") {
		t.Fatalf("clients list:\n%s", out)
	}
	code, out, _ := ctl(t, api, token, "clients", "list", "--prefix", "ctl-")
	var list apiv1.ClientList
	if code != exitOK || json.Unmarshal([]byte(out), &list) != nil || len(list.Data) != 1 || !list.Data[0].Connected || list.Data[0].Subscriptions != 1 {
		t.Fatalf("clients list -o json: exit %d\n%s", code, out)
	}
	if out := run(exitOK, "clients", "list", "--prefix", "nobody"); strings.Contains(out, "ctl-sub") || !strings.Contains(out, "0 in all") {
		t.Fatalf("clients list --prefix nobody:\n%s", out)
	}
	if out := run(exitOK, "clients", "show", "ctl-sub"); !strings.Contains(out, "subscription:") || !strings.Contains(out, "ctl/# (QoS 1)") {
		t.Fatalf("clients show:\n%s", out)
	}
	if out := run(exitFailed, "clients", "show", "nobody"); !strings.Contains(out, "not_found") {
		t.Fatalf("clients show nobody:\n%s", out)
	}
	if out := run(exitOK, "subscriptions", "list", "--topic", "ctl/#"); !strings.Contains(out, "ctl-sub") {
		t.Fatalf("subscriptions list:\n%s", out)
	}
	run(exitOK, "publish", "--retain", "ctl/r", "keep")
	if out := run(exitOK, "retained", "list", "--prefix", "ctl/"); !strings.Contains(out, "ctl/r") || !strings.Contains(out, "keep") {
		t.Fatalf("retained list:\n%s", out)
	}
	if out := run(exitOK, "retained", "show", "ctl/r"); !strings.Contains(out, "payload:") || !strings.Contains(out, "keep") {
		t.Fatalf("retained show:\n%s", out)
	}
	run(exitOK, "retained", "delete", "ctl/r")
	if out := run(exitOK, "retained", "list", "--prefix", "ctl/"); strings.Contains(out, "ctl/r") {
		t.Fatalf("retained list after delete:\n%s", out)
	}
	if out := run(exitOK, "status"); !strings.Contains(out, "CONNECTIONS") || !strings.Contains(out, "yes") {
		t.Fatalf("status:\n%s", out)
	}
	if out := run(exitOK, "stats"); !strings.Contains(out, "(all)") {
		t.Fatalf("stats:\n%s", out)
	}
	run(exitConfig, "publish", "ctl/x")
	run(exitConfig, "clients", "list", "--bogus", "1")
	// The kick closes mosquitto_sub's connection; it connects again by itself (a
	// second connection) and subscribes again.
	if out := run(exitOK, "clients", "kick", "ctl-sub"); !strings.Contains(out, "ctl-sub disconnected") {
		t.Fatalf("clients kick:\n%s", out)
	}
	waitMetric(t, api, `mqttd_connections_total 2\b`)
	waitMetric(t, api, `mqttd_subscriptions 1\b`)
	run(exitFailed, "clients", "kick", "nobody")
	if out := run(exitOK, "publish", "ctl/x", "hello", "--qos", "1"); !strings.Contains(out, "1 subscriber(s)") {
		t.Fatalf("publish:\n%s", out)
	}
	run(exitOK, "publish", "ctl/y", "bye")
	select {
	case out := <-subOut:
		if !strings.Contains(out, "ctl/r keep") || !strings.Contains(out, "ctl/x hello") || !strings.Contains(out, "ctl/y bye") {
			t.Fatalf("mosquitto_sub received:\n%s", out)
		}
	case <-ctx.Done():
		t.Fatal("mosquitto_sub did not receive the three messages")
	}
}
