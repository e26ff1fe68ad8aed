package controllers

import (
	"context"
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"

	"github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
)

// The lifecycle step owns the broker cluster's membership: it bootstraps pod-0 once,
// joins the other pods one at a time in ordinal order, resets nodes that report a
// stale store, scales down from the highest ordinal (evacuate, leave, shrink, delete
// the volume per policy) and replaces outdated pods one at a time.
//
// It runs as observe → decide → act:
//   - observe (lifecycle_observe.go) gathers one observation: the StatefulSet, every
//     ordinal's pod and what its broker reports (node, cluster view, evacuation),
//     asked of all brokers in parallel, and the data volume claims;
//   - decide (lifecycle_decide.go, lifecycle_scale.go) is a pure function of the
//     observation and the clock: named rules in order of urgency, the first action
//     wins;
//   - act (this file) is the only code that changes anything: one broker API call or
//     one Kubernetes write per reconcile.
//
// Every decision is derived from what the brokers report and from the StatefulSet,
// never from memory: an operator restarted mid-way picks up where the cluster is.

const (
	// lifecycleBusy is how soon to look again while something is in progress.
	lifecycleBusy = time.Second
	// lifecycleIdle refreshes the members in status when nothing is in progress.
	lifecycleIdle = 30 * time.Second
)

// lifecycle is the step's observation, kept in state for the status.
type lifecycle struct {
	*observation
	gathered bool
	// resets counts the stale stores reset by this reconcile; status adds it to the
	// count it holds (recomputed if the status write conflicts).
	resets int32
	// lastReset is the reset this reconcile made, for status.lastStoreReset.
	lastReset *v1alpha1.StoreReset
}

// reconcileLifecycle observes the cluster, decides its next action and takes it.
func (r *MQTTClusterReconciler) reconcileLifecycle(ctx context.Context, st *state) (bool, error) {
	mc, sts := st.cluster, st.sts
	if sts == nil {
		return false, nil
	}
	if st.nodeSecrets == nil {
		return false, nil // the pipeline stops before this step without them
	}
	o, err := r.observe(ctx, mc, sts, *st.nodeSecrets)
	if err != nil {
		return false, err
	}
	lc := &lifecycle{observation: o, gathered: true}
	st.lifecycle = lc
	for _, b := range o.pods {
		if b.certRejected {
			r.report(st, needsAttention, "APICertificateRejected", fmt.Sprintf(
				"%s answers with an API certificate that is not from the cluster's CA or does not name the pod: no token is sent to it, it is not taken for dead, but the operator cannot see or drive it (%v)",
				b.name, b.err))
		}
		if b.tokenRejected {
			r.report(st, needsAttention, "APITokenRejected", fmt.Sprintf(
				"%s answers but refuses every API token the operator holds (the node Secret's current and previous tokens): it is not taken for dead, but the operator cannot see or drive it. "+
					"Delete the pod so that it restarts on the current token", b.name))
		}
	}
	st.requeue = minRequeue(st.requeue, lifecycleIdle)
	a := decide(o, r.now())
	acted, err := r.act(ctx, st, lc, a)
	if err != nil {
		return false, err
	}
	if acted || !o.settled() {
		st.requeue = lifecycleBusy
	}
	return false, nil
}

// now is the reconciler's clock.
func (r *MQTTClusterReconciler) now() time.Time {
	if r.Clock != nil {
		return r.Clock.Now()
	}
	return time.Now()
}

// desired is the number of nodes the spec asks for.
func desired(mc *v1alpha1.MQTTCluster) int { return int(desiredReplicas(mc)) }

// event emits an event about the cluster.
func (r *MQTTClusterReconciler) event(mc *v1alpha1.MQTTCluster, typ, reason, format string, args ...any) {
	if r.Recorder != nil {
		r.Recorder.Eventf(mc, nil, typ, reason, "Lifecycle", format, args...)
	}
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
			m.Reason = b.node.NotReadyReason
			m.Unreachable = b.node.Unreachable
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
