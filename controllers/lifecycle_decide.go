package controllers

import (
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/mqtt-operator/mqtt-operator/broker/apiv1"
	"github.com/mqtt-operator/mqtt-operator/controllers/resource"
)

// actionKind is what the executor does for a decision.
type actionKind int

const (
	actNone         actionKind = iota // nothing to do
	actWait                           // something is in progress: look again soon
	actFail                           // the observation missed what the rule needs: err
	actAdoptCluster                   // record clusterID (bootstrapped before the status was written)
	actResetStore                     // POST reset to target: its store is stale
	actWipeVolume                     // delete target's volume and pod: it cannot open its store
	actBootstrap                      // target creates the cluster
	actJoin                           // target joins through via
	actEvacuate                       // target moves its clients and sessions away
	actLeave                          // target leaves the cluster (its evacuation is done)
	actForceLeave                     // via removes target, which is gone, from the cluster
	actShrink                         // the StatefulSet goes down to replicas
	actDeleteClaim                    // delete the volume claim named claim
	actReplacePod                     // delete target's pod: the StatefulSet recreates it
	actReport                         // a person is needed: Degraded says reason and why; nothing is done
	actFinishWipe                     // delete target's pod: its volume is being deleted already
)

// action is one decision: what to do, to whom, and why (for the event).
type action struct {
	kind      actionKind
	rule      string     // the rule that decided it
	target    *brokerPod // the node acted on
	via       *brokerPod // the member a join or a force-leave goes through
	clusterID string     // actAdoptCluster
	replicas  int        // actShrink
	claim     string     // actDeleteClaim, actWipeVolume
	reason    string     // actReport: the Degraded reason
	why       string     // what the event (for actReport, the Degraded message) says
	err       error      // actFail
}

// rule is one named decision: an action when it applies, nil to let the next rule
// decide. It reads only the observation and the clock.
type rule struct {
	name   string
	decide func(o *observation, now time.Time) *action
}

// lifecycleRules are the decisions in order of urgency; the first action wins, so a
// reconcile takes at most one.
var lifecycleRules = []rule{
	{"resetStale", resetStale},
	{"bootstrap", bootstrap},
	{"joinNext", joinNext},
	{"scaleDown", scaleDown},
	{"deleteScaledVolume", deleteScaledVolume},
	{"rollPods", rollPods},
}

// decide is the lifecycle's pure decision: the first rule's action, or actNone.
func decide(o *observation, now time.Time) action {
	for _, r := range lifecycleRules {
		if a := r.decide(o, now); a != nil {
			a.rule = r.name
			return *a
		}
	}
	return action{kind: actNone}
}

// wanted is the ordinals the spec wants, as far as they were observed.
func (o *observation) wanted() []*brokerPod { return o.pods[:min(len(o.pods), o.desired)] }

// resetStale resets a node that reports a stale store (its store belongs to another
// cluster, or it was removed from this one), or deletes the volume of a node whose
// pod crash-loops on a store mqttd cannot use, for a node the cluster still wants. A
// member that answers is never touched: the decision needs the broker's own report
// (or its exit code). Both pass resetGuard, or wait for a person (Degraded).
func resetStale(o *observation, now time.Time) *action {
	for _, b := range o.wanted() { // a leaving node reports stale on purpose
		switch {
		case b.reachable() && b.node.StoreState == apiv1.StoreStale:
			if reason, why, ok := o.resetGuard(b, false, now); !ok {
				return &action{kind: actReport, target: b, reason: reason,
					why: fmt.Sprintf("the stale store of %s (%s) is kept: %s", b.name, b.node.StaleReason, why)}
			}
			return &action{kind: actResetStore, target: b, why: b.node.StaleReason}
		case b.pod != nil && b.pod.DeletionTimestamp.IsZero() && !b.reachable() && storeFailure(b.pod) != 0:
			if outdated(o.updateRevision, b.pod) {
				continue // rollPods replaces it from the current template first
			}
			claim := o.claimOf(b.ordinal) // nil when none with the cluster's labels
			if claim != nil && claim.deleting {
				// Its volume is going (a wipe whose pod deletion failed, or a person):
				// the claim waits for the pod, so the pod goes.
				return &action{kind: actFinishWipe, target: b}
			}
			code := storeFailure(b.pod)
			reason, why, ok := o.resetGuard(b, true, now)
			lr := o.lastReset
			switch {
			case ok && code == 4:
				// A new volume of the same size fills again while the node catches up.
				reason, why, ok = "VolumeFull", "a new volume of the same size would fill again: expand the volume (spec.storage.size, where the storage class allows it) or free space", false
			case ok && claim == nil:
				reason, why, ok = "VolumeNotFound", "no volume claim with this cluster's labels was found for it", false
			case ok && lr != nil && lr.Node == b.name && lr.VolumeDeleted && claim.created.After(lr.Time.Time):
				// Its last volume was wiped and the new one (made after that) fails too:
				// the cause is not the data (a bad node, disk or storage class). A wipe
				// recorded but not carried out (its claim is older) may still be made.
				reason, why, ok = "FailsAfterWipe", "its volume was deleted at "+lr.Time.UTC().Format(time.RFC3339)+" and the new one fails too", false
			}
			if !ok {
				return &action{kind: actReport, target: b, reason: reason,
					why: fmt.Sprintf("%s %s (exit code %d); its volume is kept: %s", b.name, storeExitMeaning[code], code, why)}
			}
			return &action{kind: actWipeVolume, target: b, claim: claim.name, why: fmt.Sprintf("%s (exit code %d)", storeExitMeaning[code], code)}
		}
	}
	return nil
}

// storeExitMeaning says what each of mqttd's store exit codes means.
var storeExitMeaning = map[int32]string{
	3: "cannot open its store (an I/O error, a corrupt file or permissions)",
	4: "has no space left on its volume",
	5: "holds a store written by a newer mqttd",
}

// wipeInterval is the least time between a reset and the next volume wipe of a
// cluster: a node whose new volume fails again (a bad disk or storage class) is not
// wiped in a loop.
const wipeInterval = 10 * time.Minute

// resetGuard is the rule every automatic reset of b's store (volume: the deletion of
// its volume) passes, so that no single fault and no cluster-wide fault can make the
// operator delete data that was still good:
//   - the cluster's data is safe elsewhere: a quorum of the cluster's configuration
//     (the largest any healthy member reports), b left out, is healthy: joined, ready
//     and reachable. When every node fails the same way (a bad upgrade, a storage
//     outage), nothing is healthy and nothing is reset;
//   - one at a time: the node reset last has rejoined;
//   - volumes: at least wipeInterval since the last reset (and never the same node's
//     twice in a row, nor for a full volume: resetStale);
//   - never a node on the new template while a rolling update is in progress: the new
//     image may be what fails (revert the change; the pod is then replaced from the
//     old template, its volume kept).
func (o *observation) resetGuard(b *brokerPod, volume bool, now time.Time) (reason, why string, ok bool) {
	ref := o.healthyReference(b)
	if ref == nil {
		return "NoHealthyQuorum", "no other member is healthy to hold the cluster's data", false
	}
	// The largest configuration any healthy member reports: a member that lags
	// behind with an older, smaller one must not lower the bar.
	for _, p := range o.pods {
		if p != b && p.readyMember(o.clusterID) && p.view != nil && len(p.view.Members) > len(ref.view.Members) {
			ref = p
		}
	}
	healthy := 0
	for _, m := range ref.view.Members {
		if p := o.byName(m.Name); m.Reachable && p != nil && p != b && p.readyMember(o.clusterID) {
			healthy++
		}
	}
	if need := len(ref.view.Members)/2 + 1; healthy < need {
		return "NoHealthyQuorum", fmt.Sprintf("%d of the cluster's %d members other than %s are healthy (joined, ready and caught up, reachable), %d must be",
			healthy, len(ref.view.Members), b.name, need), false
	}
	if lr := o.lastReset; lr != nil {
		if p := o.byName(lr.Node); lr.Node != b.name && p != nil && !p.readyMember(o.clusterID) {
			return "ResetInProgress", fmt.Sprintf("%s, reset at %s, has not rejoined yet", lr.Node, lr.Time.UTC().Format(time.RFC3339)), false
		}
		if next := lr.Time.Add(wipeInterval); volume && now.Before(next) {
			return "ResetTooSoon", fmt.Sprintf("the last reset (%s) was at %s; the next volume may go at %s",
				lr.Node, lr.Time.UTC().Format(time.RFC3339), next.UTC().Format(time.RFC3339)), false
		}
	}
	if o.rolling() && !outdated(o.updateRevision, b.pod) {
		return "NewRevisionFailing", "it runs the new pod template of a rolling update, which may be what fails: revert the change to go back", false
	}
	return "", "", true
}

// healthyReference is the lowest ready member other than skip whose cluster view was
// read.
func (o *observation) healthyReference(skip *brokerPod) *brokerPod {
	for _, p := range o.pods {
		if p != skip && p.joined(o.clusterID) && p.node.Ready && p.view != nil {
			return p
		}
	}
	return nil
}

// byName is the observed pod named name, or nil.
func (o *observation) byName(name string) *brokerPod {
	for _, p := range o.pods {
		if p.name == name {
			return p
		}
	}
	return nil
}

// claimOf is ordinal k's data volume claim (one with the cluster's labels), or nil.
func (o *observation) claimOf(k int) *dataClaim {
	for i := range o.claims {
		if o.claims[i].ordinal == k {
			return &o.claims[i]
		}
	}
	return nil
}

// rolling reports whether a rolling update is in progress: some pod runs an older
// template.
func (o *observation) rolling() bool {
	for _, p := range o.pods {
		if outdated(o.updateRevision, p.pod) {
			return true
		}
	}
	return false
}

// storeFailureRestarts is how many restarts a store failure must last before the
// operator acts on it: with the kubelet's back-off (10 s doubling) about five minutes,
// so a short storage fault (a CSI driver restarting, a path failing over) never costs a
// volume.
const storeFailureRestarts = 5

// storeFailure is mqttd's store exit code (3, 4 or 5) when the broker container is
// down right now in a crash loop whose last exit had it and that has lasted
// storeFailureRestarts restarts, otherwise 0. A container that recovered keeps its
// last termination and restart count: it must be waiting now.
func storeFailure(pod *corev1.Pod) int32 {
	for _, cs := range pod.Status.ContainerStatuses {
		if cs.Name != resource.ContainerName {
			continue
		}
		t := cs.LastTerminationState.Terminated
		waiting := cs.State.Waiting != nil && cs.State.Waiting.Reason == "CrashLoopBackOff"
		if waiting && t != nil && storeExitMeaning[t.ExitCode] != "" && cs.RestartCount >= storeFailureRestarts {
			return t.ExitCode
		}
	}
	return 0
}

// bootstrap makes pod-0 create the cluster when no broker belongs to one yet, or
// records the cluster a member reports when the status does not know it yet.
func bootstrap(o *observation, _ time.Time) *action {
	if len(o.pods) == 0 {
		return nil
	}
	for _, b := range o.pods {
		if b.reachable() && b.node.StoreState == apiv1.StoreMember && (o.clusterID == "" || b.node.ClusterID == o.clusterID) {
			if o.clusterID == "" { // bootstrapped before the status was written
				return &action{kind: actAdoptCluster, target: b, clusterID: b.node.ClusterID}
			}
			return nil
		}
	}
	// Only when every wanted node answers and none holds a cluster: a node that does
	// not answer may hold one, and a second cluster must never start beside it.
	for _, b := range o.wanted() {
		if !b.reachable() || b.node.StoreState != apiv1.StoreEmpty {
			return nil
		}
	}
	a := &action{kind: actBootstrap, target: o.pods[0]}
	if o.clusterID != "" {
		a.why = fmt.Sprintf("no node holds cluster %s any more", o.clusterID)
	}
	return a
}

// joinNext joins the first wanted pod that is not a member yet (in ordinal order)
// through the lowest member, once every member shows in the cluster view of more than
// one member: the previous join is confirmed before the next.
func joinNext(o *observation, _ time.Time) *action {
	if o.clusterID == "" {
		return nil
	}
	members := o.members()
	for _, b := range o.wanted() {
		if b.joined(o.clusterID) {
			continue
		}
		if !b.reachable() || len(members) == 0 || !confirmed(members) {
			return nil // joins go in ordinal order: wait for this pod
		}
		return &action{kind: actJoin, target: b, via: members[0]}
	}
	return nil
}

// members is the observed members of the cluster, in ordinal order.
func (o *observation) members() []*brokerPod {
	var out []*brokerPod
	for _, b := range o.pods {
		if b.joined(o.clusterID) {
			out = append(out, b)
		}
	}
	return out
}

// confirmed reports whether every member is listed in the cluster view of more than
// one member (of the only one, while there is one).
func confirmed(members []*brokerPod) bool {
	seen := map[string]int{}
	for _, m := range members {
		if m.view == nil {
			return false // asked again on the next reconcile
		}
		for _, x := range m.view.Members {
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

// linked reports whether every one of pods sees every other one as a reachable member.
func linked(pods []*brokerPod) bool {
	for _, b := range pods {
		if b.view == nil {
			return false
		}
		for _, o := range pods {
			ok := false
			for _, m := range b.view.Members {
				ok = ok || (m.Name == o.name && m.Reachable)
			}
			if !ok {
				return false
			}
		}
	}
	return true
}

// settled reports whether nothing is in progress: every wanted pod is a ready member,
// the StatefulSet has its final size and runs the current template.
func (o *observation) settled() bool {
	if o.size != o.desired || len(o.pods) != o.desired {
		return false
	}
	for _, b := range o.pods {
		if !b.joined(o.clusterID) || !b.node.Ready || o.replaceable(b) {
			return false
		}
	}
	return true
}

// outdated reports whether pod runs an older template than revision, the
// StatefulSet's current one ("" while unknown: nothing is outdated).
func outdated(revision string, pod *corev1.Pod) bool {
	if pod == nil || revision == "" {
		return false
	}
	return pod.Labels[appsv1.ControllerRevisionHashLabelKey] != revision
}
