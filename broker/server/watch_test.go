package server_test

import (
	"errors"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/mqtt-operator/mqtt-operator/broker/server"
)

// TestWatch checks the dashboard's watchers against real clients: a watcher gets the
// messages a client publishes that match its filter (and not the others), is not a
// session (the client list does not show it), drops what does not fit its buffer
// without holding up the subscribers, and after stop gets nothing and leaves no
// subscription behind.
func TestWatch(t *testing.T) {
	b := startBroker(t, server.Options{})
	before := b.Stats().Subscriptions
	msgs, stop, err := b.Watch("watch/+/temp", 2)
	if err != nil {
		t.Fatal(err)
	}
	sub := tcpTransport.connect(t, b, &paho.Connect{ClientID: "w-sub", CleanStart: true, KeepAlive: 30})
	sub.subscribe(t, 1, paho.SubscribeOptions{Topic: "watch/#", QoS: 0})
	pub := tcpTransport.connect(t, b, &paho.Connect{ClientID: "w-pub", CleanStart: true, KeepAlive: 30})
	pub.publish(t, msg("watch/a/temp", 1, "21"))
	pub.publish(t, msg("watch/a/humidity", 1, "60"))
	select {
	case m := <-msgs:
		if m.Topic != "watch/a/temp" || string(m.Payload) != "21" {
			t.Fatalf("watched %s %q", m.Topic, m.Payload)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the watcher got nothing")
	}
	if got := sub.nextPayload(t); got != "21" {
		t.Fatalf("the subscriber got %q first", got)
	}
	if got := sub.nextPayload(t); got != "60" {
		t.Fatalf("the subscriber got %q second", got)
	}
	for _, c := range b.LocalClients(nil) {
		if c.ClientID != "w-sub" && c.ClientID != "w-pub" {
			t.Fatalf("the watcher is listed as a client: %+v", c)
		}
	}
	// Four more into a buffer of two: two dropped for the watcher, none for the client.
	for _, p := range []string{"1", "2", "3", "4"} {
		pub.publish(t, msg("watch/b/temp", 1, p))
	}
	for _, want := range []string{"1", "2", "3", "4"} {
		if got := sub.nextPayload(t); got != want {
			t.Fatalf("the subscriber got %q, want %q", got, want)
		}
	}
	dropped := stop()
	if dropped != 2 {
		t.Fatalf("dropped %d for the watcher, want 2", dropped)
	}
	var got []string
	for m := range msgs { // closed by stop
		got = append(got, string(m.Payload))
	}
	if len(got) != 2 || got[0] != "1" || got[1] != "2" {
		t.Fatalf("the watcher's buffer held %v", got)
	}
	if n := b.Stats().Subscriptions; n != before+1 {
		t.Fatalf("%d subscriptions after stop, want %d (the client's only)", n, before+1)
	}
	if _, _, err := b.Watch("$share/g/x", 1); err == nil {
		t.Fatal("a shared watch was accepted")
	}
	if _, _, err := b.Watch("a/#/b", 1); err == nil {
		t.Fatal("an invalid filter was accepted")
	}
}

// TestWatchEndsAtShutdown checks that a shutdown closes every watcher's channel (a
// stream reading it ends instead of holding up the shutdown) and refuses new ones.
func TestWatchEndsAtShutdown(t *testing.T) {
	srv, err := server.New(server.Options{SysInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	msgs, _, err := srv.Watch("a/#", 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	select {
	case _, ok := <-msgs:
		if ok {
			t.Fatal("a message after the shutdown")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the watcher's channel is still open after the shutdown")
	}
	if _, _, err := srv.Watch("a/#", 1); !errors.Is(err, server.ErrServerClosed) {
		t.Fatalf("a watch after the shutdown: %v", err)
	}
}
