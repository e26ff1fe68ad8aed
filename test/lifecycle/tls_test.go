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
	"math/big"
	"net"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
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
		before := e.podIdentities(ctx, 1)

		By("renewing the Secret")
		s := &corev1.Secret{}
		Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: e.ns, Name: "broker-tls"}, s)).To(Succeed())
		s.Data = ca.secretData(200)
		Expect(k8sClient.Update(ctx, s)).To(Succeed())
		Eventually(ctx, func() (int64, error) { return servedSerial(addr, ca.pool) }).Should(Equal(int64(200)))
		Expect(e.podIdentities(ctx, 1)).To(Equal(before), "pods, restart counts and processes after the renewal")
		e.expectReadyStatus(ctx, 1)
	}, SpecTimeout(4*time.Minute))
})

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
