package server_test

import (
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/mqtt-operator/mqtt-operator/broker/server"
)

func TestSmokeV311(t *testing.T) {
	b := startBroker(t, server.Options{})
	for _, url := range []string{"tcp://" + b.TCPAddr, b.WSURL} {
		sub := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(url).SetClientID("sub").SetCleanSession(true))
		if tok := sub.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("%s connect: %v", url, tok.Error())
		}
		got := make(chan mqtt.Message, 1)
		if tok := sub.Subscribe("/computer/part/+", 1, func(_ mqtt.Client, m mqtt.Message) { got <- m }); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatal(tok.Error())
		}
		pub := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(url).SetClientID("pub"))
		if tok := pub.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatal(tok.Error())
		}
		if tok := pub.Publish("/computer/part/cpu", 1, false, "intel cpu"); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatal(tok.Error())
		}
		select {
		case m := <-got:
			if m.Topic() != "/computer/part/cpu" || string(m.Payload()) != "intel cpu" || m.Qos() != 1 {
				t.Fatalf("got %s %q qos %d", m.Topic(), m.Payload(), m.Qos())
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no message")
		}
		pub.Disconnect(100)
		sub.Disconnect(100)
	}
}
