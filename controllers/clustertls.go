package controllers

import (
	"bytes"
	"context"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
	"github.com/mqtt-operator/mqtt-operator/controllers/resource"
)

// reconcileClusterTLS decides whether the pods link with mutual TLS (decideClusterTLS)
// and, when they do, keeps the cluster's CA Secret (made once, never regenerated) and
// the node certificates Secret (one certificate per pod, renewed before expiry). While
// nodes run with TLS, the CA they trust (the node certificates Secret's ca.crt; mqttd
// reads it only at start) is never replaced: a missing or different CA Secret is
// reported and nothing is issued from it.
func (r *MQTTClusterReconciler) reconcileClusterTLS(ctx context.Context, st *state) (bool, error) {
	mc := st.cluster
	// From the API server: the mode in force must not come from a stale cached
	// template (a mode switch and a scale-up in one edit).
	sts := &appsv1.StatefulSet{}
	if err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: mc.Namespace, Name: resource.StatefulSetName(mc)}, sts); apierrors.IsNotFound(err) {
		sts = nil
	} else if err != nil {
		return false, err
	}
	running, err := r.podsMayRun(ctx, mc, sts)
	if err != nil {
		return false, err
	}
	have := false
	switch {
	case sts != nil:
		have = resource.ClusterTLSInTemplate(&sts.Spec.Template)
	case running:
		// Pods without their StatefulSet (deleted with --cascade=orphan): theirs.
		if have, err = r.podsRunClusterTLS(ctx, mc); err != nil {
			return false, err
		}
	}
	d := decideClusterTLS(mc.Spec.Cluster.TLS, running, have)
	st.clusterTLS = d.on
	if d.refused {
		from, to := "without", "with"
		if d.on {
			from, to = "with", "without"
		}
		r.report(st, refusedChange, "ClusterTLSChangeRefused", fmt.Sprintf(
			"spec.cluster.tls asks for the nodes to link %s TLS, but they run %s it, and a node of one kind cannot link to the other: they keep running %s it. "+
				"To change it, scale the cluster to 0 (spec.replicas: 0), wait until no pod is left, then scale it back (docs/architecture.md, \"Cluster TLS\")",
			to, from, from))
	}
	if !d.on {
		return false, nil // the CA Secret, if any, is kept for a later switch back
	}
	inForce := running && have // nodes run with TLS and trust a CA already
	certs := &corev1.Secret{}
	if err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: mc.Namespace, Name: resource.ClusterTLSSecretName(mc)}, certs); apierrors.IsNotFound(err) {
		certs = nil
	} else if err != nil {
		return false, err
	}
	caSecret := &corev1.Secret{}
	err = r.APIReader.Get(ctx, client.ObjectKey{Namespace: mc.Namespace, Name: resource.ClusterCASecretName(mc)}, caSecret)
	switch {
	case apierrors.IsNotFound(err) && inForce:
		r.report(st, notInForce, "ClusterCAMissing", fmt.Sprintf(
			"the Secret %q with the cluster's CA is gone while the nodes run with TLS: the operator makes no new CA now (the nodes trust the old one until they restart, so they would refuse each other's new certificates). "+
				"Restore the Secret, or scale the cluster to 0 and back (a new CA is made then); the node certificates stay valid for at least 30 days",
			resource.ClusterCASecretName(mc)))
		return false, nil
	case apierrors.IsNotFound(err):
		obj, err := r.apply(ctx, mc, &resource.CASecretBuilder{Cluster: mc})
		if err != nil {
			return false, err
		}
		s, ok := obj.(*corev1.Secret)
		if !ok {
			return false, fmt.Errorf("applied a %T, want a Secret", obj)
		}
		caSecret = s
	case err != nil:
		return false, err
	}
	ca, err := resource.ParseCA(caSecret.Data)
	if err != nil {
		r.report(st, notInForce, "ClusterCAUnusable", fmt.Sprintf(
			"Secret %q: %v. The operator never replaces a CA Secret that holds data (nodes would refuse each other): restore it, or, with no pod running (scale to 0 first), delete it to get a new CA",
			resource.ClusterCASecretName(mc), err))
		return false, nil
	}
	if inForce && certs != nil && len(certs.Data[resource.CACertKey]) > 0 && !bytes.Equal(certs.Data[resource.CACertKey], ca.CertPEM) {
		r.report(st, refusedChange, "ClusterCAChangeRefused", fmt.Sprintf(
			"the Secret %q holds another CA than the one the running nodes trust (%q key %q): no certificate is issued from it, since the nodes would refuse each other's. "+
				"Put the CA back, or scale the cluster to 0 and back",
			resource.ClusterCASecretName(mc), resource.ClusterTLSSecretName(mc), resource.CACertKey))
		return false, nil
	}
	n := replicas(mc)
	if sts != nil && sts.Spec.Replicas != nil && *sts.Spec.Replicas > n {
		n = *sts.Spec.Replicas // a scale-down in progress: the leaving pods keep theirs
	}
	pods := make([]string, n)
	for k := range pods {
		pods[k] = resource.PodName(mc, k)
	}
	b := &resource.NodeCertsBuilder{Cluster: mc, CA: ca, Pods: pods}
	if _, err := r.apply(ctx, mc, b); err != nil {
		return false, err
	}
	st.renewAt = b.NextRenewal
	if len(b.Issued) > 0 {
		logf.FromContext(ctx).Info("issued cluster certificates", "pods", b.Issued, "nextRenewal", b.NextRenewal)
	}
	return false, nil
}

// podsRunClusterTLS reports whether a pod of the cluster mounts the node certificates.
func (r *MQTTClusterReconciler) podsRunClusterTLS(ctx context.Context, mc *v1alpha1.MQTTCluster) (bool, error) {
	pods := &corev1.PodList{}
	if err := r.APIReader.List(ctx, pods, client.InNamespace(mc.Namespace), client.MatchingLabels(resource.SelectorLabels(mc))); err != nil {
		return false, err
	}
	for i := range pods.Items {
		if resource.ClusterTLSInTemplate(&corev1.PodTemplateSpec{Spec: pods.Items[i].Spec}) {
			return true, nil
		}
	}
	return false, nil
}

// clusterTLSDecision is what the pods run, and whether the spec asks otherwise.
type clusterTLSDecision struct {
	on      bool // the pods link with mutual TLS
	refused bool // the spec asks for the other mode while pods run this one
}

// decideClusterTLS: a cluster with no pod that may run takes what the spec asks (TLS
// unless Disabled); a running one keeps what its pods run (have: a node with TLS
// cannot link to one without), and an explicit wish for the other mode is refused.
// Left unset, the mode is TLS for a new cluster and whatever a running one runs (one
// made before cluster TLS existed runs none): no refusal, so upgrading the operator
// does not make running clusters not Ready.
func decideClusterTLS(want v1alpha1.ClusterTLSMode, running, have bool) clusterTLSDecision {
	if !running {
		return clusterTLSDecision{on: want != v1alpha1.ClusterTLSDisabled}
	}
	asked := want != ""
	return clusterTLSDecision{on: have, refused: asked && have != (want == v1alpha1.ClusterTLSEnabled)}
}

// replicas is spec.replicas (the CRD defaults it to 3).
func replicas(mc *v1alpha1.MQTTCluster) int32 {
	if mc.Spec.Replicas == nil {
		return 3
	}
	return *mc.Spec.Replicas
}
