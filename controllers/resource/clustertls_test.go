package resource

import (
	"crypto/x509"
	"encoding/pem"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
)

func tlsCluster() *v1alpha1.MQTTCluster {
	return &v1alpha1.MQTTCluster{ObjectMeta: metav1.ObjectMeta{Name: "mq", Namespace: "ns"}}
}

func newCA(t *testing.T, now time.Time) (*CA, *corev1.Secret) {
	t.Helper()
	s := &corev1.Secret{}
	if err := (&CASecretBuilder{Cluster: tlsCluster(), Now: func() time.Time { return now }}).Mutate(s); err != nil {
		t.Fatal(err)
	}
	ca, err := ParseCA(s.Data)
	if err != nil {
		t.Fatal(err)
	}
	return ca, s
}

// TestCASecretNeverRegenerated: the CA is made once; a Secret that holds one, even an
// unusable one, is left as it is (ParseCA reports it).
func TestCASecretNeverRegenerated(t *testing.T) {
	_, s := newCA(t, time.Now())
	before := slices.Clone(s.Data[CACertKey])
	s.CreationTimestamp = metav1.Now()
	if err := (&CASecretBuilder{Cluster: tlsCluster()}).Mutate(s); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(before, s.Data[CACertKey]) {
		t.Fatal("the CA was regenerated")
	}
	s.Data[CAKeyKey] = []byte("garbage")
	if err := (&CASecretBuilder{Cluster: tlsCluster()}).Mutate(s); err != nil {
		t.Fatal(err)
	}
	if string(s.Data[CAKeyKey]) != "garbage" {
		t.Fatal("a broken CA Secret was replaced: the running nodes' certificates would no longer verify")
	}
	if _, err := ParseCA(s.Data); err == nil {
		t.Fatal("ParseCA accepted a broken key")
	}
}

func nodeCert(t *testing.T, s *corev1.Secret, pod string) *x509.Certificate {
	t.Helper()
	b, _ := pem.Decode(s.Data[NodeCertKey(pod)])
	if b == nil {
		t.Fatalf("no certificate for %s", pod)
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestNodeCerts: each pod gets a certificate from the CA for its names, for server and
// client use; certificates are kept until 30 days before expiry, then renewed; a pod
// added later gets one without touching the others; one from another CA or for other
// names is replaced.
func TestNodeCerts(t *testing.T) {
	now := time.Now()
	ca, _ := newCA(t, now)
	mc := tlsCluster()
	s := &corev1.Secret{}
	b := &NodeCertsBuilder{Cluster: mc, CA: ca, Pods: []string{"mq-0", "mq-1"}, Now: func() time.Time { return now }}
	if err := b.Mutate(s); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(b.Issued, []string{"mq-0", "mq-1"}) || string(s.Data[CACertKey]) != string(ca.CertPEM) {
		t.Fatalf("issued %v", b.Issued)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	c0 := nodeCert(t, s, "mq-0")
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if _, err := c0.Verify(x509.VerifyOptions{Roots: pool, DNSName: "mq-0.mq-headless.ns.svc", KeyUsages: []x509.ExtKeyUsage{usage}, CurrentTime: now}); err != nil {
			t.Fatalf("mq-0's certificate for usage %v: %v", usage, err)
		}
	}
	if c0.Subject.CommonName != "mq-0" || !slices.Contains(c0.DNSNames, "mq-0") {
		t.Fatalf("mq-0's certificate names %q %v", c0.Subject.CommonName, c0.DNSNames)
	}

	// A day later, with a third pod: only it is issued.
	b.Pods, b.Now = []string{"mq-0", "mq-1", "mq-2"}, func() time.Time { return now.Add(24 * time.Hour) }
	if err := b.Mutate(s); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(b.Issued, []string{"mq-2"}) || nodeCert(t, s, "mq-0").SerialNumber.Cmp(c0.SerialNumber) != 0 {
		t.Fatalf("a day later: issued %v", b.Issued)
	}
	if want := c0.NotAfter.Add(-nodeRenewBefore); !b.NextRenewal.Equal(want) {
		t.Fatalf("next renewal %v, want %v", b.NextRenewal, want)
	}

	// 61 days later every certificate is within 30 days of expiry: all renewed.
	b.Now = func() time.Time { return now.Add(61 * 24 * time.Hour) }
	if err := b.Mutate(s); err != nil {
		t.Fatal(err)
	}
	if len(b.Issued) != 3 || nodeCert(t, s, "mq-0").SerialNumber.Cmp(c0.SerialNumber) == 0 {
		t.Fatalf("61 days later: issued %v", b.Issued)
	}

	// A certificate another CA signed, or for the wrong names, is replaced.
	other, _ := newCA(t, now)
	ob := &NodeCertsBuilder{Cluster: mc, CA: other, Pods: []string{"mq-1"}, Now: b.Now}
	if err := ob.Mutate(s); err != nil || !slices.Equal(ob.Issued, []string{"mq-1"}) {
		t.Fatalf("under another CA: issued %v, %v", ob.Issued, err)
	}
	s.Data[NodeCertKey("mq-2")], s.Data[NodeKeyKey("mq-2")] = s.Data[NodeCertKey("mq-0")], s.Data[NodeKeyKey("mq-0")]
	b.Pods = []string{"mq-2"}
	if err := b.Mutate(s); err != nil || !slices.Equal(b.Issued, []string{"mq-2"}) {
		t.Fatalf("mq-0's pair under mq-2: issued %v, %v", b.Issued, err)
	}
}

// TestClusterTLSInStatefulSet: with ClusterTLS the pods mount the node certificates
// and point mqttd at their own pair; without, neither.
func TestClusterTLSInStatefulSet(t *testing.T) {
	for _, on := range []bool{true, false} {
		b := &StatefulSetBuilder{Cluster: tlsCluster(), ClusterTLS: on, DefaultImage: "mqttd:test"}
		tmpl := corev1.PodTemplateSpec{}
		tmpl.Spec.Volumes = b.volumes()
		c := b.container()
		tmpl.Spec.Containers = []corev1.Container{c}
		if ClusterTLSInTemplate(&tmpl) != on {
			t.Fatalf("ClusterTLS %v: template says %v", on, !on)
		}
		env := map[string]string{}
		for _, e := range c.Env {
			env[e.Name] = e.Value
		}
		if got := env["MQTTD_CLUSTER_TLS_CERT_FILE"]; (got == ClusterTLSDir+"/$(POD_NAME).crt") != on {
			t.Fatalf("ClusterTLS %v: MQTTD_CLUSTER_TLS_CERT_FILE %q", on, got)
		}
		if on && (env["MQTTD_CLUSTER_TLS_KEY_FILE"] != ClusterTLSDir+"/$(POD_NAME).key" || env["MQTTD_CLUSTER_TLS_CA_FILE"] != ClusterTLSDir+"/ca.crt" ||
			env["MQTTD_API_TLS_CERT_FILE"] != ClusterTLSDir+"/$(POD_NAME).crt" || env["MQTTD_API_TLS_KEY_FILE"] != ClusterTLSDir+"/$(POD_NAME).key") {
			t.Fatalf("env %v", env)
		}
		want := corev1.URISchemeHTTP
		if on {
			want = corev1.URISchemeHTTPS
		}
		for _, p := range []*corev1.Probe{c.ReadinessProbe, c.LivenessProbe, c.StartupProbe} {
			if p.HTTPGet.Scheme != want {
				t.Fatalf("ClusterTLS %v: probe scheme %s, want %s", on, p.HTTPGet.Scheme, want)
			}
		}
	}
}
