package lifecycle_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
	"github.com/mqtt-operator/mqtt-operator/controllers/resource"
)

// serverCA signs the brokers' listener certificates in these specs.
type serverCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newServerCA() *serverCA {
	GinkgoHelper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	Expect(err).NotTo(HaveOccurred())
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "lifecycle test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	Expect(err).NotTo(HaveOccurred())
	cert, err := x509.ParseCertificate(der)
	Expect(err).NotTo(HaveOccurred())
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &serverCA{cert: cert, key: key, pool: pool}
}

// secretData is a kubernetes.io/tls Secret's data: a certificate for 127.0.0.1 with
// serial, and its key.
func (ca *serverCA) secretData(serial int64) map[string][]byte {
	GinkgoHelper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	Expect(err).NotTo(HaveOccurred())
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "broker"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	Expect(err).NotTo(HaveOccurred())
	keyDER, err := x509.MarshalECPrivateKey(key)
	Expect(err).NotTo(HaveOccurred())
	return map[string][]byte{corev1.TLSCertKey: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		corev1.TLSPrivateKeyKey: pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})}
}

// servedSerial is the serial of the certificate a TLS handshake with addr sees,
// verified against pool.
func servedSerial(addr string, pool *x509.CertPool) (int64, error) {
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second}, Config: &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return 0, err
	}
	defer func() { _ = c.Close() }()
	return c.(*tls.Conn).ConnectionState().PeerCertificates[0].SerialNumber.Int64(), nil
}

var _ = Describe("TLS listeners with real brokers", func() {
	It("serves mqtts from the listener's Secret, Ready, and takes a renewed Secret without restarting a pod", func(ctx SpecContext) {
		ca := newServerCA()
		e := newEnv(ctx, 1, func(mc *v1alpha1.MQTTCluster) {
			mc.Spec.Listeners = []v1alpha1.Listener{{Name: v1alpha1.ListenerMQTT, Port: 1883},
				{Name: v1alpha1.ListenerMQTTS, Port: 8883, TLSSecretName: "broker-tls"}}
		}, withTLSSecret("broker-tls", ca.secretData(100)))
		e.expectMembers(ctx, 1)
		e.expectReadyStatus(ctx, 1)
		var addr string
		Eventually(ctx, func() string { addr = e.sim.mqttsAddr(0); return addr }).ShouldNot(BeEmpty())
		Expect(servedSerial(addr, ca.pool)).To(Equal(int64(100)))
		// A real client over TLS: paho.mqtt.golang publishes and gets its message back.
		got := make(chan string, 1)
		c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker("ssl://" + addr).SetClientID("tls-client").
			SetTLSConfig(&tls.Config{RootCAs: ca.pool, ServerName: "127.0.0.1"}).SetAutoReconnect(false))
		tok := c.Connect()
		Expect(tok.WaitTimeout(10*time.Second) && tok.Error() == nil).To(BeTrue(), "CONNECT over mqtts: %v", tok.Error())
		defer c.Disconnect(100)
		tok = c.Subscribe("tls/x", 1, func(_ mqtt.Client, m mqtt.Message) { got <- string(m.Payload()) })
		Expect(tok.WaitTimeout(10 * time.Second)).To(BeTrue())
		tok = c.Publish("tls/x", 1, false, "over-tls")
		Expect(tok.WaitTimeout(10*time.Second) && tok.Error() == nil).To(BeTrue())
		Eventually(ctx, got).Should(Receive(Equal("over-tls")))
		before := e.podIdentities(ctx, 1)

		By("renewing the Secret")
		s := &corev1.Secret{}
		Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: e.ns, Name: "broker-tls"}, s)).To(Succeed())
		s.Data = ca.secretData(200)
		Expect(k8sClient.Update(ctx, s)).To(Succeed())
		Eventually(ctx, func() (int64, error) { return servedSerial(addr, ca.pool) }).Should(Equal(int64(200)))
		Expect(c.IsConnectionOpen()).To(BeTrue(), "the client connected before the renewal is still connected")
		Expect(e.podIdentities(ctx, 1)).To(Equal(before), "pods, restart counts and processes after the renewal")
		e.expectReadyStatus(ctx, 1)
	}, SpecTimeout(4*time.Minute))
})

var _ = Describe("cluster TLS with real brokers", func() {
	It("forms a new cluster over mutual TLS 1.3, keeps its CA, and renews a pod's certificate without a restart", func(ctx SpecContext) {
		e := newEnv(ctx, 3, nil)
		e.expectMembers(ctx, 3)
		e.expectReadyStatus(ctx, 3)
		mc := &v1alpha1.MQTTCluster{}
		Expect(k8sClient.Get(ctx, e.key(), mc)).To(Succeed())
		Expect(mc.Status.ClusterTLS).To(Equal(v1alpha1.ClusterTLSEnabled))
		for ord := range 3 {
			Eventually(ctx, func() string { return nodeMetrics(e, ord) }).Should(And(
				MatchRegexp(`mqttd_cluster_tls_handshakes_total\{version="1.3"\} [1-9]`),
				ContainSubstring(`mqttd_cluster_tls_handshakes_total{version="1.2"} 0`),
				ContainSubstring("mqttd_cluster_peers 2")), "node %d links over TLS 1.3 to both others", ord)
		}
		caKey := client.ObjectKey{Namespace: e.ns, Name: resource.ClusterCASecretName(mc)}
		ca := &corev1.Secret{}
		Expect(k8sClient.Get(ctx, caKey, ca)).To(Succeed())
		before := e.podIdentities(ctx, 3)

		By("renewing pod 1's certificate (its entry dropped: the operator issues a new one)")
		certsKey := client.ObjectKey{Namespace: e.ns, Name: resource.ClusterTLSSecretName(mc)}
		certs := &corev1.Secret{}
		Expect(k8sClient.Get(ctx, certsKey, certs)).To(Succeed())
		old := certs.Data[resource.NodeCertKey(podNames(3)[1])]
		delete(certs.Data, resource.NodeCertKey(podNames(3)[1]))
		Expect(k8sClient.Update(ctx, certs)).To(Succeed())
		Eventually(ctx, func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, certsKey, certs)).To(Succeed())
			g.Expect(certs.Data[resource.NodeCertKey(podNames(3)[1])]).NotTo(BeEmpty())
			g.Expect(certs.Data[resource.NodeCertKey(podNames(3)[1])]).NotTo(Equal(old))
		}).Should(Succeed())
		// A new connection to node 1's cluster port is served the renewed certificate
		// (mqttd reads the files again on a handshake after they change); the links
		// already up stay up.
		renewed, _ := pem.Decode(certs.Data[resource.NodeCertKey(podNames(3)[1])])
		Expect(renewed).NotTo(BeNil())
		Eventually(ctx, func() ([]byte, error) { return servedCert(e.sim.clusterAddr(1)) }).Should(Equal(renewed.Bytes))
		Expect(nodeMetrics(e, 1)).To(MatchRegexp(`mqttd_tls_certificate_reloads_total\{listener="cluster"\} [1-9]`), "node 1 read its renewed certificate")
		e.expectMembers(ctx, 3)
		e.expectReadyStatus(ctx, 3)
		Expect(e.podIdentities(ctx, 3)).To(Equal(before), "pods, restart counts and processes after the renewal")
		fresh := &corev1.Secret{}
		Expect(k8sClient.Get(ctx, caKey, fresh)).To(Succeed())
		Expect(fresh.Data).To(Equal(ca.Data), "the CA is never regenerated")
	}, SpecTimeout(5*time.Minute))
})

// servedCert is the certificate (DER) a TLS server at addr presents; the handshake
// itself may then fail (the cluster port wants a client certificate).
func servedCert(addr string) ([]byte, error) {
	var got []byte
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second}, Config: &tls.Config{
		InsecureSkipVerify: true, // only looking at what is presented
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) > 0 {
				got = cs.PeerCertificates[0].Raw
			}
			return nil
		}}}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", addr)
	if c != nil {
		_ = c.Close()
	}
	if got != nil {
		return got, nil
	}
	return nil, err
}

// nodeMetrics is the /metrics text of pod ordinal ord's broker ("" while it has none).
func nodeMetrics(e *env, ord int) string {
	api, _, _ := e.sim.broker(ord)
	if api == "" {
		return ""
	}
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + api + "/metrics")
	if err != nil {
		return ""
	}
	defer func() { _ = resp.Body.Close() }()
	body, _ := io.ReadAll(resp.Body)
	return string(body)
}

// withTLSSecret creates the kubernetes.io/tls Secret name in the spec's namespace
// before its cluster.
func withTLSSecret(name string, data map[string][]byte) envOption {
	return func(e *env) {
		GinkgoHelper()
		Expect(k8sClient.Create(context.Background(), &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: e.ns, Name: name}, Type: corev1.SecretTypeTLS, Data: data,
		})).To(Succeed())
	}
}
