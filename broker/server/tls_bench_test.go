package server_test

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mqtt-operator/mqtt-operator/broker/listener"
	"github.com/mqtt-operator/mqtt-operator/broker/packet"
	"github.com/mqtt-operator/mqtt-operator/broker/server"
)

// tlsBroker serves the mqtts listener of srv with an ECDSA P-256 certificate (what
// the operator and cert-manager issue by default) and returns its address and a
// client configuration trusting it.
func tlsBroker(b *testing.B, srv *server.Server) (string, *tls.Config) {
	b.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost"}, DNSNames: []string{"localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		b.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		b.Fatal(err)
	}
	cert, err := listener.NewCertReloader(certFile, keyFile, nil)
	if err != nil {
		b.Fatal(err)
	}
	t, err := listener.NewTLS(listener.TLSSettings{Cert: cert, MinVersion: "1.2", ClientCerts: listener.ClientCertsNone})
	if err != nil {
		b.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go func() { _ = srv.ServeListener(listener.Wrap(l, listener.Options{Name: "mqtts", TLS: t}), "mqtts") }()
	pool := x509.NewCertPool()
	c, err := x509.ParseCertificate(der)
	if err != nil {
		b.Fatal(err)
	}
	pool.AddCert(c)
	return l.Addr().String(), &tls.Config{RootCAs: pool, ServerName: "localhost"}
}

// benchTransports dials the broker's plain TCP listener or its mqtts listener.
func benchTransports(b *testing.B, br *broker) map[string]func() (net.Conn, error) {
	tlsAddr, cfg := tlsBroker(b, br.Server)
	return map[string]func() (net.Conn, error){
		"tcp": func() (net.Conn, error) { return net.Dial("tcp", br.TCPAddr) },
		"tls": func() (net.Conn, error) { return tls.Dial("tcp", tlsAddr, cfg) },
	}
}

// connectOnce dials, sends CONNECT, reads the CONNACK and closes: one client's
// connection set-up, the TLS handshake included.
func connectOnce(dial func() (net.Conn, error), id string) error {
	c, err := dial()
	if err != nil {
		return err
	}
	defer func() { _ = c.Close() }()
	p := packet.Packet{Type: packet.Connect, Connect: packet.ConnectFields{ProtocolVersion: packet.V311, CleanStart: true, ClientID: id}}
	if _, err := c.Write(p.Encode(nil, packet.V311)); err != nil {
		return err
	}
	ack, err := packet.Read(bufio.NewReader(c), packet.V311, 0)
	if err != nil {
		return err
	}
	if ack.Type != packet.Connack || ack.ReasonCode != 0 {
		return errors.New("no CONNACK 0")
	}
	return nil
}

// BenchmarkTLSConnect measures connections set up per second (TCP or TLS 1.3
// handshake, CONNECT, CONNACK) by 2 clients at a time on loopback, mqtts against
// plain TCP on the same broker.
func BenchmarkTLSConnect(b *testing.B) {
	br := startBroker(b, server.Options{SysInterval: -1})
	for _, name := range []string{"tcp", "tls"} {
		dial := benchTransports(b, br)[name]
		b.Run(name, func(b *testing.B) {
			var n atomic.Int64
			b.SetParallelism(1)
			b.ResetTimer()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := connectOnce(dial, fmt.Sprintf("c-%s-%d", name, n.Add(1))); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "connects/s")
		})
	}
}

// BenchmarkTLSThroughput measures QoS 0 messages of 64 bytes from one publisher to
// one subscriber, both over plain TCP or both over TLS.
func BenchmarkTLSThroughput(b *testing.B) {
	for _, name := range []string{"tcp", "tls"} {
		b.Run(name, func(b *testing.B) {
			br := startBroker(b, server.Options{SysInterval: -1, MaxQueued: 1 << 20})
			dial := benchTransports(b, br)[name]
			var got atomic.Int64
			all := make(chan struct{}) // closed when the subscriber has b.N messages
			sub, err := dial()
			if err != nil {
				b.Fatal(err)
			}
			defer func() { _ = sub.Close() }()
			sbr := bufio.NewReaderSize(sub, 64<<10)
			write := func(c net.Conn, p *packet.Packet) {
				if _, err := c.Write(p.Encode(nil, packet.V311)); err != nil {
					b.Fatal(err)
				}
			}
			write(sub, &packet.Packet{Type: packet.Connect, Connect: packet.ConnectFields{ProtocolVersion: packet.V311, CleanStart: true, ClientID: "sub"}})
			write(sub, &packet.Packet{Type: packet.Subscribe, PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "bench/+/data"}}})
			for _, want := range []packet.Type{packet.Connack, packet.Suback} {
				if p, err := packet.Read(sbr, packet.V311, 0); err != nil || p.Type != want {
					b.Fatalf("subscriber: %v %v", p, err)
				}
			}
			go func() {
				var p packet.Packet
				for packet.ReadInto(sbr, &p, packet.V311, 0) == nil {
					if p.Type == packet.Publish && got.Add(1) == int64(b.N) {
						close(all)
					}
				}
			}()
			pub, err := dial()
			if err != nil {
				b.Fatal(err)
			}
			defer func() { _ = pub.Close() }()
			write(pub, &packet.Packet{Type: packet.Connect, Connect: packet.ConnectFields{ProtocolVersion: packet.V311, CleanStart: true, ClientID: "pub"}})
			go func() { _, _ = io.Copy(io.Discard, pub) }()
			payload := make([]byte, 64)
			var out []byte
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < b.N; i++ {
				out = (&packet.Packet{Type: packet.Publish, Topic: "bench/x/data", Payload: payload}).Encode(out, packet.V311)
				if len(out) > 64*80 || i == b.N-1 {
					if _, err := pub.Write(out); err != nil {
						b.Fatal(err)
					}
					out = out[:0]
				}
			}
			select {
			case <-all:
			case <-time.After(60 * time.Second):
				b.Fatalf("delivered %d of %d", got.Load(), b.N)
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
		})
	}
}
