package controllers

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
	"github.com/mqtt-operator/mqtt-operator/broker/apiv1"
	"github.com/mqtt-operator/mqtt-operator/controllers/brokerclient"
	"github.com/mqtt-operator/mqtt-operator/controllers/resource"
)

// The lifecycle's decisions as tables: observations built by hand, decide called
// with a fixed clock. The brokers' API handles are nil, so a rule that tried to call
// a broker would panic here.

const (
	testClusterID = "c1"
	currentRev    = "rev-new"
	olderRev      = "rev-old"
)

var testNow = time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)

// bp is a broker pod under test; the options change it from a ready member of
// testClusterID on the current template whose view lists every member.
type bpOpt func(*brokerPod)

func bp(k int, opts ...bpOpt) *brokerPod {
	name := fmt.Sprintf("mq-%d", k)
	b := &brokerPod{
		ordinal: k, name: name,
		pod:  &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{appsv1.ControllerRevisionHashLabelKey: currentRev}}},
		node: &brokerclient.Node{Name: name, ClusterID: testClusterID, StoreState: apiv1.StoreMember, Ready: true},
	}
	for _, o := range opts {
		o(b)
	}
	return b
}

func empty(b *brokerPod) { b.node.StoreState, b.node.ClusterID = apiv1.StoreEmpty, "" }
func stale(b *brokerPod) {
	b.node.StoreState, b.node.StaleReason = apiv1.StoreStale, "removed from cluster c1"
}
func notReady(b *brokerPod)    { b.node.Ready = false }
func unreachable(b *brokerPod) { b.node, b.err = nil, errors.New("connection refused") }
func noPod(b *brokerPod)       { b.pod = nil; unreachable(b) }
func older(b *brokerPod)       { b.pod.Labels[appsv1.ControllerRevisionHashLabelKey] = olderRev }
func noView(b *brokerPod)      { b.viewErr = errors.New("timeout") }
func staleTok(b *brokerPod)    { b.staleToken = true }

// lockedOut: the broker answers 401 to every token the operator holds.
func lockedOut(b *brokerPod) {
	b.node, b.err, b.tokenRejected = nil, &brokerclient.Error{Status: 401, Code: "unauthorized"}, true
}

// sees sets the broker's cluster view: the named ordinals, reachable.
func sees(ks ...int) bpOpt {
	return func(b *brokerPod) {
		b.view = &brokerclient.Cluster{ClusterID: testClusterID}
		for _, k := range ks {
			b.view.Members = append(b.view.Members, brokerclient.Member{Name: fmt.Sprintf("mq-%d", k), Reachable: true})
		}
	}
}

// seesDown marks ordinal k unreachable in the broker's view.
func seesDown(k int) bpOpt {
	return func(b *brokerPod) {
		for i := range b.view.Members {
			if b.view.Members[i].Name == fmt.Sprintf("mq-%d", k) {
				b.view.Members[i].Reachable = false
			}
		}
	}
}

func evacuating(state string, moved int) bpOpt {
	return func(b *brokerPod) {
		b.node.Evacuating, b.node.Ready = true, false
		b.evac = &brokerclient.Evacuation{State: state, Moved: moved}
	}
}

func evacStatusFails(b *brokerPod) {
	b.node.Evacuating, b.node.Ready, b.evacErr = true, false, errors.New("timeout")
}

// unreadySince sets the pod's Ready condition False since d before testNow.
func unreadySince(d time.Duration) bpOpt {
	return func(b *brokerPod) {
		b.pod.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionFalse,
			LastTransitionTime: metav1.NewTime(testNow.Add(-d))}}
	}
}

// waiting puts the broker container in a waiting state after exits with code.
func waiting(reason string, code int32, restarts int32) bpOpt {
	return func(b *brokerPod) {
		cs := corev1.ContainerStatus{Name: resource.ContainerName, RestartCount: restarts,
			State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason}}}
		if code >= 0 {
			cs.LastTerminationState.Terminated = &corev1.ContainerStateTerminated{ExitCode: code}
		}
		b.pod.Status.ContainerStatuses = []corev1.ContainerStatus{cs}
	}
}

// runningAfter: the container runs again after it exited with code.
func runningAfter(code int32) bpOpt {
	return func(b *brokerPod) {
		b.pod.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: resource.ContainerName, RestartCount: 5,
			State:                corev1.ContainerState{Running: &corev1.ContainerStateRunning{}},
			LastTerminationState: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: code}}}}
	}
}

// obs is an observation of a cluster that wants desired nodes with a StatefulSet of
// size; a member without an explicit view sees every member reachable.
func obs(desired, size int, pods ...*brokerPod) *observation {
	o := &observation{desired: desired, size: size, updateRevision: currentRev, evacuationTimeout: 10 * time.Minute,
		deleteScaledVolumes: true, clusterID: testClusterID, pods: pods}
	var all []int
	for _, b := range pods {
		if b.joined(testClusterID) {
			all = append(all, b.ordinal)
		}
	}
	for _, b := range pods {
		if b.reachable() && b.view == nil && b.viewErr == nil {
			if b.joined(testClusterID) {
				sees(all...)(b)
			} else {
				b.viewErr = errors.New("not a member")
			}
		}
	}
	return o
}

func withClaims(o *observation, ordinals ...int) *observation {
	for _, k := range ordinals {
		o.claims = append(o.claims, dataClaim{name: fmt.Sprintf("data-mq-%d", k), ordinal: k})
	}
	return o
}

type decideCase struct {
	name   string
	obs    *observation
	now    time.Time
	kind   actionKind
	target int // ordinal acted on (-1: none)
	via    int // -1: none
	check  func(t *testing.T, a action)
}

func runDecide(t *testing.T, cases []decideCase) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			now := c.now
			if now.IsZero() {
				now = testNow
			}
			a := decide(c.obs, now)
			if a.kind != c.kind {
				t.Fatalf("action %v (rule %q, err %v), want %v", a.kind, a.rule, a.err, c.kind)
			}
			got := -1
			if a.target != nil {
				got = a.target.ordinal
			}
			if c.kind != actNone && c.kind != actDeleteClaim && got != c.target {
				t.Fatalf("target %d, want %d", got, c.target)
			}
			gotVia := -1
			if a.via != nil {
				gotVia = a.via.ordinal
			}
			if (c.kind == actJoin || c.kind == actForceLeave) && gotVia != c.via {
				t.Fatalf("via %d, want %d", gotVia, c.via)
			}
			if c.check != nil {
				c.check(t, a)
			}
		})
	}
}

func TestDecideSettledClusterDoesNothing(t *testing.T) {
	o := obs(3, 3, bp(0), bp(1), bp(2))
	if a := decide(o, testNow); a.kind != actNone {
		t.Fatalf("a whole cluster got action %v from rule %s", a.kind, a.rule)
	}
	if !o.settled() {
		t.Fatal("a whole cluster on the current template is not settled")
	}
	for name, o := range map[string]*observation{
		"a member not ready":  obs(3, 3, bp(0), bp(1), bp(2, notReady)),
		"a pod outdated":      obs(3, 3, bp(0), bp(1), bp(2, older)),
		"scaling down":        obs(2, 3, bp(0), bp(1), bp(2)),
		"a pod not yet there": obs(3, 3, bp(0), bp(1), bp(2, noPod)),
	} {
		if o.settled() {
			t.Errorf("%s: settled", name)
		}
	}
}

func TestDecideStaleStores(t *testing.T) {
	runDecide(t, []decideCase{
		{name: "a wanted node reporting a stale store is reset",
			obs: obs(3, 3, bp(0), bp(1, stale), bp(2)), kind: actResetStore, target: 1,
			check: func(t *testing.T, a action) {
				if a.why != "removed from cluster c1" {
					t.Errorf("reason %q", a.why)
				}
			}},
		{name: "a leaving node reporting stale is not reset (it left on purpose)",
			obs: obs(2, 3, bp(0, sees(0, 1)), bp(1, sees(0, 1)), bp(2, stale)), kind: actShrink, target: 2},
		{name: "an unreachable pod crash-looping on the store's exit code loses its volume",
			obs: withClaims(obs(3, 3, bp(0), bp(1), bp(2, unreachable, waiting("CrashLoopBackOff", 3, storeFailureRestarts))), 0, 1, 2), kind: actWipeVolume, target: 2,
			check: func(t *testing.T, a action) {
				if a.claim != "data-mq-2" {
					t.Errorf("claim %q", a.claim)
				}
			}},
		{name: "never wipe a member that answers, whatever its pod status says",
			obs: obs(3, 3, bp(0), bp(1), bp(2, waiting("CrashLoopBackOff", 3, storeFailureRestarts))), kind: actNone},
		{name: "a crash loop with another exit code is not a store problem",
			obs: obs(3, 3, bp(0), bp(1), bp(2, unreachable, waiting("CrashLoopBackOff", 1, storeFailureRestarts))), kind: actNone},
		{name: "a failure shorter than storeFailureRestarts restarts may be a passing storage fault: nothing yet",
			obs: withClaims(obs(3, 3, bp(0), bp(1), bp(2, unreachable, waiting("CrashLoopBackOff", 3, storeFailureRestarts-1))), 0, 1, 2), kind: actNone},
		{name: "a container that runs again keeps its last exit code but is not wiped",
			obs: obs(3, 3, bp(0), bp(1), bp(2, unreachable, runningAfter(3))), kind: actNone},
		{name: "a leaving node crash-looping on its store is not wiped",
			obs:  obs(2, 3, bp(0, sees(0, 1, 2)), bp(1), bp(2, unreachable, waiting("CrashLoopBackOff", 3, storeFailureRestarts))),
			kind: actForceLeave, target: 2, via: 0},
		{name: "the lowest stale ordinal first",
			obs: obs(5, 5, bp(0, sees(0, 1, 2, 3, 4)), bp(1, stale), bp(2, stale), bp(3), bp(4)), kind: actResetStore, target: 1},
	})
}

// TestDecideResetGuards: every reset of a store and every volume wipe needs the
// cluster's data safe elsewhere (a healthy quorum of the configuration without the
// node), one at a time, an interval between volume wipes, and never a node on the new
// template during a roll. Otherwise a person is asked (Degraded), and nothing is done.
func TestDecideResetGuards(t *testing.T) {
	loops := func(code int32) bpOpt { return waiting("CrashLoopBackOff", code, storeFailureRestarts) }
	all3 := sees(0, 1, 2)
	reset := func(node string, ago time.Duration, volume bool) func(*observation) *observation {
		return func(o *observation) *observation {
			o.lastReset = &v1alpha1.StoreReset{Node: node, Time: metav1.NewTime(testNow.Add(-ago)), VolumeDeleted: volume}
			return o
		}
	}
	rollingTo := func(o *observation) *observation { o.updateRevision = "rev-newer"; return o }
	newer := func(b *brokerPod) { b.pod.Labels[appsv1.ControllerRevisionHashLabelKey] = "rev-newer" }
	wants := func(reason string) func(t *testing.T, a action) {
		return func(t *testing.T, a action) {
			t.Helper()
			if a.reason != reason {
				t.Errorf("reason %q (%s), want %q", a.reason, a.why, reason)
			}
		}
	}
	runDecide(t, []decideCase{
		{name: "every node crash-looping on its store at once (a bad upgrade, a storage outage): no volume goes",
			obs:  withClaims(obs(3, 3, bp(0, unreachable, loops(3)), bp(1, unreachable, loops(3)), bp(2, unreachable, loops(3))), 0, 1, 2),
			kind: actReport, target: 0, check: wants("NoHealthyQuorum")},
		{name: "two of three crash-looping: the one left is not a quorum, no volume goes",
			obs:  withClaims(obs(3, 3, bp(0, all3), bp(1, unreachable, loops(3)), bp(2, unreachable, loops(3))), 0, 1, 2),
			kind: actReport, target: 1, check: wants("NoHealthyQuorum")},
		{name: "one crash-looping, two healthy members: its volume goes",
			obs:  withClaims(obs(3, 3, bp(0, all3), bp(1, all3), bp(2, unreachable, loops(3))), 0, 1, 2),
			kind: actWipeVolume, target: 2},
		{name: "a store too new for this mqttd is a store failure too",
			obs:  withClaims(obs(3, 3, bp(0, all3), bp(1, all3), bp(2, unreachable, loops(5))), 0, 1, 2),
			kind: actWipeVolume, target: 2,
			check: func(t *testing.T, a action) {
				if !strings.Contains(a.why, "written by a newer mqttd") {
					t.Errorf("why %q", a.why)
				}
			}},
		{name: "a full volume is never wiped: a new one of the same size fills again",
			obs:  withClaims(obs(3, 3, bp(0, all3), bp(1, all3), bp(2, unreachable, loops(4))), 0, 1, 2),
			kind: actReport, target: 2, check: wants("VolumeFull")},
		{name: "a lagging member with an older, smaller configuration does not lower the bar",
			obs:  withClaims(obs(5, 5, bp(0, sees(0, 1)), bp(1, sees(0, 1, 2, 3, 4)), bp(2, unreachable, loops(3)), bp(3, unreachable, loops(3)), bp(4, unreachable, loops(3))), 0, 1, 2, 3, 4),
			kind: actReport, target: 2, check: wants("NoHealthyQuorum")},
		{name: "a volume already being deleted: its pod goes, so the claim can",
			obs: func() *observation {
				o := obs(3, 3, bp(0, all3), bp(1, all3), bp(2, unreachable, loops(3)))
				o.claims = []dataClaim{{name: "data-mq-2", ordinal: 2, deleting: true}}
				return o
			}(),
			kind: actFinishWipe, target: 2},
		{name: "a pod being deleted is left to go",
			obs: func() *observation {
				o := withClaims(obs(3, 3, bp(0, all3), bp(1, all3), bp(2, unreachable, loops(3))), 0, 1, 2)
				now := metav1.NewTime(testNow)
				o.pods[2].pod.DeletionTimestamp = &now
				return o
			}(),
			kind: actNone},
		{name: "a healthy member that does not see the others reachable does not count",
			obs:  withClaims(obs(3, 3, bp(0, all3, seesDown(1)), bp(1, all3), bp(2, unreachable, loops(3))), 0, 1, 2),
			kind: actReport, target: 2, check: wants("NoHealthyQuorum")},
		{name: "a stale node with two healthy members is reset",
			obs: obs(3, 3, bp(0, all3), bp(1, all3), bp(2, stale)), kind: actResetStore, target: 2},
		{name: "every node stale: none is reset",
			obs:  obs(3, 3, bp(0, stale), bp(1, stale), bp(2, stale)),
			kind: actReport, target: 0, check: wants("NoHealthyQuorum")},
		{name: "the only node stale: nobody else holds the data, it is kept",
			obs: obs(1, 1, bp(0, stale)), kind: actReport, target: 0, check: wants("NoHealthyQuorum")},
		{name: "a node that left the configuration is reset against the members that remain (scaling up again)",
			obs: obs(3, 3, bp(0, sees(0)), bp(1, stale), bp(2, empty)), kind: actResetStore, target: 1},
		{name: "one at a time: the node reset last has not rejoined",
			obs:  reset("mq-1", time.Hour, false)(obs(5, 5, bp(0, sees(0, 1, 2, 3, 4)), bp(1, empty), bp(2, stale), bp(3), bp(4))),
			kind: actReport, target: 2, check: wants("ResetInProgress")},
		{name: "one at a time: once it rejoined, the next",
			obs:  reset("mq-1", time.Minute, false)(obs(5, 5, bp(0, sees(0, 1, 2, 3, 4)), bp(1), bp(2, stale), bp(3), bp(4))),
			kind: actResetStore, target: 2},
		{name: "volumes: not within the interval after the last reset",
			obs:  reset("mq-1", wipeInterval-time.Minute, true)(withClaims(obs(3, 3, bp(0, all3), bp(1, all3), bp(2, unreachable, loops(3))), 0, 1, 2)),
			kind: actReport, target: 2, check: wants("ResetTooSoon")},
		{name: "volumes: the same node failing again on its new volume is never wiped again (the cause is not the data)",
			obs: func() *observation {
				o := reset("mq-2", 2*wipeInterval, true)(withClaims(obs(3, 3, bp(0, all3), bp(1, all3), bp(2, unreachable, loops(3))), 0, 1, 2))
				o.claims[2].created = testNow.Add(-wipeInterval) // made after the wipe
				return o
			}(),
			kind: actReport, target: 2, check: wants("FailsAfterWipe")},
		{name: "volumes: a wipe recorded but not carried out (the claim predates it) may be made once the interval passed",
			obs: func() *observation {
				o := reset("mq-2", 2*wipeInterval, true)(withClaims(obs(3, 3, bp(0, all3), bp(1, all3), bp(2, unreachable, loops(3))), 0, 1, 2))
				o.claims[2].created = testNow.Add(-24 * time.Hour)
				return o
			}(),
			kind: actWipeVolume, target: 2},
		{name: "volumes: after the interval",
			obs:  reset("mq-1", wipeInterval+time.Minute, true)(withClaims(obs(3, 3, bp(0, all3), bp(1, all3), bp(2, unreachable, loops(3))), 0, 1, 2)),
			kind: actWipeVolume, target: 2},
		{name: "a rolling update whose new template fails on the store: no wipe, a person decides",
			obs:  rollingTo(withClaims(obs(3, 3, bp(0, all3), bp(1, all3), bp(2, newer, unreachable, loops(3))), 0, 1, 2)),
			kind: actReport, target: 2, check: wants("NewRevisionFailing")},
		{name: "the change reverted: the failing pod now runs an older template and is replaced, its volume kept",
			obs:  withClaims(obs(3, 3, bp(0, all3), bp(1, all3), bp(2, older, unreachable, loops(3))), 0, 1, 2),
			kind: actReplacePod, target: 2},
		{name: "a volume claim without the cluster's labels is never deleted",
			obs:  obs(3, 3, bp(0, all3), bp(1, all3), bp(2, unreachable, loops(3))),
			kind: actReport, target: 2, check: wants("VolumeNotFound")},
	})
}

func TestDecideBootstrap(t *testing.T) {
	fresh := func(mod ...func(*observation)) *observation {
		o := obs(3, 3, bp(0, empty), bp(1, empty), bp(2, empty))
		o.clusterID = ""
		for _, m := range mod {
			m(o)
		}
		return o
	}
	runDecide(t, []decideCase{
		{name: "every wanted node answers with an empty store: pod-0 bootstraps",
			obs: fresh(), kind: actBootstrap, target: 0,
			check: func(t *testing.T, a action) {
				if a.why != "" {
					t.Errorf("a first bootstrap is not a recreation: %q", a.why)
				}
			}},
		{name: "a node that does not answer may hold a cluster: wait",
			obs: fresh(func(o *observation) { unreachable(o.pods[2]) }), kind: actNone},
		{name: "a node not yet created: wait",
			obs: fresh(func(o *observation) { noPod(o.pods[1]) }), kind: actNone},
		{name: "a node holding another cluster: never start a second one beside it",
			obs: fresh(func(o *observation) {
				o.pods[1].node.StoreState, o.pods[1].node.ClusterID = apiv1.StoreMember, "c2"
				o.clusterID = "c1"
			}),
			kind: actNone},
		{name: "a member the status does not know yet: its cluster is recorded",
			obs:  fresh(func(o *observation) { o.pods[0].node.StoreState, o.pods[0].node.ClusterID = apiv1.StoreMember, "c9" }),
			kind: actAdoptCluster, target: 0,
			check: func(t *testing.T, a action) {
				if a.clusterID != "c9" {
					t.Errorf("adopted %q", a.clusterID)
				}
			}},
		{name: "every node lost the recorded cluster: bootstrap again, loudly",
			obs: fresh(func(o *observation) { o.clusterID = "c1" }), kind: actBootstrap, target: 0,
			check: func(t *testing.T, a action) {
				if a.why != "no node holds cluster c1 any more" {
					t.Errorf("reason %q", a.why)
				}
			}},
		{name: "a stale node before any cluster exists: nobody holds data to reset it against, a person decides; nothing is bootstrapped",
			obs: fresh(func(o *observation) { stale(o.pods[1]) }), kind: actReport, target: 1},
		{name: "nodes beyond the wanted ones are not waited for",
			obs: func() *observation { o := fresh(); o.desired = 2; return o }(), kind: actBootstrap, target: 0},
	})
}

func TestDecideJoin(t *testing.T) {
	runDecide(t, []decideCase{
		{name: "the next empty pod joins through the lowest member",
			obs: obs(3, 3, bp(0), bp(1, empty), bp(2, empty)), kind: actJoin, target: 1, via: 0},
		{name: "the previous join is confirmed by two members' views before the next",
			obs: obs(3, 3, bp(0, sees(0)), bp(1, sees(0, 1)), bp(2, empty)), kind: actNone},
		{name: "confirmed: the next one joins",
			obs: obs(3, 3, bp(0, sees(0, 1)), bp(1, sees(0, 1)), bp(2, empty)), kind: actJoin, target: 2, via: 0},
		{name: "a member whose view cannot be read: wait",
			obs: obs(3, 3, bp(0, noView), bp(1, empty), bp(2, empty)), kind: actNone},
		{name: "joins go in ordinal order: wait for an unreachable pod",
			obs: obs(3, 3, bp(0), bp(1, unreachable), bp(2, empty)), kind: actNone},
		{name: "the seed is the lowest member, not pod-0",
			obs: obs(3, 3, bp(0, empty), bp(1), bp(2)), kind: actJoin, target: 0, via: 1},
		{name: "joins before a scale-down",
			obs: obs(3, 4, bp(0), bp(1), bp(2, empty), bp(3)), kind: actJoin, target: 2, via: 0},
	})
}

func TestDecideScaleDown(t *testing.T) {
	runDecide(t, []decideCase{
		{name: "the highest ordinal is evacuated first",
			obs: obs(2, 3, bp(0), bp(1), bp(2)), kind: actEvacuate, target: 2,
			check: func(t *testing.T, a action) {
				if a.why != "scale-down" {
					t.Errorf("reason %q", a.why)
				}
			}},
		{name: "not while another member is not ready (quorum)",
			obs: obs(2, 3, bp(0), bp(1, notReady), bp(2)), kind: actNone},
		{name: "not while the others are not linked",
			obs: obs(2, 3, bp(0, sees(0, 1, 2), seesDown(1)), bp(1), bp(2)), kind: actNone},
		{name: "an evacuation in progress is waited for",
			obs: obs(2, 3, bp(0), bp(1), bp(2, evacuating("running", 3))), kind: actWait, target: 2},
		{name: "an evacuation done: the node leaves",
			obs: obs(2, 3, bp(0), bp(1), bp(2, evacuating("done", 7))), kind: actLeave, target: 2,
			check: func(t *testing.T, a action) {
				if a.why != "7 sessions moved" {
					t.Errorf("reason %q", a.why)
				}
			}},
		{name: "an evacuation status that cannot be read is an error",
			obs: obs(2, 3, bp(0), bp(1), bp(2, evacStatusFails)), kind: actFail, target: 2},
		{name: "left but still listed by the reference member: wait",
			obs: obs(2, 3, bp(0, sees(0, 1, 2)), bp(1), bp(2, stale)), kind: actNone},
		{name: "gone without leaving: force-leave through the lowest member",
			obs: obs(2, 3, bp(0, sees(0, 1, 2)), bp(1), bp(2, noPod)), kind: actForceLeave, target: 2, via: 0},
		{name: "alive but refusing every token: never force-left",
			obs: obs(2, 3, bp(0, sees(0, 1, 2)), bp(1), bp(2, lockedOut)), kind: actNone},
		{name: "the reference member's view cannot be read: wait",
			obs: obs(2, 3, bp(0, noView), bp(1), bp(2, noPod)), kind: actNone},
		{name: "another member still lists it: wait",
			obs: obs(2, 3, bp(0, sees(0, 1)), bp(1, sees(0, 1, 2)), bp(2, stale)), kind: actWait, target: 2},
		{name: "nobody lists it: the StatefulSet shrinks by one",
			obs: obs(2, 3, bp(0, sees(0, 1)), bp(1, sees(0, 1)), bp(2, stale)), kind: actShrink, target: 2,
			check: func(t *testing.T, a action) {
				if a.replicas != 2 {
					t.Errorf("replicas %d", a.replicas)
				}
			}},
		{name: "resumes after an operator restart: the StatefulSet's size says where it was",
			obs: obs(2, 4, bp(0, sees(0, 1, 2)), bp(1, sees(0, 1, 2)), bp(2), bp(3, noPod)), kind: actShrink, target: 3,
			check: func(t *testing.T, a action) {
				if a.replicas != 3 {
					t.Errorf("replicas %d", a.replicas)
				}
			}},
		{name: "resumes mid-evacuation after a restart",
			obs: obs(2, 4, bp(0), bp(1), bp(2), bp(3, evacuating("running", 1))), kind: actWait, target: 3},
		{name: "no member left to ask: wait",
			obs: obs(1, 2, bp(0, unreachable), bp(1)), kind: actNone},
		{name: "scaling to zero goes through the other nodes first, highest first",
			obs: obs(0, 3, bp(0), bp(1), bp(2)), kind: actEvacuate, target: 2},
		{name: "scaling to zero: the last node stops, a member still (its volume holds the cluster)",
			obs: obs(0, 1, bp(0)), kind: actShrink, target: 0,
			check: func(t *testing.T, a action) {
				if a.replicas != 0 {
					t.Errorf("replicas %d", a.replicas)
				}
			}},
		{name: "an evacuation past podReadyTimeout is reported, and the scale-down waits (its sessions would go with it)",
			obs:  obs(2, 3, bp(0), bp(1), bp(2, evacuating("running", 3), unreadySince(11*time.Minute))),
			kind: actReport, target: 2,
			check: func(t *testing.T, a action) {
				if a.reason != "EvacuationTimedOut" {
					t.Errorf("reason %q", a.reason)
				}
			}},
		{name: "pods not observed up to the StatefulSet's size: wait",
			obs: obs(2, 3, bp(0), bp(1)), kind: actNone},
	})
}

func TestDecideScaledVolumes(t *testing.T) {
	retain := obs(3, 3, bp(0), bp(1), bp(2))
	retain.deleteScaledVolumes = false
	deleting := obs(3, 3, bp(0), bp(1), bp(2))
	deleting.claims = []dataClaim{{name: "data-mq-3", ordinal: 3, deleting: true}}
	runDecide(t, []decideCase{
		{name: "the volume of a removed ordinal goes (whenScaled: Delete)",
			obs: withClaims(obs(3, 3, bp(0), bp(1), bp(2)), 0, 1, 2, 3), kind: actDeleteClaim,
			check: func(t *testing.T, a action) {
				if a.claim != "data-mq-3" {
					t.Errorf("claim %q", a.claim)
				}
			}},
		{name: "never the volume of a wanted ordinal",
			obs: withClaims(obs(3, 3, bp(0), bp(1), bp(2, noPod)), 0, 1, 2), kind: actNone},
		{name: "never while the StatefulSet still has that ordinal",
			obs: withClaims(obs(2, 3, bp(0, sees(0, 1)), bp(1, sees(0, 1)), bp(2, evacuating("running", 0))), 2), kind: actWait, target: 2},
		{name: "never while its pod still exists",
			obs: withClaims(obs(3, 3, bp(0), bp(1), bp(2), bp(3, unreachable)), 3), kind: actNone},
		{name: "kept when the policy says Retain",
			obs: withClaims(retain, 3), kind: actNone},
		{name: "one already being deleted is left alone",
			obs: deleting, kind: actNone},
		{name: "scaled to zero: ordinal 0's volume is kept, the others go",
			obs: withClaims(obs(0, 0), 0, 1), kind: actDeleteClaim,
			check: func(t *testing.T, a action) {
				if a.claim != "data-mq-1" {
					t.Errorf("claim %q", a.claim)
				}
			}},
		{name: "scaled to zero: never ordinal 0's",
			obs: withClaims(obs(0, 0), 0), kind: actNone},
	})
}

func TestDecideRollingUpdate(t *testing.T) {
	manual := obs(3, 3, bp(0), bp(1), bp(2, older))
	manual.manualUpdate = true
	unknownRev := obs(3, 3, bp(0), bp(1), bp(2, older))
	unknownRev.updateRevision = ""
	runDecide(t, []decideCase{
		{name: "the highest outdated pod is evacuated",
			obs: obs(3, 3, bp(0, older), bp(1), bp(2, older)), kind: actEvacuate, target: 2,
			check: func(t *testing.T, a action) {
				if a.why != "rolling update" {
					t.Errorf("reason %q", a.why)
				}
			}},
		{name: "its evacuation is waited for",
			obs: obs(3, 3, bp(0), bp(1), bp(2, older, evacuating("running", 0), unreadySince(time.Minute))), kind: actWait, target: 2},
		{name: "an evacuation past the pod timeout is cut short",
			obs: obs(3, 3, bp(0), bp(1), bp(2, older, evacuating("running", 0), unreadySince(11*time.Minute))), kind: actReplacePod, target: 2},
		{name: "the clock decides the timeout, not the wall clock",
			obs: obs(3, 3, bp(0), bp(1), bp(2, older, evacuating("running", 0), unreadySince(11*time.Minute))),
			now: testNow.Add(-2 * time.Minute), kind: actWait, target: 2},
		{name: "an evacuation done: the pod is replaced",
			obs: obs(3, 3, bp(0), bp(1), bp(2, older, evacuating("done", 4))), kind: actReplacePod, target: 2},
		{name: "a stuck outdated pod is replaced at once, whole cluster or not",
			obs: obs(3, 3, bp(0), bp(1, older, unreachable, waiting("ImagePullBackOff", -1, 0)), bp(2, notReady)), kind: actReplacePod, target: 1},
		{name: "not while another member is not ready",
			obs: obs(3, 3, bp(0), bp(1, notReady), bp(2, older)), kind: actNone},
		{name: "not while a replaced node is not linked to everyone",
			obs: obs(3, 3, bp(0, sees(0, 1, 2), seesDown(1)), bp(1), bp(2, older)), kind: actNone},
		{name: "an evacuating node on the current template is not the one being replaced",
			obs: obs(3, 3, bp(0), bp(1, evacuating("running", 0)), bp(2, older)), kind: actNone},
		{name: "the only node is replaced without evacuation (nowhere to move to)",
			obs: obs(1, 1, bp(0, older)), kind: actReplacePod, target: 0},
		{name: "Manual update strategy: nothing is replaced",
			obs: manual, kind: actNone},
		{name: "the StatefulSet's revision not known yet: nothing is outdated",
			obs: unknownRev, kind: actNone},
		{name: "a scale-down goes before the roll",
			obs: obs(2, 3, bp(0, older), bp(1, older), bp(2, older)), kind: actEvacuate, target: 2,
			check: func(t *testing.T, a action) {
				if a.rule != "scaleDown" {
					t.Errorf("rule %s", a.rule)
				}
			}},
		{name: "an evacuation status that cannot be read is an error",
			obs: obs(3, 3, bp(0), bp(1), bp(2, older, evacStatusFails)), kind: actFail, target: 2},
		{name: "a pod on the current template running a replaced API token is evacuated",
			obs: obs(3, 3, bp(0), bp(1, staleTok), bp(2)), kind: actEvacuate, target: 1},
		{name: "then replaced",
			obs: obs(3, 3, bp(0), bp(1, staleTok, evacuating("done", 2)), bp(2)), kind: actReplacePod, target: 1,
			check: func(t *testing.T, a action) {
				if a.why != "it runs a replaced API token" {
					t.Errorf("reason %q", a.why)
				}
			}},
	})
}

// TestDecideOneRuleWins: the rules' order is the precedence, and each observation
// gets exactly one action from the first rule that has one.
func TestDecideOneRuleWins(t *testing.T) {
	o := obs(2, 3, bp(0), bp(1, stale), bp(2))
	if a := decide(o, testNow); a.rule != "resetStale" || a.kind != actResetStore {
		t.Fatalf("rule %s action %v (%s): a stale wanted store goes before the scale-down", a.rule, a.kind, a.why)
	}
	var names []string
	for _, r := range lifecycleRules {
		names = append(names, r.name)
	}
	want := "[resetStale bootstrap joinNext scaleDown deleteScaledVolume rollPods]"
	if fmt.Sprint(names) != want {
		t.Fatalf("rules %v, want %s", names, want)
	}
}
