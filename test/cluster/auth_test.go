package cluster

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"github.com/mqtt-operator/mqtt-operator/broker/auth"
)

// authCluster forms a cluster of n nodes that refuse anonymous clients and know the
// users alice and bob (password: the name with "-pw"); alice owns alice/#, bob may
// write to alice/inbox.
func authCluster(t *testing.T, n int) []*node {
	t.Helper()
	dir := t.TempDir()
	users, acl := filepath.Join(dir, "users"), filepath.Join(dir, "acl.yaml")
	var lines []string
	for _, u := range []string{"alice", "bob"} {
		l, err := auth.HashLine(u, []byte(u+"-pw"), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		lines = append(lines, l)
	}
	for file, body := range map[string]string{users: strings.Join(lines, "\n") + "\n", acl: `default: deny
rules:
  - {username: alice, topic: "alice/#", access: all, action: allow}
  - {username: bob, topic: "alice/inbox", access: publish, action: allow}
`} {
		if err := os.WriteFile(file, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	extra := []string{"--auth.allow-anonymous=false", "--auth.users-file", users, "--auth.acl-file", acl}
	nodes := make([]*node, n)
	for i := range nodes {
		nodes[i] = startNode(t, nodeOptions{name: nodeName(i), extra: extra})
	}
	nodes[0].bootstrap()
	for i := 1; i < n; i++ {
		nodes[i].join(nodes[0])
		waitClusterSize(t, nodes[:i+1], i+1)
	}
	return nodes
}

func as(user string) v5Options {
	return v5Options{cleanStart: true, user: user, password: user + "-pw"}
}

// TestClusterAuth: every node refuses anonymous clients; a message forwarded between
// nodes reaches a subscriber the ACL lets read it; a client of bob cannot take over
// alice's client ID on another node, whether her session is live or offline, and
// alice's own takeover across nodes keeps her session.
func TestClusterAuth(t *testing.T) {
	nodes := authCluster(t, 3)
	a, b, c := nodes[0], nodes[1], nodes[2]
	for _, n := range nodes {
		if _, err := dialV5(n.mqttAddress(), "anon", v5Options{cleanStart: true}); err == nil {
			t.Fatalf("%s let an anonymous client in", n.name())
		}
	}

	alice := connectV5(t, a, "alice-sub", as("alice"))
	alice.subscribe(t, 1, "alice/#")
	bob := connectV5(t, b, "bob-pub", as("bob"))
	eventually(t, clusterTimeout, "bob's publish reaches alice on another node", func() error {
		if err := bob.tryPublish("alice/inbox", 1, false, "forwarded"); err != nil {
			return err
		}
		if !alice.rec.hasPayload("forwarded") {
			return errors.New("not yet")
		}
		return nil
	})
	if err := bob.tryPublish("alice/other", 1, false, "refused"); err == nil {
		t.Fatal("bob's publish to alice/other was accepted")
	}

	owner := v5Options{cleanStart: false, expiry: sessionExpiry, user: "alice", password: "alice-pw"}
	device := connectV5(t, a, "device-1", owner)
	device.subscribe(t, 1, "alice/device")
	thief := v5Options{cleanStart: false, expiry: sessionExpiry, user: "bob", password: "bob-pw"}
	for _, n := range []*node{b, c, a} {
		_, err := dialV5(n.mqttAddress(), "device-1", thief)
		if err == nil || !strings.Contains(err.Error(), "another user") {
			t.Fatalf("bob's takeover of alice's live client ID on %s: %v, want a refusal", n.name(), err)
		}
	}
	if !device.alive() {
		t.Fatal("a refused takeover closed alice's connection")
	}
	device.close()
	eventually(t, clusterTimeout, "alice's device offline", func() error { return expectConnections(1, a) }) // alice-sub stays
	if _, err := dialV5(c.mqttAddress(), "device-1", thief); err == nil {
		t.Fatal("bob took over alice's offline session from another node")
	}
	back := connectV5(t, c, "device-1", owner)
	if !back.connack.SessionPresent {
		t.Fatal("alice's own takeover on another node lost her session")
	}
}
