package resource

import (
	"fmt"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
)

// CertificateGVK is cert-manager's Certificate. cert-manager is optional: the operator
// uses it only for spec.tls.issuerRef, through unstructured objects, so it neither
// imports cert-manager's API nor needs its CRDs installed otherwise.
var CertificateGVK = schema.GroupVersionKind{Group: "cert-manager.io", Version: "v1", Kind: "Certificate"}

// CertificateName is the cert-manager Certificate of spec.tls.issuerRef, and its
// Secret's name.
func CertificateName(mc *v1alpha1.MQTTCluster) string { return mc.Name + "-listener-tls" }

// IssuerRefOf is spec.tls.issuerRef (nil when none).
func IssuerRefOf(mc *v1alpha1.MQTTCluster) *v1alpha1.IssuerRef {
	if mc.Spec.TLS == nil {
		return nil
	}
	return mc.Spec.TLS.IssuerRef
}

// ListenerSecret is the Secret of a TLS listener's certificate: its tlsSecretName,
// else the Secret of spec.tls.issuerRef's Certificate ("" for a plain listener or a
// TLS one with neither, which the CRD refuses).
func ListenerSecret(mc *v1alpha1.MQTTCluster, l v1alpha1.Listener) string {
	switch {
	case !isTLS(l.Name):
		return ""
	case l.TLSSecretName != "":
		return l.TLSSecretName
	case IssuerRefOf(mc) != nil:
		return CertificateName(mc)
	}
	return ""
}

// UsesIssuedCertificate reports whether a TLS listener takes spec.tls.issuerRef's
// certificate.
func UsesIssuedCertificate(mc *v1alpha1.MQTTCluster) bool {
	for _, l := range mc.Spec.Listeners {
		if isTLS(l.Name) && l.TLSSecretName == "" && IssuerRefOf(mc) != nil {
			return true
		}
	}
	return false
}

// CertificateDNSNames are the names of the issued certificate: the client Service's,
// the internal Service's, and every pod's under the headless Service.
func CertificateDNSNames(mc *v1alpha1.MQTTCluster) []string {
	var out []string
	for _, svc := range []string{ClientServiceName(mc), InternalServiceName(mc)} {
		out = append(out, svc, fmt.Sprintf("%s.%s", svc, mc.Namespace), fmt.Sprintf("%s.%s.svc", svc, mc.Namespace),
			fmt.Sprintf("%s.%s.svc.cluster.local", svc, mc.Namespace))
	}
	return append(out, fmt.Sprintf("*.%s.%s.svc", HeadlessServiceName(mc), mc.Namespace),
		fmt.Sprintf("*.%s.%s.svc.cluster.local", HeadlessServiceName(mc), mc.Namespace))
}

// CertificateBuilder builds the cert-manager Certificate of spec.tls.issuerRef.
type CertificateBuilder struct {
	Cluster *v1alpha1.MQTTCluster
}

// Object implements Builder.
func (b *CertificateBuilder) Object() client.Object {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(CertificateGVK)
	u.SetName(CertificateName(b.Cluster))
	u.SetNamespace(b.Cluster.Namespace)
	return u
}

// Mutate implements Builder: the spec the operator owns (fields cert-manager adds,
// such as status, are left alone).
func (b *CertificateBuilder) Mutate(obj client.Object) error {
	u, err := as[*unstructured.Unstructured](obj, "CertificateBuilder")
	if err != nil {
		return err
	}
	mc := b.Cluster
	u.SetLabels(mergeLabels(u.GetLabels(), Labels(mc)))
	ref := IssuerRefOf(mc)
	if ref == nil {
		return fmt.Errorf("no spec.tls.issuerRef")
	}
	kind, group := ref.Kind, ref.Group
	if kind == "" {
		kind = "Issuer"
	}
	if group == "" {
		group = "cert-manager.io"
	}
	names := make([]any, 0)
	for _, n := range CertificateDNSNames(mc) {
		names = append(names, n)
	}
	spec := map[string]any{
		"secretName": CertificateName(mc),
		"dnsNames":   names, // no common name: names over 64 bytes would be refused
		"usages":     []any{"server auth", "digital signature"},
		"privateKey": map[string]any{"algorithm": "ECDSA", "size": int64(256), "rotationPolicy": "Always"},
		"issuerRef":  map[string]any{"name": ref.Name, "kind": kind, "group": group},
	}
	return unstructured.SetNestedMap(u.Object, spec, "spec")
}
