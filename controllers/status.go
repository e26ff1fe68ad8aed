package controllers

import (
	"context"
	"fmt"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
	"github.com/mqtt-operator/mqtt-operator/controllers/resource"
)

// reconcileStatus computes the status from what the pipeline saw and writes it only
// when it changed.
func (r *MQTTClusterReconciler) reconcileStatus(ctx context.Context, st *state) error {
	mc := st.cluster
	if st.sts == nil { // the pipeline stopped early: report the StatefulSet as it is
		sts := &appsv1.StatefulSet{}
		err := r.getChild(ctx, client.ObjectKey{Namespace: mc.Namespace, Name: resource.StatefulSetName(mc)}, sts)
		if err == nil {
			st.sts = sts
		} else if client.IgnoreNotFound(err) != nil {
			return err
		}
	}
	// The optimistic lock makes a patch computed from a stale copy fail with a
	// conflict instead of overwriting newer fields; on a conflict the status is
	// computed again on the current object, so what this reconcile learned (a reset
	// counted, the cluster ID) is not lost.
	first := true
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if !first {
			if err := r.Get(ctx, client.ObjectKeyFromObject(mc), mc); err != nil {
				return err
			}
		}
		first = false
		desired := computeStatus(mc, st.sts, st.problems, st.lifecycle)
		if st.monitoring != nil {
			desired.Monitoring = *st.monitoring
		}
		if equality.Semantic.DeepEqual(mc.Status, desired) {
			return nil
		}
		patch := client.MergeFromWithOptions(mc.DeepCopy(), client.MergeFromWithOptimisticLock{})
		mc.Status = desired
		return r.Status().Patch(ctx, mc, patch)
	})
}

// computeStatus is the whole status as a pure function of the cluster, its StatefulSet
// (nil when there is none) and the problems found. Condition timestamps carry over
// from the current status when a condition's status did not change.
func computeStatus(mc *v1alpha1.MQTTCluster, sts *appsv1.StatefulSet, problems []problem, lc *lifecycle) v1alpha1.MQTTClusterStatus {
	out := *mc.Status.DeepCopy()
	if lc != nil && lc.gathered {
		if lc.clusterID != "" {
			out.ClusterID = lc.clusterID
		}
		out.StaleStoreResets += lc.resets
		if lc.lastReset != nil {
			out.LastStoreReset = lc.lastReset
		}
		out.Members = memberStatuses(lc)
	}
	out.ObservedGeneration = mc.Generation
	out.Selector = labels.SelectorFromSet(resource.SelectorLabels(mc)).String()
	out.Replicas, out.ReadyReplicas = 0, 0
	if sts != nil {
		out.Replicas = sts.Status.Replicas
		out.ReadyReplicas = sts.Status.ReadyReplicas
		out.ClusterTLS = v1alpha1.ClusterTLSDisabled
		if resource.ClusterTLSInTemplate(&sts.Spec.Template) {
			out.ClusterTLS = v1alpha1.ClusterTLSEnabled
		}
	}
	ready := 0
	for _, m := range out.Members {
		if m.Joined && m.Ready {
			ready++
		}
	}
	out.MembersReady = fmt.Sprintf("%d/%d", ready, desiredReplicas(mc))
	for _, c := range []metav1.Condition{
		readyCondition(mc, sts, problems, out.Members, lc != nil, outdatedPods(sts, lc)),
		availableCondition(sts),
		progressingCondition(mc, sts, problems),
		degradedCondition(problems),
	} {
		c.ObservedGeneration = mc.Generation
		meta.SetStatusCondition(&out.Conditions, c)
	}
	return out
}

func desiredReplicas(mc *v1alpha1.MQTTCluster) int32 {
	if mc.Spec.Replicas == nil {
		return 3
	}
	return *mc.Spec.Replicas
}

// stsCaughtUp reports whether the StatefulSet controller has seen the latest
// StatefulSet spec.
func stsCaughtUp(sts *appsv1.StatefulSet) bool {
	return sts.Status.ObservedGeneration >= sts.Generation
}

// outdatedPods counts the pods that run an older template than the StatefulSet's, or
// an API token the operator was asked to replace (0 when the brokers were not
// gathered).
func outdatedPods(sts *appsv1.StatefulSet, lc *lifecycle) int {
	n := 0
	if lc == nil || sts == nil {
		return 0
	}
	for _, b := range lc.pods {
		if outdated(sts.Status.UpdateRevision, b.pod) || b.staleToken {
			n++
		}
	}
	return n
}

// readyCondition: every desired node is ready, joined and runs the current settings,
// and the spec could be acted on. outdated counts pods on an older template: mqttd.yaml
// (anonymous access, the users and ACL files) is part of the template, so until they
// are replaced the settings the spec asks for may not be in force on them.
func readyCondition(mc *v1alpha1.MQTTCluster, sts *appsv1.StatefulSet, problems []problem, members []v1alpha1.MemberStatus, gathered bool, outdated int) metav1.Condition {
	want := desiredReplicas(mc)
	c := metav1.Condition{Type: v1alpha1.ConditionReady}
	switch {
	case hasInvalidInput(problems):
		c.Status, c.Reason, c.Message = metav1.ConditionFalse, "InvalidSpec", problemMessages(problems)
	case len(ofKind(problems, refusedChange))+len(ofKind(problems, notInForce)) > 0:
		// Fail closed: what was asked is not in force.
		refused := append(ofKind(problems, refusedChange), ofKind(problems, notInForce)...)
		c.Status, c.Reason, c.Message = metav1.ConditionFalse, refused[0].reason, problemMessages(refused)
	case len(ofKind(problems, waitingOutside)) > 0:
		w := ofKind(problems, waitingOutside)
		c.Status, c.Reason, c.Message = metav1.ConditionFalse, w[0].reason, problemMessages(w)
	case sts == nil:
		c.Status, c.Reason, c.Message = metav1.ConditionFalse, "StatefulSetMissing", "the broker StatefulSet does not exist yet"
	case !stsCaughtUp(sts) || sts.Status.ReadyReplicas < want || sts.Status.Replicas != want:
		c.Status, c.Reason = metav1.ConditionFalse, "NodesNotReady"
		c.Message = fmt.Sprintf("%d of %d broker nodes ready", sts.Status.ReadyReplicas, want)
	case gathered && joinedReady(members) < want:
		c.Status, c.Reason = metav1.ConditionFalse, "MembersNotJoined"
		c.Message = fmt.Sprintf("%d of %d broker nodes are ready cluster members", joinedReady(members), want)
	case outdated > 0:
		c.Status, c.Reason = metav1.ConditionFalse, "SettingsPending"
		c.Message = fmt.Sprintf("%d of %d pods run an older pod template or API token: the settings the spec asks for (such as anonymous access, a new API token) are not in force on them until they are replaced", outdated, want)
	default:
		c.Status, c.Reason = metav1.ConditionTrue, "AllNodesReady"
		c.Message = fmt.Sprintf("%d of %d broker nodes ready and joined", sts.Status.ReadyReplicas, want)
	}
	return c
}

// joinedReady counts the members that are joined and ready.
func joinedReady(members []v1alpha1.MemberStatus) int32 {
	var n int32
	for _, m := range members {
		if m.Joined && m.Ready {
			n++
		}
	}
	return n
}

// availableCondition: at least one node serves clients.
func availableCondition(sts *appsv1.StatefulSet) metav1.Condition {
	c := metav1.Condition{Type: v1alpha1.ConditionAvailable}
	if sts != nil && sts.Status.ReadyReplicas > 0 {
		c.Status, c.Reason = metav1.ConditionTrue, "NodesReady"
		c.Message = fmt.Sprintf("%d broker nodes ready", sts.Status.ReadyReplicas)
		return c
	}
	c.Status, c.Reason, c.Message = metav1.ConditionFalse, "NoNodeReady", "no broker node is ready"
	return c
}

// progressingCondition: the StatefulSet is still moving towards the spec (pods being
// created, started or removed).
func progressingCondition(mc *v1alpha1.MQTTCluster, sts *appsv1.StatefulSet, problems []problem) metav1.Condition {
	want := desiredReplicas(mc)
	c := metav1.Condition{Type: v1alpha1.ConditionProgressing}
	switch w := ofKind(problems, waitingOutside); {
	case len(w) > 0:
		c.Status, c.Reason, c.Message = metav1.ConditionTrue, w[0].reason, problemMessages(w)
	case sts == nil:
		c.Status, c.Reason, c.Message = metav1.ConditionFalse, "NotStarted", "the broker StatefulSet does not exist yet"
	case !stsCaughtUp(sts) || sts.Status.Replicas != want || sts.Status.ReadyReplicas != want:
		c.Status, c.Reason = metav1.ConditionTrue, "Reconciling"
		c.Message = fmt.Sprintf("%d pods, %d ready, %d desired", sts.Status.Replicas, sts.Status.ReadyReplicas, want)
	case updatePending(sts):
		// OnDelete: the new template reaches a pod only when that pod is replaced.
		c.Status, c.Reason = metav1.ConditionTrue, "UpdatePending"
		c.Message = fmt.Sprintf("%d of %d pods run the current template (revision %s)",
			sts.Status.UpdatedReplicas, sts.Status.Replicas, sts.Status.UpdateRevision)
	default:
		c.Status, c.Reason, c.Message = metav1.ConditionFalse, "Stable", "the cluster matches the spec"
	}
	return c
}

// updatePending reports whether some pods still run an older pod template.
func updatePending(sts *appsv1.StatefulSet) bool {
	s := sts.Status
	return s.UpdateRevision != "" && (s.CurrentRevision != s.UpdateRevision || s.UpdatedReplicas < s.Replicas)
}

// degradedCondition: something in the spec needs the user's attention.
func degradedCondition(all []problem) metav1.Condition {
	c := metav1.Condition{Type: v1alpha1.ConditionDegraded}
	var problems []problem
	for _, p := range all {
		if p.kind != waitingOutside {
			problems = append(problems, p)
		}
	}
	if len(problems) == 0 {
		c.Status, c.Reason, c.Message = metav1.ConditionFalse, "AsExpected", "no problem found"
		return c
	}
	c.Status, c.Reason, c.Message = metav1.ConditionTrue, problems[0].reason, problemMessages(problems)
	return c
}

func problemMessages(problems []problem) string {
	msgs := make([]string, 0, len(problems))
	for _, p := range problems {
		msgs = append(msgs, p.message)
	}
	return strings.Join(msgs, "; ")
}
