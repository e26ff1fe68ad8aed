package controllers

import (
	"slices"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
	"github.com/mqtt-operator/mqtt-operator/controllers/brokerclient"
	res "github.com/mqtt-operator/mqtt-operator/controllers/resource"
)

func testCluster(replicas int32) *v1alpha1.MQTTCluster {
	return &v1alpha1.MQTTCluster{
		ObjectMeta: metav1.ObjectMeta{Name: "c", Namespace: "ns", Generation: 4},
		Spec:       v1alpha1.MQTTClusterSpec{Replicas: ptr.To(replicas)},
	}
}

func testSTS(generation, observed int64, replicas, ready int32) *appsv1.StatefulSet {
	return &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Generation: generation},
		Status:     appsv1.StatefulSetStatus{ObservedGeneration: observed, Replicas: replicas, ReadyReplicas: ready},
	}
}

func TestConditions(t *testing.T) {
	invalid := []problem{{kind: invalidInput, reason: "SecretNotFound", message: "no secret"}}
	unsupported := []problem{{kind: unsupportedChange, reason: "StorageResizeUnsupported", message: "no resize"}}
	notEnforced := []problem{{kind: notInForce, reason: "PrometheusOperatorNotInstalled", message: "spec.monitoring.enabled asks for a PodMonitor, but the Prometheus Operator's CRDs are not installed"}}
	notEnforcedAndInvalid := append([]problem{{kind: invalidInput, reason: "SecretNotFound", message: "no secret"}}, notEnforced...)
	type want struct {
		status metav1.ConditionStatus
		reason string
	}
	for _, tc := range []struct {
		name                                    string
		replicas                                int32
		members                                 int32 // joined and ready, as the brokers report
		sts                                     *appsv1.StatefulSet
		problems                                []problem
		ready, available, progressing, degraded want
	}{
		{"no statefulset yet", 3, 0, nil, nil,
			want{"False", "StatefulSetMissing"}, want{"False", "NoNodeReady"}, want{"False", "NotStarted"}, want{"False", "AsExpected"}},
		{"starting", 3, 0, testSTS(1, 1, 3, 0), nil,
			want{"False", "NodesNotReady"}, want{"False", "NoNodeReady"}, want{"True", "Reconciling"}, want{"False", "AsExpected"}},
		{"partly ready", 3, 2, testSTS(1, 1, 3, 2), nil,
			want{"False", "NodesNotReady"}, want{"True", "NodesReady"}, want{"True", "Reconciling"}, want{"False", "AsExpected"}},
		{"all ready", 3, 3, testSTS(1, 1, 3, 3), nil,
			want{"True", "AllNodesReady"}, want{"True", "NodesReady"}, want{"False", "Stable"}, want{"False", "AsExpected"}},
		{"statefulset controller behind", 3, 3, testSTS(2, 1, 3, 3), nil,
			want{"False", "NodesNotReady"}, want{"True", "NodesReady"}, want{"True", "Reconciling"}, want{"False", "AsExpected"}},
		{"scaling down", 2, 3, testSTS(2, 2, 3, 3), nil,
			want{"False", "NodesNotReady"}, want{"True", "NodesReady"}, want{"True", "Reconciling"}, want{"False", "AsExpected"}},
		{"invalid input", 3, 3, testSTS(1, 1, 3, 3), invalid,
			want{"False", "InvalidSpec"}, want{"True", "NodesReady"}, want{"False", "Stable"}, want{"True", "SecretNotFound"}},
		{"unsupported change keeps running", 3, 3, testSTS(1, 1, 3, 3), unsupported,
			want{"True", "AllNodesReady"}, want{"True", "NodesReady"}, want{"False", "Stable"}, want{"True", "StorageResizeUnsupported"}},
		{"feature not enforced: never Ready, however healthy", 3, 3, testSTS(1, 1, 3, 3), notEnforced,
			want{"False", "PrometheusOperatorNotInstalled"}, want{"True", "NodesReady"}, want{"False", "Stable"}, want{"True", "PrometheusOperatorNotInstalled"}},
		{"feature not enforced before the StatefulSet exists", 3, 0, nil, notEnforced,
			want{"False", "PrometheusOperatorNotInstalled"}, want{"False", "NoNodeReady"}, want{"False", "NotStarted"}, want{"True", "PrometheusOperatorNotInstalled"}},
		{"invalid input comes first", 3, 3, testSTS(1, 1, 3, 3), notEnforcedAndInvalid,
			want{"False", "InvalidSpec"}, want{"True", "NodesReady"}, want{"False", "Stable"}, want{"True", "SecretNotFound"}},
		{"pods ready, not all joined", 3, 1, testSTS(1, 1, 3, 3), nil,
			want{"False", "MembersNotJoined"}, want{"True", "NodesReady"}, want{"False", "Stable"}, want{"False", "AsExpected"}},
		{"zero replicas", 0, 0, testSTS(1, 1, 0, 0), nil,
			want{"True", "AllNodesReady"}, want{"False", "NoNodeReady"}, want{"False", "Stable"}, want{"False", "AsExpected"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mc := testCluster(tc.replicas)
			for _, c := range []struct {
				got  metav1.Condition
				want want
			}{
				{readyCondition(mc, tc.sts, tc.problems, joinedMembers(tc.members), true, 0), tc.ready},
				{availableCondition(tc.sts), tc.available},
				{progressingCondition(mc, tc.sts, nil), tc.progressing},
				{degradedCondition(tc.problems), tc.degraded},
			} {
				if c.got.Status != c.want.status || c.got.Reason != c.want.reason || c.got.Message == "" {
					t.Errorf("%s = %s/%s (%q), want %s/%s", c.got.Type, c.got.Status, c.got.Reason, c.got.Message, c.want.status, c.want.reason)
				}
			}
		})
	}
}

// joinedMembers returns n joined, ready members.
func joinedMembers(n int32) []v1alpha1.MemberStatus {
	out := make([]v1alpha1.MemberStatus, n)
	for i := range out {
		out[i] = v1alpha1.MemberStatus{Ordinal: int32(i), Joined: true, Ready: true, StoreState: "member"}
	}
	return out
}

func TestComputeStatus(t *testing.T) {
	mc := testCluster(3)
	st := computeStatus(mc, testSTS(1, 1, 3, 1), nil, nil)
	if st.ObservedGeneration != 4 || st.Replicas != 3 || st.ReadyReplicas != 1 ||
		st.Selector != "app.kubernetes.io/instance=c,app.kubernetes.io/name=mqttd" || len(st.Conditions) != 4 {
		t.Fatalf("status %+v", st)
	}
	for _, c := range st.Conditions {
		if c.ObservedGeneration != 4 {
			t.Fatalf("condition %s observed generation %d", c.Type, c.ObservedGeneration)
		}
	}
	// A condition that keeps its status keeps its transition time; one that flips
	// gets a new one.
	old := metav1.NewTime(time.Now().Add(-time.Hour).Truncate(time.Second))
	for i := range st.Conditions {
		st.Conditions[i].LastTransitionTime = old
	}
	mc.Status = st
	next := computeStatus(mc, testSTS(1, 1, 3, 3), nil, nil)
	if c := meta.FindStatusCondition(next.Conditions, v1alpha1.ConditionAvailable); !c.LastTransitionTime.Equal(&old) {
		t.Fatalf("Available did not change but its transition time did: %v", c.LastTransitionTime)
	}
	if c := meta.FindStatusCondition(next.Conditions, v1alpha1.ConditionReady); c.Status != metav1.ConditionTrue || c.LastTransitionTime.Equal(&old) {
		t.Fatalf("Ready flipped but kept its transition time: %+v", c)
	}
	if computeStatus(mc, nil, nil, nil).Replicas != 0 {
		t.Fatal("replicas without a StatefulSet")
	}
}

func TestStorageUnchanged(t *testing.T) {
	mc := testCluster(3)
	claim := func(size string) *appsv1.StatefulSet {
		return &appsv1.StatefulSet{Spec: appsv1.StatefulSetSpec{VolumeClaimTemplates: []corev1.PersistentVolumeClaim{{
			ObjectMeta: metav1.ObjectMeta{Name: res.DataVolume},
			Spec: corev1.PersistentVolumeClaimSpec{Resources: corev1.VolumeResourceRequirements{
				Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse(size)}}},
		}}}}
	}
	if _, _, ok := storageUnchanged(mc, claim("1Gi")); !ok {
		t.Fatal("default size reported as changed")
	}
	if _, _, ok := storageUnchanged(mc, claim("1024Mi")); !ok {
		t.Fatal("1024Mi is 1Gi")
	}
	mc.Spec.Storage.Size = ptr.To(resource.MustParse("2Gi"))
	reason, msg, ok := storageUnchanged(mc, claim("1Gi"))
	if ok || reason != "StorageResizeUnsupported" || msg == "" {
		t.Fatalf("resize: %s %q %v", reason, msg, ok)
	}
}

func TestReferencedSecrets(t *testing.T) {
	mc := testCluster(3)
	if refs := referencedSecrets(mc); len(refs) != 0 {
		t.Fatalf("refs of a plain cluster: %+v", refs)
	}
	mc.Spec.CookieSecretRef = &v1alpha1.SecretKeySelector{Name: "ck", Key: "k"}
	mc.Spec.Listeners = []v1alpha1.Listener{{Name: "mqtts", Port: 8883, TLSSecretName: "tls"}}
	mc.Spec.Auth = &v1alpha1.AuthSpec{UsersSecretRef: &corev1.LocalObjectReference{Name: "users"}}
	mc.Spec.Dashboard = v1alpha1.DashboardSpec{Enabled: true, AdminSecretRef: &corev1.LocalObjectReference{Name: "admin"}}
	var names []string
	for _, r := range referencedSecrets(mc) {
		names = append(names, r.name)
	}
	if len(names) != 4 || names[0] != "ck" || names[1] != "tls" || names[2] != "users" || names[3] != "admin" {
		t.Fatalf("referenced %v", names)
	}
}

func TestProgressingUpdatePending(t *testing.T) {
	mc := testCluster(3)
	sts := testSTS(2, 2, 3, 3)
	sts.Status.CurrentRevision, sts.Status.UpdateRevision, sts.Status.UpdatedReplicas = "r1", "r2", 1
	if c := progressingCondition(mc, sts, nil); c.Status != metav1.ConditionTrue || c.Reason != "UpdatePending" {
		t.Fatalf("old pods: %+v", c)
	}
	sts.Status.CurrentRevision, sts.Status.UpdatedReplicas = "r2", 3
	if c := progressingCondition(mc, sts, nil); c.Status != metav1.ConditionFalse || c.Reason != "Stable" {
		t.Fatalf("all updated: %+v", c)
	}
}

// TestReadyWaitsForCurrentPods: a healthy, joined cluster is not Ready while a pod runs
// an older template (its mqttd.yaml may still let anonymous clients in).
func TestReadyWaitsForCurrentPods(t *testing.T) {
	mc := testCluster(3)
	sts := testSTS(1, 1, 3, 3)
	if c := readyCondition(mc, sts, nil, joinedMembers(3), true, 1); c.Status != metav1.ConditionFalse || c.Reason != "SettingsPending" {
		t.Fatalf("one outdated pod: %s/%s, want False/SettingsPending", c.Status, c.Reason)
	}
	if c := readyCondition(mc, sts, nil, joinedMembers(3), true, 0); c.Status != metav1.ConditionTrue {
		t.Fatalf("no outdated pod: %s/%s, want True", c.Status, c.Reason)
	}
}

// TestReadyFailsClosedOnRefusedChange: a healthy, joined cluster is not Ready while
// the operator refuses a change it was asked for (a new cookie); a storage resize it
// cannot make keeps Ready as it was (the cluster runs as asked otherwise).
func TestReadyFailsClosedOnRefusedChange(t *testing.T) {
	mc := testCluster(3)
	sts := testSTS(1, 1, 3, 3)
	refused := []problem{{kind: refusedChange, reason: "CookieChangeRefused", message: "the cookie"}}
	if c := readyCondition(mc, sts, refused, joinedMembers(3), true, 0); c.Status != metav1.ConditionFalse || c.Reason != "CookieChangeRefused" || c.Message != "the cookie" {
		t.Fatalf("refused change: %+v, want False/CookieChangeRefused", c)
	}
	if c := degradedCondition(refused); c.Status != metav1.ConditionTrue || c.Reason != "CookieChangeRefused" {
		t.Fatalf("refused change: Degraded %+v", c)
	}
}

// TestOutdatedPodsCountsStaleTokens: a pod on the current template whose broker runs
// a replaced API token does not run what the spec asks for either.
func TestOutdatedPodsCountsStaleTokens(t *testing.T) {
	sts := testSTS(1, 1, 3, 3)
	sts.Status.UpdateRevision = currentRev
	lc := &lifecycle{observation: &observation{pods: []*brokerPod{bp(0), bp(1, func(b *brokerPod) { b.staleToken = true }), bp(2)}}, gathered: true}
	if n := outdatedPods(sts, lc); n != 1 {
		t.Fatalf("outdatedPods = %d, want 1", n)
	}
}

// TestMemberStatusesShowPartition: status.members carries what each broker reports of
// a partition: the members it cannot reach and why it is not ready; a broker that
// does not answer is "unknown", with nothing made up.
func TestMemberStatusesShowPartition(t *testing.T) {
	lc := &lifecycle{observation: &observation{clusterID: "c1", pods: []*brokerPod{
		{ordinal: 0, name: "mq-0", node: &brokerclient.Node{Name: "mq-0", ClusterID: "c1", StoreState: "member", Ready: true,
			Unreachable: []string{"mq-2"}}},
		{ordinal: 1, name: "mq-1", node: &brokerclient.Node{Name: "mq-1", ClusterID: "c1", StoreState: "member", Ready: true,
			Unreachable: []string{"mq-2"}}},
		{ordinal: 2, name: "mq-2", node: &brokerclient.Node{Name: "mq-2", ClusterID: "c1", StoreState: "member",
			NotReadyReason: "cut off from the majority: reaches 1 of 3 voters", Unreachable: []string{"mq-0", "mq-1"}}},
		{ordinal: 3, name: "mq-3"},
	}}}
	got := memberStatuses(lc)
	for i, want := range []struct {
		ready       bool
		reason      string
		unreachable []string
		state       string
	}{
		{true, "", []string{"mq-2"}, "member"},
		{true, "", []string{"mq-2"}, "member"},
		{false, "cut off from the majority: reaches 1 of 3 voters", []string{"mq-0", "mq-1"}, "member"},
		{false, "", nil, "unknown"},
	} {
		m := got[i]
		if m.Ready != want.ready || m.Reason != want.reason || !slices.Equal(m.Unreachable, want.unreachable) || m.StoreState != want.state {
			t.Errorf("member %d: %+v, want ready %v reason %q unreachable %v state %s", i, m, want.ready, want.reason, want.unreachable, want.state)
		}
	}
}
