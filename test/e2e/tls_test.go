//go:build e2e

package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

// writeServerCert writes a CA (ca.crt) and a server certificate it signed for names
// (tls.crt, tls.key) into dir, as a kubernetes.io/tls Secret holds them.
func writeServerCert(dir string, names ...string) {
	GinkgoHelper()
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	Expect(err).NotTo(HaveOccurred())
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "e2e CA"}, NotBefore: now.Add(-time.Hour),
		NotAfter: now.Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	Expect(err).NotTo(HaveOccurred())
	caCert, err := x509.ParseCertificate(caDER)
	Expect(err).NotTo(HaveOccurred())
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	Expect(err).NotTo(HaveOccurred())
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: names[0]}, DNSNames: names,
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	Expect(err).NotTo(HaveOccurred())
	keyDER, err := x509.MarshalECPrivateKey(key)
	Expect(err).NotTo(HaveOccurred())
	for name, b := range map[string]*pem.Block{"ca.crt": {Type: "CERTIFICATE", Bytes: caDER},
		"tls.crt": {Type: "CERTIFICATE", Bytes: der}, "tls.key": {Type: "EC PRIVATE KEY", Bytes: keyDER}} {
		Expect(os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(b), 0o600)).To(Succeed())
	}
}

var _ = Describe("TLS on a real cluster", Ordered, func() {
	It("serves the TLS shape of the sample: Ready, clients over 8883 through the Service with the CA from the Secret, plain MQTT inside only, nodes linked over TLS 1.3", func() {
		ns := newNamespace("tls")
		dir := GinkgoT().TempDir()
		writeServerCert(dir, "localhost", "tlsdemo", "tlsdemo."+ns+".svc")
		run(kubectlBin, "create", "secret", "generic", "tlsdemo-cert", "-n", ns, "--type=kubernetes.io/tls",
			"--from-file=tls.crt="+filepath.Join(dir, "tls.crt"), "--from-file=tls.key="+filepath.Join(dir, "tls.key"),
			"--from-file=ca.crt="+filepath.Join(dir, "ca.crt"))
		out, err := kubectlApply(clusterManifest(ns, "tlsdemo", 3, `  listeners:
  - name: mqtt
    port: 1883
  - name: mqtts
    port: 8883
    tlsSecretName: tlsdemo-cert
  - name: wss
    port: 8084
    tlsSecretName: tlsdemo-cert
  service:
    type: LoadBalancer
`))
		Expect(err).NotTo(HaveOccurred(), out)
		run(kubectlBin, "wait", "-n", ns, "mqc/tlsdemo", "--for=condition=Ready", "--timeout=5m")
		Expect(run(kubectlBin, "get", "-n", ns, "mqc", "tlsdemo", "-o", "jsonpath={.status.clusterTLS}")).To(Equal("Enabled"))
		// Outside the cluster only TLS: the LoadBalancer carries 8883 and 8084; plain
		// MQTT is on the ClusterIP Service tlsdemo-internal.
		Expect(run(kubectlBin, "get", "svc", "-n", ns, "tlsdemo", "-o", `jsonpath={.spec.type} {.spec.ports[*].port}`)).To(Equal("LoadBalancer 8883 8084"))
		Expect(run(kubectlBin, "get", "svc", "-n", ns, "tlsdemo-internal", "-o", `jsonpath={.spec.type} {.spec.ports[*].port}`)).To(Equal("ClusterIP 1883"))

		// The CA from the Secret, as a client would take it.
		caPEM, err := base64.StdEncoding.DecodeString(run(kubectlBin, "get", "secret", "-n", ns, "tlsdemo-cert", "-o", `jsonpath={.data.ca\.crt}`))
		Expect(err).NotTo(HaveOccurred())
		pool := x509.NewCertPool()
		Expect(pool.AppendCertsFromPEM(caPEM)).To(BeTrue())
		svc := portForward(ns, "svc/tlsdemo", 8883)
		msgs := make(chan mqtt.Message, 10)
		opts := mqtt.NewClientOptions().AddBroker("ssl://" + svc).SetClientID("e2e-tls").SetAutoReconnect(false).
			SetConnectTimeout(10 * time.Second).SetTLSConfig(&tls.Config{RootCAs: pool, ServerName: "localhost"}).
			SetDefaultPublishHandler(func(_ mqtt.Client, m mqtt.Message) { msgs <- m })
		c := mqtt.NewClient(opts)
		Eventually(func() error {
			tok := c.Connect()
			if !tok.WaitTimeout(15 * time.Second) {
				return fmt.Errorf("connect timed out")
			}
			return tok.Error()
		}).WithTimeout(time.Minute).Should(Succeed(), "MQTT over TLS through the Service")
		DeferCleanup(func() { c.Disconnect(100) })
		await(c.Subscribe("e2e/tls", 1, nil))
		await(c.Publish("e2e/tls", 1, false, "over TLS"))
		Eventually(msgs).WithTimeout(30 * time.Second).Should(Receive(WithTransform(func(m mqtt.Message) string { return string(m.Payload()) }, Equal("over TLS"))))

		// Every node links to both others over TLS 1.3; its API is HTTPS with a
		// certificate from the cluster's CA that names the pod (what the operator checks).
		clusterCA, err := base64.StdEncoding.DecodeString(run(kubectlBin, "get", "secret", "-n", ns, "tlsdemo-cluster-tls", "-o", `jsonpath={.data.ca\.crt}`))
		Expect(err).NotTo(HaveOccurred())
		cas := x509.NewCertPool()
		Expect(cas.AppendCertsFromPEM(clusterCA)).To(BeTrue())
		for i := range 3 {
			api := portForward(ns, fmt.Sprintf("pod/tlsdemo-%d", i), 8080)
			hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
				TLSClientConfig: &tls.Config{RootCAs: cas, ServerName: fmt.Sprintf("tlsdemo-%d", i)}}}
			Eventually(func() (string, error) {
				resp, err := hc.Get("https://" + api + "/metrics")
				if err != nil {
					return "", err
				}
				defer func() { _ = resp.Body.Close() }()
				body, err := io.ReadAll(resp.Body)
				return string(body), err
			}).WithTimeout(time.Minute).Should(And(
				MatchRegexp(`mqttd_cluster_tls_handshakes_total\{version="1.3"\} [1-9]`),
				ContainSubstring("mqttd_cluster_peers 2"),
				ContainSubstring(`mqttd_cluster_tls_handshakes_total{version="1.2"} 0`)), "tlsdemo-%d", i)
		}
	})
})
