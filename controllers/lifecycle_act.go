package controllers

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
	"github.com/mqtt-operator/mqtt-operator/broker/apiv1"
	"github.com/mqtt-operator/mqtt-operator/controllers/brokerclient"
)

// act carries out one decision: the only lifecycle code that calls a broker's API or
// writes to Kubernetes. It reports whether something was done (or is in progress).
func (r *MQTTClusterReconciler) act(ctx context.Context, st *state, lc *lifecycle, a action) (bool, error) {
	mc, b := st.cluster, a.target
	switch a.kind {
	case actNone:
		return false, nil
	case actWait:
		return true, nil
	case actFail:
		return false, a.err
	case actAdoptCluster:
		lc.clusterID = a.clusterID
		return true, nil
	case actResetStore:
		rec := &v1alpha1.StoreReset{Node: b.name, Time: metav1.NewTime(r.now())}
		if err := r.recordReset(ctx, st, rec); err != nil {
			return false, err
		}
		lc.lastReset = rec
		if _, err := b.api.Reset(ctx); err != nil {
			return false, fmt.Errorf("resetting the stale store of %s: %w", b.name, err)
		}
		lc.resets++
		r.event(mc, corev1.EventTypeWarning, "StaleStoreReset", "reset the stale store of %s (%s); it joins again", b.name, a.why)
		return true, nil
	case actWipeVolume:
		// mqttd exits with 3 when it cannot open its store: the volume goes, the
		// StatefulSet recreates pod and volume, the node joins again empty.
		rec := &v1alpha1.StoreReset{Node: b.name, Time: metav1.NewTime(r.now()), VolumeDeleted: true}
		if err := r.recordReset(ctx, st, rec); err != nil {
			return false, err
		}
		lc.lastReset = rec
		claim := &corev1.PersistentVolumeClaim{}
		claim.Name, claim.Namespace = a.claim, mc.Namespace
		if err := r.Delete(ctx, claim); client.IgnoreNotFound(err) != nil {
			return false, err
		}
		lc.resets++
		if err := r.Delete(ctx, b.pod); client.IgnoreNotFound(err) != nil {
			return false, err // the next reconcile finishes it (finishWipe)
		}
		r.event(mc, corev1.EventTypeWarning, "StaleStoreReset", "%s %s: deleted its volume %s and pod", b.name, a.why, a.claim)
		return true, nil
	case actFinishWipe:
		if err := r.Delete(ctx, b.pod); client.IgnoreNotFound(err) != nil {
			return false, err
		}
		r.event(mc, corev1.EventTypeWarning, "StaleStoreReset", "%s: deleted its pod, whose volume is being deleted", b.name)
		return true, nil
	case actBootstrap:
		if a.why != "" { // every node lost its store: say so loudly, then start over
			r.event(mc, corev1.EventTypeWarning, "ClusterRecreated", "%s: bootstrapping a new cluster on %s", a.why, b.name)
		}
		n, err := b.api.Bootstrap(ctx)
		if err != nil {
			return false, fmt.Errorf("bootstrapping the cluster on %s: %w", b.name, err)
		}
		lc.clusterID = n.ClusterID
		r.event(mc, corev1.EventTypeNormal, "Bootstrapped", "%s bootstrapped cluster %s", b.name, n.ClusterID)
		return true, nil
	case actJoin:
		return r.join(ctx, st, b, a.via)
	case actEvacuate:
		if _, err := b.api.Evacuate(ctx); err != nil {
			return false, fmt.Errorf("evacuating %s: %w", b.name, err)
		}
		r.event(mc, corev1.EventTypeNormal, "Evacuating", "%s: moving the clients and sessions of %s to the other nodes", a.why, b.name)
		return true, nil
	case actLeave:
		if err := b.api.Leave(ctx); err != nil && brokerclient.CodeOf(err) != apiv1.CodeNotMember {
			return false, fmt.Errorf("%s leaving the cluster: %w", b.name, err)
		}
		r.event(mc, corev1.EventTypeNormal, "Left", "scale-down: %s left the cluster after its evacuation (%s)", b.name, a.why)
		return true, nil
	case actForceLeave:
		if err := a.via.api.ForceLeave(ctx, b.name); err != nil && brokerclient.CodeOf(err) != apiv1.CodeUnknownNode {
			return false, fmt.Errorf("force-leave of %s through %s: %w", b.name, a.via.name, err)
		}
		r.event(mc, corev1.EventTypeWarning, "ForceLeft", "scale-down: %s did not answer; removed it from the cluster through %s", b.name, a.via.name)
		return true, nil
	case actShrink:
		sts := st.sts
		patch := client.MergeFrom(sts.DeepCopy())
		sts.Spec.Replicas = ptr.To(int32(a.replicas))
		if err := r.Patch(ctx, sts, patch); err != nil {
			return false, err
		}
		if a.replicas == 0 {
			r.event(mc, corev1.EventTypeNormal, "ScaledToZero", "%s: %s", b.name, a.why)
			return true, nil
		}
		r.event(mc, corev1.EventTypeNormal, "ScaledDown", "%s left the cluster; the StatefulSet now has %d pods", b.name, a.replicas)
		return true, nil
	case actDeleteClaim:
		claim := &corev1.PersistentVolumeClaim{}
		claim.Name, claim.Namespace = a.claim, mc.Namespace
		if err := r.Delete(ctx, claim); client.IgnoreNotFound(err) != nil {
			return false, err
		}
		r.event(mc, corev1.EventTypeNormal, "VolumeDeleted", "deleted the volume %s of a removed node (retention whenScaled: Delete)", a.claim)
		return true, nil
	case actReport:
		r.report(st, needsAttention, a.reason, a.why)
		return false, nil
	case actReplacePod:
		if err := r.Delete(ctx, b.pod); client.IgnoreNotFound(err) != nil {
			return false, err
		}
		r.event(mc, corev1.EventTypeNormal, "PodReplaced", "rolling update: replaced %s (%s)", b.name, a.why)
		return true, nil
	}
	return false, fmt.Errorf("lifecycle: unknown action %d from rule %s", a.kind, a.rule)
}

// recordReset writes status.lastStoreReset before the reset it records is made, with
// the optimistic lock on the cluster as this reconcile read it. So a reset is never
// made without its record (the guard's "one at a time" and interval hold across
// failures and operator restarts), and never decided on a copy older than the last
// record: a cache that has not caught up with the previous reset conflicts, and the
// reconcile is retried on a fresh copy.
func (r *MQTTClusterReconciler) recordReset(ctx context.Context, st *state, rec *v1alpha1.StoreReset) error {
	mc := st.cluster
	patch := client.MergeFromWithOptions(mc.DeepCopy(), client.MergeFromWithOptimisticLock{})
	mc.Status.LastStoreReset = rec
	if err := r.Status().Patch(ctx, mc, patch); err != nil {
		return fmt.Errorf("recording the reset of %s before making it: %w", rec.Node, err)
	}
	return nil
}

// join asks b to join the cluster through the member seed and reads the answer.
func (r *MQTTClusterReconciler) join(ctx context.Context, st *state, b, seed *brokerPod) (bool, error) {
	mc := st.cluster
	_, err := b.api.Join(ctx, r.pods().Cluster(mc, seed.pod))
	switch brokerclient.CodeOf(err) {
	case "":
		r.event(mc, corev1.EventTypeNormal, "Joined", "%s joined the cluster through %s", b.name, seed.name)
		return true, nil
	case apiv1.CodeAlreadyMember:
		// The cluster's log reached it first (a reset node the configuration still
		// lists): it is in, as if this join had done it.
		r.event(mc, corev1.EventTypeNormal, "Joined", "%s is in the cluster (it was already a member when asked to join through %s)", b.name, seed.name)
		return true, nil
	case apiv1.CodeCookieMismatch:
		r.report(st, invalidInput, "CookieMismatch", fmt.Sprintf("%s was refused by %s: their cluster cookies differ", b.name, seed.name))
		return false, nil
	case apiv1.CodeStaleStore:
		// The broker now reports stale; the next reconcile resets it.
		r.event(mc, corev1.EventTypeWarning, "StaleStore", "%s holds another cluster's store: %v", b.name, err)
		return true, nil
	}
	return false, fmt.Errorf("joining %s through %s: %w", b.name, seed.name, err)
}
