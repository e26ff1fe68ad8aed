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
)

// action is one decision: what to do, to whom, and why (for the event).
type action struct {
	kind      actionKind
	rule      string     // the rule that decided it
	target    *brokerPod // the node acted on
	via       *brokerPod // the member a join or a force-leave goes through
	clusterID string     // actAdoptCluster
	replicas  int        // actShrink
	claim     string     // actDeleteClaim
	why       string     // what the event says about the reason
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

// resetStale resets a node that reports a stale store, or whose pod crash-loops on a
// store it cannot open, and that the cluster still wants. A healthy member is never
// touched: the decision needs the broker's own report (or its exit code).
func resetStale(o *observation, _ time.Time) *action {
	for _, b := range o.wanted() { // a leaving node reports stale on purpose
		switch {
		case b.reachable() && b.node.StoreState == apiv1.StoreStale:
			return &action{kind: actResetStore, target: b, why: b.node.StaleReason}
		case b.pod != nil && !b.reachable() && crashLoopsOnStore(b.pod):
			return &action{kind: actWipeVolume, target: b}
		}
	}
	return nil
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
		if !b.joined(o.clusterID) || !b.node.Ready || outdated(o.updateRevision, b.pod) {
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
