package resource

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
)

// Cluster TLS (spec.cluster.tls): the operator is the cluster's certificate
// authority. The CA lives in its own Secret, made once and never regenerated (a new
// CA would split the cluster: nodes refuse peers whose certificates it did not sign).
// Every pod gets a certificate for its stable names, kept in one Secret that all pods
// mount (a pod reads its own pair by its name; the CA key never reaches a pod).
const (
	// ClusterTLSDir is where the pods mount the node certificates Secret.
	ClusterTLSDir = "/etc/mqttd/cluster-tls"
	// ClusterTLSVolume is the pods' volume of it.
	ClusterTLSVolume = "cluster-tls"
	// CACertKey and CAKeyKey are the CA Secret's keys; CACertKey is also in the node
	// certificates Secret.
	CACertKey = "ca.crt"
	CAKeyKey  = "ca.key"

	// caValidity and nodeValidity are the lifetimes of what the operator issues; a
	// node certificate is renewed once less than nodeRenewBefore of it is left.
	caValidity      = 10 * 365 * 24 * time.Hour
	nodeValidity    = 90 * 24 * time.Hour
	nodeRenewBefore = 30 * 24 * time.Hour
)

// ClusterCASecretName is the Secret of the cluster's CA.
func ClusterCASecretName(mc *v1alpha1.MQTTCluster) string { return mc.Name + "-cluster-ca" }

// ClusterTLSSecretName is the Secret of the nodes' certificates.
func ClusterTLSSecretName(mc *v1alpha1.MQTTCluster) string { return mc.Name + "-cluster-tls" }

// NodeCertKey and NodeKeyKey are pod's entries in the node certificates Secret.
func NodeCertKey(pod string) string { return pod + ".crt" }

// NodeKeyKey is pod's private key entry in the node certificates Secret.
func NodeKeyKey(pod string) string { return pod + ".key" }

// ClusterTLSWanted reports whether the spec asks for TLS between the nodes.
func ClusterTLSWanted(mc *v1alpha1.MQTTCluster) bool {
	return mc.Spec.Cluster.TLS != v1alpha1.ClusterTLSDisabled
}

// CASecretBuilder builds the CA Secret: the CA is made when the Secret has none, and
// kept as it is otherwise.
type CASecretBuilder struct {
	Cluster *v1alpha1.MQTTCluster
	Now     func() time.Time // time.Now when nil
}

// Object implements Builder.
func (b *CASecretBuilder) Object() client.Object {
	return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: ClusterCASecretName(b.Cluster), Namespace: b.Cluster.Namespace}}
}

// Mutate implements Builder.
func (b *CASecretBuilder) Mutate(obj client.Object) error {
	s, err := as[*corev1.Secret](obj, "CASecretBuilder")
	if err != nil {
		return err
	}
	s.Labels = mergeLabels(s.Labels, Labels(b.Cluster))
	if s.CreationTimestamp.IsZero() {
		s.Type = corev1.SecretTypeOpaque
	}
	if len(s.Data[CACertKey]) > 0 || len(s.Data[CAKeyKey]) > 0 {
		return nil // never regenerated; ParseCA says whether it is usable
	}
	now := nowOf(b.Now)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	serial, err := serialNumber()
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{SerialNumber: serial,
		Subject:   pkix.Name{CommonName: fmt.Sprintf("mqtt-operator cluster CA %s/%s", b.Cluster.Namespace, b.Cluster.Name)},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(caValidity),
		IsCA: true, BasicConstraintsValid: true, MaxPathLenZero: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	if s.Data == nil {
		s.Data = map[string][]byte{}
	}
	s.Data[CACertKey] = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	s.Data[CAKeyKey] = pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
	return nil
}

// CA is the cluster's certificate authority.
type CA struct {
	Cert    *x509.Certificate
	Key     *ecdsa.PrivateKey
	CertPEM []byte
}

// ErrBadCA marks a CA Secret whose certificate or key cannot be used.
var ErrBadCA = errors.New("unusable cluster CA")

// ParseCA reads the CA Secret's data.
func ParseCA(data map[string][]byte) (*CA, error) {
	cb, _ := pem.Decode(data[CACertKey])
	kb, _ := pem.Decode(data[CAKeyKey])
	if cb == nil || kb == nil {
		return nil, fmt.Errorf("%w: %s or %s is not PEM", ErrBadCA, CACertKey, CAKeyKey)
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadCA, err)
	}
	key, err := x509.ParseECPrivateKey(kb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadCA, err)
	}
	if !cert.IsCA || !key.PublicKey.Equal(cert.PublicKey) {
		return nil, fmt.Errorf("%w: not a CA certificate with its key", ErrBadCA)
	}
	if time.Now().After(cert.NotAfter) {
		return nil, fmt.Errorf("%w: it expired at %s", ErrBadCA, cert.NotAfter.UTC().Format(time.RFC3339))
	}
	return &CA{Cert: cert, Key: key, CertPEM: data[CACertKey]}, nil
}

// NodeCertsBuilder builds the node certificates Secret: for each pod of Pods a
// certificate from CA for its names, kept while it is valid, from this CA, for those
// names and more than nodeRenewBefore from expiry, issued anew otherwise (the pods
// read the renewed files without a restart). Entries of other pods are kept.
type NodeCertsBuilder struct {
	Cluster *v1alpha1.MQTTCluster
	CA      *CA
	Pods    []string
	Now     func() time.Time // time.Now when nil
	// Issued lists the pods whose certificate the last Mutate issued.
	Issued []string
	// NextRenewal is when the earliest certificate kept or issued is due for renewal.
	NextRenewal time.Time
}

// Object implements Builder.
func (b *NodeCertsBuilder) Object() client.Object {
	return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: ClusterTLSSecretName(b.Cluster), Namespace: b.Cluster.Namespace}}
}

// Mutate implements Builder.
func (b *NodeCertsBuilder) Mutate(obj client.Object) error {
	s, err := as[*corev1.Secret](obj, "NodeCertsBuilder")
	if err != nil {
		return err
	}
	s.Labels = mergeLabels(s.Labels, Labels(b.Cluster))
	if s.CreationTimestamp.IsZero() {
		s.Type = corev1.SecretTypeOpaque
	}
	if s.Data == nil {
		s.Data = map[string][]byte{}
	}
	now := nowOf(b.Now)
	b.Issued, b.NextRenewal = nil, time.Time{}
	s.Data[CACertKey] = b.CA.CertPEM
	for _, pod := range b.Pods {
		names := NodeNames(b.Cluster, pod)
		cert, ok := b.usable(s.Data[NodeCertKey(pod)], s.Data[NodeKeyKey(pod)], names, now)
		if !ok {
			certPEM, keyPEM, c, err := b.issue(pod, names, now)
			if err != nil {
				return fmt.Errorf("issuing the cluster certificate of %s: %w", pod, err)
			}
			s.Data[NodeCertKey(pod)], s.Data[NodeKeyKey(pod)] = certPEM, keyPEM
			b.Issued = append(b.Issued, pod)
			cert = c
		}
		if due := cert.NotAfter.Add(-nodeRenewBefore); b.NextRenewal.IsZero() || due.Before(b.NextRenewal) {
			b.NextRenewal = due
		}
	}
	return nil
}

// NodeNames are the DNS names of pod's certificate: the pod name (its node name) and
// its stable names under the headless Service (what it advertises).
func NodeNames(mc *v1alpha1.MQTTCluster, pod string) []string {
	svc := fmt.Sprintf("%s.%s.%s.svc", pod, HeadlessServiceName(mc), mc.Namespace)
	return []string{pod, svc, svc + ".cluster.local"}
}

// usable reports whether a pair in the Secret can stay: it loads, the key is the
// certificate's, the CA signed it, it carries names and is not due for renewal.
func (b *NodeCertsBuilder) usable(certPEM, keyPEM []byte, names []string, now time.Time) (*x509.Certificate, bool) {
	cb, _ := pem.Decode(certPEM)
	kb, _ := pem.Decode(keyPEM)
	if cb == nil || kb == nil {
		return nil, false
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, false
	}
	key, err := x509.ParseECPrivateKey(kb.Bytes)
	if err != nil || !key.PublicKey.Equal(cert.PublicKey) || cert.CheckSignatureFrom(b.CA.Cert) != nil {
		return nil, false
	}
	due := cert.NotAfter.Add(-nodeRenewBefore)
	if !cert.NotAfter.Before(b.CA.Cert.NotAfter) {
		due = cert.NotAfter // capped at the CA's end: a new one could not last longer
	}
	if now.Before(cert.NotBefore) || now.After(due) {
		return nil, false
	}
	if len(cert.DNSNames) != len(names) {
		return nil, false
	}
	for i, n := range names {
		if cert.DNSNames[i] != n {
			return nil, false
		}
	}
	return cert, true
}

func (b *NodeCertsBuilder) issue(pod string, names []string, now time.Time) (certPEM, keyPEM []byte, cert *x509.Certificate, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, nil, err
	}
	serial, err := serialNumber()
	if err != nil {
		return nil, nil, nil, err
	}
	notAfter := now.Add(nodeValidity)
	if notAfter.After(b.CA.Cert.NotAfter) {
		notAfter = b.CA.Cert.NotAfter
	}
	// An hour back: a peer whose clock is behind still takes a fresh certificate.
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: pod}, DNSNames: names,
		NotBefore: now.Add(-time.Hour), NotAfter: notAfter, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, b.CA.Cert, &key.PublicKey, b.CA.Key)
	if err != nil {
		return nil, nil, nil, err
	}
	if cert, err = x509.ParseCertificate(der); err != nil {
		return nil, nil, nil, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), cert, nil
}

func serialNumber() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

func nowOf(f func() time.Time) time.Time {
	if f == nil {
		return time.Now()
	}
	return f()
}
