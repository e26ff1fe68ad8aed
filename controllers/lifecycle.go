package controllers

import (
	"context"
	"fmt"
	"sync"
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

// The lifecycle step owns the broker cluster's membership: it bootstraps pod-0 once,
// joins the other pods one at a time in ordinal order, resets nodes that report a
// stale store, scales down from the highest ordinal (evacuate, leave, shrink, delete
// the volume per policy) and replaces outdated pods one at a time. Every decision is
// derived from what the brokers report and from the StatefulSet, never from memory:
// an operator restarted mid-way picks up where the cluster is. Each reconcile takes at
// most one action and asks to be called again soon.

const (
	// lifecycleBusy is how soon to look again while something is in progress.
	lifecycleBusy = time.Second
	// lifecycleIdle refreshes the members in status when nothing is in progress.
	lifecycleIdle = 30 * time.Second
	// storeExitCode is mqttd's exit code when its store cannot be opened.
	storeExitCode = 3
)

// brokerPod is what one reconcile learns about one ordinal.
type brokerPod struct {
	ordinal int
	name    string
	pod     *corev1.Pod
	api     *brokerclient.Client // nil without an address
	node    *brokerclient.Node   // nil when the broker did not answer
	err     error
}

func (b *brokerPod) reachable() bool { return b.node != nil }

// joined reports whether the broker is a member of the cluster recorded in status.
func (b *brokerPod) joined(clusterID string) bool {
	return b.node != nil && b.node.StoreState == apiv1.StoreMember && clusterID != "" && b.node.ClusterID == clusterID
}

// lifecycle is the step's view, kept in state for the status.
type lifecycle struct {
	gathered  bool
	pods      []*brokerPod
	clusterID string
	// resets counts the stale stores reset by this reconcile; status adds it to the
	// count it holds (recomputed if the status write conflicts).
	resets int32
}

// reconcileLifecycle runs the membership pipeline once.
func (r *MQTTClusterReconciler) reconcileLifecycle(ctx context.Context, st *state) (bool, error) {
	mc, sts := st.cluster, st.sts
	if sts == nil {
		return false, nil
	}
	token, err := r.apiToken(ctx, mc)
	if err != nil {
		return false, err
	}
	lc, err := r.gather(ctx, mc, sts, token)
	if err != nil {
		return false, err
	}
	st.lifecycle = lc
	st.requeue = lifecycleIdle
	acted, err := r.lifecycleAction(ctx, st, lc)
	if err != nil {
		return false, err
	}
	if acted || !membersSettled(mc, sts, lc) {
		st.requeue = lifecycleBusy
	}
	return false, nil
}

// lifecycleAction takes the first action the cluster needs, in order of urgency.
func (r *MQTTClusterReconciler) lifecycleAction(ctx context.Context, st *state, lc *lifecycle) (bool, error) {
	for _, act := range []func(context.Context, *state, *lifecycle) (bool, error){
		r.resetStale,
		r.bootstrap,
		r.joinNext,
		r.scaleDown,
		r.deleteScaledVolumes,
		r.rollPods,
	} {
		acted, err := act(ctx, st, lc)
		if acted || err != nil {
			return acted, err
		}
	}
	return false, nil
}

// apiToken reads the bearer token of the brokers' API.
func (r *MQTTClusterReconciler) apiToken(ctx context.Context, mc *v1alpha1.MQTTCluster) (string, error) {
	name, key := resource.APITokenSecret(mc)
	s := &corev1.Secret{}
	if err := r.Get(ctx, client.ObjectKey{Namespace: mc.Namespace, Name: name}, s); err != nil {
		return "", fmt.Errorf("reading the API token Secret %q: %w", name, err)
	}
	return string(s.Data[key]), nil
}

// gather lists the pods and asks every broker for its state, in parallel.
func (r *MQTTClusterReconciler) gather(ctx context.Context, mc *v1alpha1.MQTTCluster, sts *appsv1.StatefulSet, token string) (*lifecycle, error) {
	pods := &corev1.PodList{}
	if err := r.List(ctx, pods, client.InNamespace(mc.Namespace), client.MatchingLabels(resource.SelectorLabels(mc))); err != nil {
		return nil, err
	}
	n := int(ptr.Deref(sts.Spec.Replicas, 0))
	byOrdinal := map[int]*corev1.Pod{}
	for i := range pods.Items {
		p := &pods.Items[i]
		if o := podOrdinal(mc, p); o >= 0 {
			byOrdinal[o] = p
			n = max(n, o+1)
		}
	}
	lc := &lifecycle{gathered: true, clusterID: mc.Status.ClusterID}
	var wg sync.WaitGroup
	for o := range n {
		b := &brokerPod{ordinal: o, name: resource.PodName(mc, o), pod: byOrdinal[o]}
		lc.pods = append(lc.pods, b)
		if b.pod == nil || !b.pod.DeletionTimestamp.IsZero() {
			continue
		}
		url := r.pods().API(mc, b.pod)
		if url == "" {
			continue
		}
		b.api = &brokerclient.Client{BaseURL: url, Token: token, Timeout: 5 * time.Second}
		wg.Add(1)
		go func() {
			defer wg.Done()
			b.node, b.err = b.api.Node(ctx)
			if b.err != nil {
				b.node = nil
			}
		}()
	}
	wg.Wait()
	return lc, nil
}

func (r *MQTTClusterReconciler) pods() PodAddresses {
	if r.Pods != nil {
		return r.Pods
	}
	return InClusterAddresses{}
}

// desired is the number of nodes the spec asks for.
func desired(mc *v1alpha1.MQTTCluster) int { return int(desiredReplicas(mc)) }

// resetStale resets a node that reports a stale store, or whose pod crash-loops on a
// store it cannot open, and that the cluster still wants. A healthy member is never
// touched: the decision needs the broker's own report (or its exit code).
func (r *MQTTClusterReconciler) resetStale(ctx context.Context, st *state, lc *lifecycle) (bool, error) {
	mc := st.cluster
	for _, b := range lc.pods {
		if b.ordinal >= desired(mc) {
			continue // leaving: a node that left reports stale on purpose
		}
		switch {
		case b.reachable() && b.node.StoreState == apiv1.StoreStale:
			if _, err := b.api.Reset(ctx); err != nil {
				return false, fmt.Errorf("resetting the stale store of %s: %w", b.name, err)
			}
			lc.resets++
			r.event(mc, corev1.EventTypeWarning, "StaleStoreReset", "reset the stale store of %s (%s); it joins again", b.name, b.node.StaleReason)
			return true, nil
		case b.pod != nil && !b.reachable() && crashLoopsOnStore(b.pod):
			// mqttd exits with 3 when it cannot open its store: the volume goes, the
			// StatefulSet recreates pod and volume, the node joins again empty.
			claim := &corev1.PersistentVolumeClaim{}
			claim.Name, claim.Namespace = resource.DataClaimName(mc, b.name), mc.Namespace
			if err := r.Delete(ctx, claim); client.IgnoreNotFound(err) != nil {
				return false, err
			}
			if err := r.Delete(ctx, b.pod); client.IgnoreNotFound(err) != nil {
				return false, err
			}
			lc.resets++
			r.event(mc, corev1.EventTypeWarning, "StaleStoreReset", "%s cannot open its store (exit code %d): deleted its volume and pod", b.name, storeExitCode)
			return true, nil
		}
	}
	return false, nil
}

// crashLoopsOnStore reports whether the broker container is down right now, in a
// crash loop whose last exit had the store's exit code. A container that recovered
// keeps its last termination and restart count: it must be waiting now to count.
func crashLoopsOnStore(pod *corev1.Pod) bool {
	for _, cs := range pod.Status.ContainerStatuses {
		if cs.Name != resource.ContainerName {
			continue
		}
		t := cs.LastTerminationState.Terminated
		waiting := cs.State.Waiting != nil && cs.State.Waiting.Reason == "CrashLoopBackOff"
		if waiting && t != nil && t.ExitCode == storeExitCode && cs.RestartCount >= 2 {
			return true
		}
	}
	return false
}

// bootstrap makes pod-0 create the cluster when no broker belongs to one yet.
func (r *MQTTClusterReconciler) bootstrap(ctx context.Context, st *state, lc *lifecycle) (bool, error) {
	mc := st.cluster
	if len(lc.pods) == 0 {
		return false, nil
	}
	for _, b := range lc.pods {
		if b.reachable() && b.node.StoreState == apiv1.StoreMember && (lc.clusterID == "" || b.node.ClusterID == lc.clusterID) {
			if lc.clusterID == "" { // bootstrapped before the status was written
				lc.clusterID = b.node.ClusterID
				return true, nil
			}
			return false, nil
		}
	}
	first := lc.pods[0]
	// Only when every wanted node answers and none holds a cluster: a node that does
	// not answer may hold one, and a second cluster must never start beside it.
	for _, b := range lc.pods[:min(len(lc.pods), desired(mc))] {
		if !b.reachable() || b.node.StoreState != apiv1.StoreEmpty {
			return false, nil
		}
	}
	if lc.clusterID != "" {
		// Every node lost its store: say so loudly, then start over.
		r.event(mc, corev1.EventTypeWarning, "ClusterRecreated", "no node holds cluster %s any more: bootstrapping a new cluster on %s", lc.clusterID, first.name)
	}
	n, err := first.api.Bootstrap(ctx)
	if err != nil {
		return false, fmt.Errorf("bootstrapping the cluster on %s: %w", first.name, err)
	}
	lc.clusterID = n.ClusterID
	r.event(mc, corev1.EventTypeNormal, "Bootstrapped", "%s bootstrapped cluster %s", first.name, n.ClusterID)
	return true, nil
}

// joinNext joins the first wanted pod that is not a member yet (in ordinal order)
// through the lowest member, once every member shows in the cluster view of more than
// one member: the previous join is confirmed before the next.
func (r *MQTTClusterReconciler) joinNext(ctx context.Context, st *state, lc *lifecycle) (bool, error) {
	mc := st.cluster
	if lc.clusterID == "" {
		return false, nil
	}
	wanted := lc.pods[:min(len(lc.pods), desired(mc))]
	var members []*brokerPod
	for _, b := range lc.pods {
		if b.joined(lc.clusterID) {
			members = append(members, b)
		}
	}
	for _, b := range wanted {
		if b.joined(lc.clusterID) {
			continue
		}
		if !b.reachable() || len(members) == 0 {
			return false, nil // joins go in ordinal order: wait for this pod
		}
		if !confirmed(ctx, members) {
			return false, nil
		}
		seed := members[0]
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
	return false, nil
}

// confirmed reports whether every member is listed in the cluster view of more than
// one member (of the only one, while there is one).
func confirmed(ctx context.Context, members []*brokerPod) bool {
	seen := map[string]int{}
	for _, m := range members {
		v, err := m.api.Cluster(ctx)
		if err != nil {
			return false // asked again on the next reconcile
		}
		for _, x := range v.Members {
			seen[x.Name]++
		}
	}
	need := min(2, len(members))
	for _, m := range members {
		if seen[m.name] < need {
			return false
		}
	}
	return true
}

// event emits an event about the cluster.
func (r *MQTTClusterReconciler) event(mc *v1alpha1.MQTTCluster, typ, reason, format string, args ...any) {
	if r.Recorder != nil {
		r.Recorder.Eventf(mc, nil, typ, reason, "Lifecycle", format, args...)
	}
}

// membersSettled reports whether nothing is in progress: every wanted pod is a ready
// member, the StatefulSet has its final size and runs the current template.
func membersSettled(mc *v1alpha1.MQTTCluster, sts *appsv1.StatefulSet, lc *lifecycle) bool {
	if int(ptr.Deref(sts.Spec.Replicas, 0)) != desired(mc) || len(lc.pods) != desired(mc) {
		return false
	}
	for _, b := range lc.pods {
		if !b.joined(lc.clusterID) || !b.node.Ready || outdated(sts, b.pod) {
			return false
		}
	}
	return true
}

// outdated reports whether pod runs an older template than the StatefulSet's.
func outdated(sts *appsv1.StatefulSet, pod *corev1.Pod) bool {
	if pod == nil || sts.Status.UpdateRevision == "" {
		return false
	}
	return pod.Labels[appsv1.ControllerRevisionHashLabelKey] != sts.Status.UpdateRevision
}
