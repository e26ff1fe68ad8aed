package controllers

import (
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/mqtt-operator/mqtt-operator/controllers/resource"
)

// scaleDown removes the highest ordinal while the StatefulSet is larger than the spec:
// evacuate it, make it leave (or force-leave it when it is gone), check the members no
// longer list it, then shrink the StatefulSet by one. The StatefulSet's size is the
// record of progress, and each sub-step is read back from the brokers, so an operator
// restart resumes where it stopped; one node at a time keeps raft's quorum.
func scaleDown(o *observation, now time.Time) *action {
	if o.size <= o.desired || o.size > len(o.pods) {
		return nil
	}
	target := o.pods[o.size-1]
	if o.desired == 0 && o.size == 1 {
		// Scaling to zero: the last node has nowhere to move its clients and sessions
		// and no member to leave to. It stops, a member still, and its volume is kept
		// whatever the retention policy: it holds the cluster, which comes back from
		// it when the cluster is scaled up again.
		return &action{kind: actShrink, target: target, replicas: 0, why: "the last node stopped; its volume, with the cluster's data, is kept"}
	}
	ref := o.referenceMember(target.ordinal)
	if ref == nil {
		return nil // no member left to ask: wait
	}
	if target.joined(o.clusterID) {
		if !target.node.Evacuating {
			// One node at a time, and only from a whole cluster: with another member
			// down, removing this one could leave raft without a quorum.
			others := make([]*brokerPod, 0, len(o.pods))
			for _, b := range o.pods[:o.size] {
				if b.ordinal == target.ordinal {
					continue
				}
				if !b.joined(o.clusterID) || !b.node.Ready {
					return nil
				}
				others = append(others, b)
			}
			if !linked(others) {
				return nil
			}
			return &action{kind: actEvacuate, target: target, why: "scale-down"}
		}
		if target.evac == nil {
			return &action{kind: actFail, target: target, err: fmt.Errorf("evacuation of %s: %w", target.name, target.evacErr)}
		}
		if target.evac.State != "done" {
			if evacuationTimedOut(o.evacuationTimeout, target.pod, now) {
				// Its sessions would leave with it: report, and keep waiting.
				return &action{kind: actReport, target: target, reason: "EvacuationTimedOut",
					why: fmt.Sprintf("scale-down: %s has been evacuating for longer than podReadyTimeout (%s), %d of %d sessions moved; the scale-down waits (scale back up to cancel it)",
						target.name, o.evacuationTimeout, target.evac.Moved, target.evac.Sessions)}
			}
			return &action{kind: actWait, target: target} // in progress; a disconnect rate bounds it
		}
		return &action{kind: actLeave, target: target, why: fmt.Sprintf("%d sessions moved", target.evac.Moved)}
	}
	if ref.view == nil {
		return nil // asked again on the next reconcile
	}
	if ref.view.Has(target.name) {
		if target.reachable() || target.tokenRejected || target.certRejected {
			// Leaving; or alive but refusing every token the operator holds
			// (APITokenRejected), or answering with a certificate the operator does
			// not trust (APICertificateRejected): never force-left while it runs.
			return nil
		}
		// Gone without leaving (its pod is dead): remove it through a member.
		return &action{kind: actForceLeave, target: target, via: ref}
	}
	// Every other member that answers must see it gone too (each follows the raft
	// configuration on its own) before its pod goes.
	for _, b := range o.pods {
		if b == ref || b == target || !b.joined(o.clusterID) {
			continue
		}
		if b.view != nil && b.view.Has(target.name) {
			return &action{kind: actWait, target: target}
		}
	}
	return &action{kind: actShrink, target: target, replicas: o.size - 1}
}

// referenceMember is the lowest-ordinal member other than skip.
func (o *observation) referenceMember(skip int) *brokerPod {
	for _, b := range o.pods {
		if b.ordinal != skip && b.joined(o.clusterID) {
			return b
		}
	}
	return nil
}

// deleteScaledVolume deletes the volume of a node a scale-down removed, when the
// retention policy says so: only ordinals at or above both the StatefulSet's size and
// the spec's, whose pod is gone, and never ordinal 0's (after a scale to zero it holds
// the cluster). One volume per reconcile. The claims are the cluster's by their
// labels (observe), not by a name pattern.
func deleteScaledVolume(o *observation, _ time.Time) *action {
	if !o.deleteScaledVolumes {
		return nil
	}
	from := max(o.size, o.desired, 1)
	for _, c := range o.claims {
		if c.ordinal < from || c.deleting || (c.ordinal < len(o.pods) && o.pods[c.ordinal].pod != nil) {
			continue
		}
		return &action{kind: actDeleteClaim, claim: c.name}
	}
	return nil
}

// rollPods replaces pods that run an older template or a replaced API token, one at a time from the highest
// ordinal: evacuate, delete, and only go on once the replacement is a ready member. A
// pod stuck in a crash or image-pull loop is replaced at once: the safety checks
// could never pass for it. An evacuation that outlasts the pod timeout (counted from
// the pod's readiness change: evacuation makes it unready) is cut short.
func rollPods(o *observation, now time.Time) *action {
	if o.manualUpdate || o.updateRevision == "" {
		return nil
	}
	for i := len(o.pods) - 1; i >= 0; i-- {
		if b := o.pods[i]; b.pod != nil && o.replaceable(b) && stuck(b.pod) {
			return &action{kind: actReplacePod, target: b, why: "it is stuck in " + waitingReason(b.pod)}
		}
	}
	if o.size != o.desired || len(o.pods) != o.desired {
		return nil // scaling first
	}
	var evacuating *brokerPod
	for _, b := range o.pods {
		if !b.joined(o.clusterID) || !b.node.Ready {
			if b.reachable() && b.node.Evacuating && o.replaceable(b) && evacuating == nil {
				evacuating = b
				continue // the one being replaced
			}
			return nil // the cluster must be whole before the next pod goes
		}
	}
	if evacuating == nil && !linked(o.pods) {
		return nil // a replaced node is back but not linked to everyone yet
	}
	for i := len(o.pods) - 1; i >= 0; i-- {
		b := o.pods[i]
		if !o.replaceable(b) {
			continue
		}
		if o.referenceMember(b.ordinal) != nil {
			if !b.node.Evacuating {
				return &action{kind: actEvacuate, target: b, why: "rolling update"}
			}
			if b.evac == nil {
				return &action{kind: actFail, target: b, err: fmt.Errorf("evacuation of %s: %w", b.name, b.evacErr)}
			}
			if b.evac.State != "done" && !evacuationTimedOut(o.evacuationTimeout, b.pod, now) {
				return &action{kind: actWait, target: b}
			}
		}
		why := "it runs an older template"
		if !outdated(o.updateRevision, b.pod) {
			why = "it runs a replaced API token"
		}
		return &action{kind: actReplacePod, target: b, why: why}
	}
	return nil
}

// replaceable reports whether b's pod must be replaced for the spec to be in force:
// it runs an older template, or a replaced API token (a container restarted on a
// token since replaced again runs the current template but not the current token,
// and would never be outdated).
func (o *observation) replaceable(b *brokerPod) bool {
	return outdated(o.updateRevision, b.pod) || (b.pod != nil && b.staleToken)
}

// evacuationTimedOut reports whether pod has been unready for longer than timeout.
func evacuationTimedOut(timeout time.Duration, pod *corev1.Pod, now time.Time) bool {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady && c.Status == corev1.ConditionFalse {
			return now.Sub(c.LastTransitionTime.Time) > timeout
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
