package controllers

import (
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
)

// problemKind is one of the error classes of STYLE.md that is not a transient failure
// (those are returned as errors and retried with backoff).
type problemKind int

const (
	// invalidInput: the spec cannot be acted on (a missing Secret, a bad setting).
	// Degraded is set, a Warning event says why, and nothing is requeued: a change to
	// the cluster or to a watched Secret triggers the next try.
	invalidInput problemKind = iota
	// unsupportedChange: the spec asks for a change the operator cannot make (such as
	// resizing volumes); the last good state is kept and Degraded says why.
	unsupportedChange
	// refusedChange: the spec, or a Secret it names, asks for a change the operator
	// will not make while the cluster runs (a new cluster cookie): the setting in
	// force is kept, Degraded says why and how to make the change, and Ready is False
	// since what was asked is not in force.
	refusedChange
	// notInForce: the operator cannot put in force what the spec asks and cannot fix
	// that by itself (it is forbidden to write a child, a child it keeps cannot be
	// read). Degraded says why and Ready is False.
	notInForce
	// waitingOutside: the operator waits for something outside it (cert-manager issuing a
	// certificate). Ready is False and Progressing True with the reason; it is not
	// Degraded, since nothing is wrong yet.
	waitingOutside
	// needsAttention: the operator holds back an automatic action a person must decide
	// on (a volume it will not wipe while the cluster's data is not safe elsewhere).
	// Degraded says why; the reconcile goes on.
	needsAttention
)

// problem is one finding about the spec.
type problem struct {
	kind    problemKind
	reason  string // CamelCase, for the condition and the event
	message string
}

// report records a problem and emits its Warning event, once: a problem already in
// the Degraded condition is not announced again on every reconcile.
func (r *MQTTClusterReconciler) report(st *state, kind problemKind, reason, message string) {
	st.problems = append(st.problems, problem{kind: kind, reason: reason, message: message})
	if r.Recorder == nil {
		return
	}
	shownIn := v1alpha1.ConditionDegraded
	if kind == waitingOutside {
		shownIn = v1alpha1.ConditionProgressing // a wait is not Degraded
	}
	if c := meta.FindStatusCondition(st.cluster.Status.Conditions, shownIn); c != nil &&
		c.Status == metav1.ConditionTrue && strings.Contains(c.Message, message) {
		return
	}
	r.Recorder.Eventf(st.cluster, nil, corev1.EventTypeWarning, reason, "Reconcile", "%s", message)
}

// hasInvalidInput reports whether the spec could not be acted on.
func hasInvalidInput(problems []problem) bool { return len(ofKind(problems, invalidInput)) > 0 }

// ofKind returns the problems of one kind.
func ofKind(problems []problem, kind problemKind) []problem {
	var out []problem
	for _, p := range problems {
		if p.kind == kind {
			out = append(out, p)
		}
	}
	return out
}
