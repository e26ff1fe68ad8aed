package controllers

import (
	"context"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
	"github.com/mqtt-operator/mqtt-operator/controllers/resource"
)

// reconcileStatefulSet writes the broker StatefulSet. A storage size change cannot be
// applied (volume claim templates are immutable): it is reported and the volumes keep
// their size.
func (r *MQTTClusterReconciler) reconcileStatefulSet(ctx context.Context, st *state) (bool, error) {
	mc := st.cluster
	b := &resource.StatefulSetBuilder{Cluster: mc, ConfigHash: resource.ConfigHash(st.config), DefaultImage: r.DefaultImage,
		NodeSecret: resource.NodeSecretName(mc), ClusterTLS: st.clusterTLS}
	if st.nodeSecrets != nil {
		b.APITokenHash = resource.TokenHash(st.fingerprintKey, st.nodeSecrets.Token)
		b.CookieFingerprint = resource.Fingerprint(st.fingerprintKey, st.nodeSecrets.Cookie)
	}
	current := &appsv1.StatefulSet{}
	err := r.getChild(ctx, client.ObjectKeyFromObject(b.Object()), current)
	if err == nil {
		if reason, msg, ok := storageUnchanged(mc, current); !ok {
			r.report(st, unsupportedChange, reason, msg)
		}
		b.Replicas = stsReplicas(mc, current) // a scale-down shrinks it one node at a time
	} else if client.IgnoreNotFound(err) != nil {
		return false, err
	}
	obj, err := r.apply(ctx, mc, b)
	if err != nil {
		return false, err
	}
	written, ok := obj.(*appsv1.StatefulSet)
	if !ok {
		return false, fmt.Errorf("applied a %T, want a StatefulSet", obj)
	}
	st.sts = written
	return false, nil
}

// storageUnchanged is the check that the volume size in the spec is the one the
// StatefulSet was created with.
func storageUnchanged(mc *v1alpha1.MQTTCluster, sts *appsv1.StatefulSet) (reason, message string, ok bool) {
	want := resource.StorageSize(mc)
	for _, c := range sts.Spec.VolumeClaimTemplates {
		if c.Name != resource.DataVolume {
			continue
		}
		have := c.Spec.Resources.Requests[corev1.ResourceStorage]
		if have.Cmp(want) != 0 {
			return "StorageResizeUnsupported", fmt.Sprintf(
				"spec.storage.size changed from %s to %s: volumes cannot be resized by the operator yet; they keep %s",
				have.String(), want.String(), have.String()), false
		}
	}
	return "", "", true
}
