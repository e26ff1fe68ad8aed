package controllers

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/mqtt-operator/mqtt-operator/controllers/resource"
)

// reconcileCertificate requests spec.tls.issuerRef's certificate from cert-manager and
// waits for its Secret. cert-manager is optional: without its Certificate CRD the
// cluster is Degraded (CertManagerNotInstalled) and not Ready. While the Secret is
// missing the cluster is Progressing (WaitingForCertificate) and not Ready. Either way
// the pipeline stops here: the StatefulSet is not written (a pod given a template
// that mounts the missing Secret would never start) and no pod is rolled or added;
// the pods that run keep running.
func (r *MQTTClusterReconciler) reconcileCertificate(ctx context.Context, st *state) (bool, error) {
	mc := st.cluster
	if !resource.UsesIssuedCertificate(mc) {
		return false, nil
	}
	ref := resource.IssuerRefOf(mc)
	if _, err := r.RESTMapper().RESTMapping(resource.CertificateGVK.GroupKind(), resource.CertificateGVK.Version); err != nil {
		if !meta.IsNoMatchError(err) {
			return false, err
		}
		r.report(st, notInForce, "CertManagerNotInstalled", fmt.Sprintf(
			"spec.tls.issuerRef names the %s %q, but cert-manager is not installed (no %s in the API): install cert-manager, or give each TLS listener a tlsSecretName",
			ref.Kind, ref.Name, resource.CertificateGVK.GroupKind()))
		st.requeue = time.Minute // cert-manager may be installed later: no event says so
		return true, nil
	}
	if _, err := r.apply(ctx, mc, &resource.CertificateBuilder{Cluster: mc}); err != nil {
		return false, err
	}
	s := &corev1.Secret{}
	err := r.getSecret(ctx, client.ObjectKey{Namespace: mc.Namespace, Name: resource.CertificateName(mc)}, s)
	if err != nil && !apierrors.IsNotFound(err) {
		return false, err
	}
	if err == nil && len(s.Data[corev1.TLSCertKey]) > 0 && len(s.Data[corev1.TLSPrivateKeyKey]) > 0 {
		r.checkTLSSecret(st, secretRef{issuedField, s.Name, nil}, s)
		return false, nil
	}
	r.report(st, waitingOutside, "WaitingForCertificate", fmt.Sprintf(
		"waiting for cert-manager to issue the Certificate %q (issuer %s %q) into the Secret %q",
		resource.CertificateName(mc), ref.Kind, ref.Name, resource.CertificateName(mc)))
	return true, nil
}
