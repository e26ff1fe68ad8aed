package controllers

import (
	"context"
	"fmt"
	"time"

	"github.com/mqtt-operator/mqtt-operator/broker/apiv1"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
	"github.com/mqtt-operator/mqtt-operator/controllers/brokerclient"
	"github.com/mqtt-operator/mqtt-operator/controllers/resource"
)

// scaleDown removes the highest ordinal while the StatefulSet is larger than the spec:
// evacuate it, make it leave (or force-leave it when it is gone), check the members no
// longer list it, then shrink the StatefulSet by one. The StatefulSet's size is the
// record of progress, and each sub-step is read back from the brokers, so an operator
// restart resumes where it stopped; one node at a time keeps raft's quorum.
func (r *MQTTClusterReconciler) scaleDown(ctx context.Context, st *state, lc *lifecycle) (bool, error) {
	mc, sts := st.cluster, st.sts
	size := int(ptr.Deref(sts.Spec.Replicas, 0))
	if size <= desired(mc) || size > len(lc.pods) {
		return false, nil
	}
	target := lc.pods[size-1]
	ref := referenceMember(lc, target.ordinal)
	if ref == nil {
		return false, nil // no member left to ask: wait
	}
	if target.joined(lc.clusterID) {
		if !target.node.Evacuating {
			// One node at a time, and only from a whole cluster: with another member
			// down, removing this one could leave raft without a quorum.
			others := make([]*brokerPod, 0, len(lc.pods))
			for _, b := range lc.pods[:size] {
				if b.ordinal == target.ordinal {
					continue
				}
				if !b.joined(lc.clusterID) || !b.node.Ready {
					return false, nil
				}
				others = append(others, b)
			}
			if !linked(ctx, others) {
				return false, nil
			}
			if _, err := target.api.Evacuate(ctx); err != nil {
				return false, fmt.Errorf("evacuating %s: %w", target.name, err)
			}
			r.event(mc, corev1.EventTypeNormal, "Evacuating", "scale-down: moving the clients and sessions of %s to the other nodes", target.name)
			return true, nil
		}
		ev, err := target.api.Evacuation(ctx)
		if err != nil {
			return false, fmt.Errorf("evacuation of %s: %w", target.name, err)
		}
		if ev.State != "done" {
			return true, nil // in progress; a disconnect rate bounds it
		}
		if err := target.api.Leave(ctx); err != nil && brokerclient.CodeOf(err) != apiv1.CodeNotMember {
			return false, fmt.Errorf("%s leaving the cluster: %w", target.name, err)
		}
		r.event(mc, corev1.EventTypeNormal, "Left", "scale-down: %s left the cluster after its evacuation (%d sessions moved)", target.name, ev.Moved)
		return true, nil
	}
	view, err := ref.api.Cluster(ctx)
	if err != nil {
		return false, nil // asked again on the next reconcile
	}
	if view.Has(target.name) {
		if target.reachable() {
			return false, nil // it is leaving; wait until the members see it
		}
		// Gone without leaving (its pod is dead): remove it through a member.
		if err := ref.api.ForceLeave(ctx, target.name); err != nil && brokerclient.CodeOf(err) != apiv1.CodeUnknownNode {
			return false, fmt.Errorf("force-leave of %s through %s: %w", target.name, ref.name, err)
		}
		r.event(mc, corev1.EventTypeWarning, "ForceLeft", "scale-down: %s did not answer; removed it from the cluster through %s", target.name, ref.name)
		return true, nil
	}
	// Every other member that answers must see it gone too (each follows the raft
	// configuration on its own) before its pod goes.
	for _, b := range lc.pods {
		if b == ref || b == target || !b.joined(lc.clusterID) {
			continue
		}
		if v, err := b.api.Cluster(ctx); err == nil && v.Has(target.name) {
			return true, nil
		}
	}
	patch := client.MergeFrom(sts.DeepCopy())
	sts.Spec.Replicas = ptr.To(int32(size - 1))
	if err := r.Patch(ctx, sts, patch); err != nil {
		return false, err
	}
	r.event(mc, corev1.EventTypeNormal, "ScaledDown", "%s left the cluster; the StatefulSet now has %d pods", target.name, size-1)
	return true, nil
}

// referenceMember is the lowest-ordinal member other than skip.
func referenceMember(lc *lifecycle, skip int) *brokerPod {
	for _, b := range lc.pods {
		if b.ordinal != skip && b.joined(lc.clusterID) {
			return b
		}
	}
	return nil
}

// deleteScaledVolumes deletes the volumes of nodes a scale-down removed, when the
// retention policy says so. Only ordinals at or above both the StatefulSet's size and
// the spec's, whose pod is gone.
func (r *MQTTClusterReconciler) deleteScaledVolumes(ctx context.Context, st *state, lc *lifecycle) (bool, error) {
	mc, sts := st.cluster, st.sts
	if mc.Spec.Storage.Retention.WhenScaled != v1alpha1.Delete {
		return false, nil
	}
	from := max(int(ptr.Deref(sts.Spec.Replicas, 0)), desired(mc))
	claims := &corev1.PersistentVolumeClaimList{}
	if err := r.List(ctx, claims, client.InNamespace(mc.Namespace)); err != nil {
		return false, err
	}
	acted := false
	for i := range claims.Items {
		c := &claims.Items[i]
		o := -1
		for k := from; k < from+256; k++ { // claims of removed ordinals
			if c.Name == resource.DataClaimName(mc, resource.PodName(mc, k)) {
				o = k
				break
			}
		}
		if o < 0 || (o < len(lc.pods) && lc.pods[o].pod != nil) || !c.DeletionTimestamp.IsZero() {
			continue
		}
		if err := r.Delete(ctx, c); client.IgnoreNotFound(err) != nil {
			return false, err
		}
		r.event(mc, corev1.EventTypeNormal, "VolumeDeleted", "deleted the volume %s of a removed node (retention whenScaled: Delete)", c.Name)
		acted = true
	}
	return acted, nil
}

// rollPods replaces pods that run an older template, one at a time from the highest
// ordinal: evacuate, delete, and only go on once the replacement is a ready member. A
// pod stuck in a crash or image-pull loop is replaced at once: the safety checks
// could never pass for it.
func (r *MQTTClusterReconciler) rollPods(ctx context.Context, st *state, lc *lifecycle) (bool, error) {
	mc, sts := st.cluster, st.sts
	if mc.Spec.UpdateStrategy.Type == v1alpha1.Manual || sts.Status.UpdateRevision == "" {
		return false, nil
	}
	for i := len(lc.pods) - 1; i >= 0; i-- {
		if b := lc.pods[i]; b.pod != nil && outdated(sts, b.pod) && stuck(b.pod) {
			return true, r.replace(ctx, mc, b, "it is stuck in "+waitingReason(b.pod))
		}
	}
	if int(ptr.Deref(sts.Spec.Replicas, 0)) != desired(mc) || len(lc.pods) != desired(mc) {
		return false, nil // scaling first
	}
	var evacuating *brokerPod
	for _, b := range lc.pods {
		if !b.joined(lc.clusterID) || !b.node.Ready {
			if b.reachable() && b.node.Evacuating && outdated(sts, b.pod) && evacuating == nil {
				evacuating = b
				continue // the one being replaced
			}
			return false, nil // the cluster must be whole before the next pod goes
		}
	}
	if evacuating == nil && !linked(ctx, lc.pods) {
		return false, nil // a replaced node is back but not linked to everyone yet
	}
	for i := len(lc.pods) - 1; i >= 0; i-- {
		b := lc.pods[i]
		if !outdated(sts, b.pod) {
			continue
		}
		if referenceMember(lc, b.ordinal) != nil {
			if !b.node.Evacuating {
				if _, err := b.api.Evacuate(ctx); err != nil {
					return false, fmt.Errorf("evacuating %s: %w", b.name, err)
				}
				r.event(mc, corev1.EventTypeNormal, "Evacuating", "rolling update: moving the clients and sessions of %s to the other nodes", b.name)
				return true, nil
			}
			ev, err := b.api.Evacuation(ctx)
			if err != nil {
				return false, fmt.Errorf("evacuation of %s: %w", b.name, err)
			}
			if ev.State != "done" && !evacuationTimedOut(mc, b.pod) {
				return true, nil
			}
		}
		return true, r.replace(ctx, mc, b, "it runs an older template")
	}
	return false, nil
}

// linked reports whether every member sees every other one as a reachable member.
func linked(ctx context.Context, pods []*brokerPod) bool {
	for _, b := range pods {
		v, err := b.api.Cluster(ctx)
		if err != nil {
			return false
		}
		for _, o := range pods {
			ok := false
			for _, m := range v.Members {
				ok = ok || (m.Name == o.name && m.Reachable)
			}
			if !ok {
				return false
			}
		}
	}
	return true
}

// replace deletes a pod so the StatefulSet recreates it from the current template.
func (r *MQTTClusterReconciler) replace(ctx context.Context, mc *v1alpha1.MQTTCluster, b *brokerPod, why string) error {
	if err := r.Delete(ctx, b.pod); client.IgnoreNotFound(err) != nil {
		return err
	}
	r.event(mc, corev1.EventTypeNormal, "PodReplaced", "rolling update: replaced %s (%s)", b.name, why)
	return nil
}

// evacuationTimedOut bounds an evacuation by the update strategy's pod timeout,
// counted from the pod's readiness change (evacuation makes it unready).
func evacuationTimedOut(mc *v1alpha1.MQTTCluster, pod *corev1.Pod) bool {
	timeout := 10 * time.Minute
	if t := mc.Spec.UpdateStrategy.PodReadyTimeout; t != nil {
		timeout = t.Duration
	}
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady && c.Status == corev1.ConditionFalse {
			return time.Since(c.LastTransitionTime.Time) > timeout
		}
	}
	return false
}

// stuck reports whether the broker container cannot start: a crash loop or an image
// that cannot be pulled.
func stuck(pod *corev1.Pod) bool {
	switch waitingReason(pod) {
	case "CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull", "InvalidImageName", "CreateContainerConfigError":
		return true
	}
	return false
}

func waitingReason(pod *corev1.Pod) string {
	for _, cs := range pod.Status.ContainerStatuses {
		if cs.Name == resource.ContainerName && cs.State.Waiting != nil {
			return cs.State.Waiting.Reason
		}
	}
	return ""
}

// memberStatuses is status.members from what the brokers reported.
func memberStatuses(lc *lifecycle) []v1alpha1.MemberStatus {
	out := make([]v1alpha1.MemberStatus, 0, len(lc.pods))
	for _, b := range lc.pods {
		m := v1alpha1.MemberStatus{Ordinal: int32(b.ordinal), Node: b.name, StoreState: "unknown"}
		if b.reachable() {
			m.Joined = b.joined(lc.clusterID)
			m.Ready = b.node.Ready
			m.StoreState = b.node.StoreState
			m.Version = b.node.Version
			m.Connections = b.node.Connections
		}
		out = append(out, m)
	}
	return out
}

// stsReplicas is the size the StatefulSet builder writes: the spec's, except during a
// scale-down, which the lifecycle step shrinks one node at a time.
func stsReplicas(mc *v1alpha1.MQTTCluster, current *appsv1.StatefulSet) int32 {
	want := desiredReplicas(mc)
	if current != nil && current.Spec.Replicas != nil && *current.Spec.Replicas > want {
		return *current.Spec.Replicas
	}
	return want
}
