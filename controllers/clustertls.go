package controllers

import (
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
// the node certificates Secret (one certificate per pod, renewed before expiry).
func (r *MQTTClusterReconciler) reconcileClusterTLS(ctx context.Context, st *state) (bool, error) {
	mc := st.cluster
	sts := &appsv1.StatefulSet{}
	if err := r.getChild(ctx, client.ObjectKey{Namespace: mc.Namespace, Name: resource.StatefulSetName(mc)}, sts); apierrors.IsNotFound(err) {
		sts = nil
	} else if err != nil {
		return false, err
	}
	running, err := r.podsMayRun(ctx, mc, sts)
	if err != nil {
		return false, err
	}
	d := decideClusterTLS(resource.ClusterTLSWanted(mc), sts, running)
	st.clusterTLS = d.on
	if d.refused {
		have, want := "off", "on"
		if d.on {
			have, want = "on", "off"
		}
		r.report(st, refusedChange, "ClusterTLSChangeRefused", fmt.Sprintf(
			"spec.cluster.tls asks for TLS between the nodes %s, but the running nodes link with it %s, and a node of one kind cannot link to the other: the pods keep it %s. "+
				"To change it, scale the cluster to 0 (spec.replicas: 0), wait until no pod is left, then scale it back (docs/architecture.md, \"Cluster TLS\")",
			want, have, have))
	}
	if !d.on {
		return false, nil // the CA Secret, if any, is kept for a later switch back
	}
	obj, err := r.apply(ctx, mc, &resource.CASecretBuilder{Cluster: mc})
	if err != nil {
		return false, err
	}
	caSecret, ok := obj.(*corev1.Secret)
	if !ok {
		return false, fmt.Errorf("applied a %T, want a Secret", obj)
	}
	ca, err := resource.ParseCA(caSecret.Data)
	if err != nil {
		r.report(st, notInForce, "ClusterCAUnusable", fmt.Sprintf(
			"Secret %q: %v. The operator never makes a new CA for a running cluster (nodes would refuse each other); restore the Secret, or scale to 0 and delete it to get a new one",
			resource.ClusterCASecretName(mc), err))
		return true, nil
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
	if len(b.Issued) > 0 {
		logf.FromContext(ctx).Info("issued cluster certificates", "pods", b.Issued, "nextRenewal", b.NextRenewal)
	}
	return false, nil
}

// clusterTLSDecision is what the pods run, and whether the spec asks otherwise.
type clusterTLSDecision struct {
	on      bool // the pods link with mutual TLS
	refused bool // the spec asks for the other mode while pods run this one
}

// decideClusterTLS: a cluster with no pod that may run takes what the spec asks; a
// running one keeps what its StatefulSet gives the pods (a node with TLS cannot link
// to one without), and a different wish is refused. A StatefulSet made before cluster
// TLS existed gives none.
func decideClusterTLS(want bool, sts *appsv1.StatefulSet, podsMayRun bool) clusterTLSDecision {
	if sts == nil || !podsMayRun {
		return clusterTLSDecision{on: want}
	}
	have := resource.ClusterTLSInTemplate(&sts.Spec.Template)
	return clusterTLSDecision{on: have, refused: have != want}
}

// replicas is spec.replicas (the CRD defaults it to 3).
func replicas(mc *v1alpha1.MQTTCluster) int32 {
	if mc.Spec.Replicas == nil {
		return 3
	}
	return *mc.Spec.Replicas
}
