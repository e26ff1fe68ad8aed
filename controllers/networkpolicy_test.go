package controllers_test

import (
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
	res "github.com/mqtt-operator/mqtt-operator/controllers/resource"
)

// ingressRule is one rule of a NetworkPolicy reduced to what the tests compare: its
// ports and who it admits ("*" for everyone).
type ingressRule struct {
	ports []int32
	from  string
}

// ingressRules reduces the policy's rules to ingressRule values.
func ingressRules(np *networkingv1.NetworkPolicy, mc *v1alpha1.MQTTCluster) []ingressRule {
	var out []ingressRule
	for _, r := range np.Spec.Ingress {
		var ir ingressRule
		for _, p := range r.Ports {
			ir.ports = append(ir.ports, p.Port.IntVal)
		}
		switch {
		case len(r.From) == 0:
			ir.from = "*"
		case len(r.From) == 1 && r.From[0].NamespaceSelector == nil &&
			equalLabels(r.From[0].PodSelector, res.SelectorLabels(mc)):
			ir.from = "cluster"
		case r.From[0].NamespaceSelector != nil &&
			equalLabels(r.From[0].NamespaceSelector, map[string]string{"kubernetes.io/metadata.name": suiteOperator.Namespace}) &&
			equalLabels(r.From[0].PodSelector, suiteOperator.PodLabels):
			ir.from = "operator"
			for _, extra := range r.From[1:] {
				ir.from += "+" + metav1.FormatLabelSelector(extra.PodSelector)
			}
		default:
			ir.from = "unexpected"
		}
		out = append(out, ir)
	}
	return out
}

func equalLabels(s *metav1.LabelSelector, want map[string]string) bool {
	if s == nil || len(s.MatchExpressions) > 0 || len(s.MatchLabels) != len(want) {
		return false
	}
	for k, v := range want {
		if s.MatchLabels[k] != v {
			return false
		}
	}
	return true
}

var _ = Describe("MQTTCluster NetworkPolicy", func() {
	policy := func(mc *v1alpha1.MQTTCluster) *networkingv1.NetworkPolicy {
		return child(&networkingv1.NetworkPolicy{}, mc.Namespace, mc.Name)
	}

	It("admits the listeners from everyone, the cluster port from the cluster's pods and the API port from the operator", func() {
		ns := newNamespace()
		mc := createCluster(ns, "np", nil)
		np := policy(mc)
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(mc), mc)).To(Succeed())
		Expect(ownedBy(np, mc)).To(BeTrue())
		Expect(np.Spec.PodSelector.MatchLabels).To(Equal(res.SelectorLabels(mc)))
		Expect(np.Spec.PolicyTypes).To(Equal([]networkingv1.PolicyType{networkingv1.PolicyTypeIngress}))
		Expect(np.Spec.Egress).To(BeEmpty())
		Expect(ingressRules(np, mc)).To(Equal([]ingressRule{
			{ports: []int32{1883, 8083}, from: "*"},
			{ports: []int32{4370}, from: "cluster"},
			{ports: []int32{8080}, from: "operator"},
		}))
	})

	It("follows the listeners, the dashboard and spec.networkPolicy.apiFrom", func() {
		ns := newNamespace()
		mc := createCluster(ns, "npspec", func(mc *v1alpha1.MQTTCluster) {
			mc.Spec.Listeners = []v1alpha1.Listener{{Name: "mqtt", Port: 1883}}
		})
		Eventually(func() []ingressRule { return ingressRules(policy(mc), mc) }).Should(Equal([]ingressRule{
			{ports: []int32{1883}, from: "*"},
			{ports: []int32{4370}, from: "cluster"},
			{ports: []int32{8080}, from: "operator"},
		}))

		Expect(k8sClient.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "np-admin"},
			Data: map[string][]byte{"username": []byte("ops"), "password": []byte("a-password")}})).To(Succeed())
		updateCluster(mc, func(mc *v1alpha1.MQTTCluster) {
			mc.Spec.Listeners = append(mc.Spec.Listeners, v1alpha1.Listener{Name: "ws", Port: 9001})
			mc.Spec.Dashboard = v1alpha1.DashboardSpec{Enabled: true, AdminSecretRef: &corev1.LocalObjectReference{Name: "np-admin"}}
			mc.Spec.NetworkPolicy.APIFrom = []networkingv1.NetworkPolicyPeer{
				{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "prometheus"}}},
			}
		})
		Eventually(func() []ingressRule { return ingressRules(policy(mc), mc) }).Should(Equal([]ingressRule{
			{ports: []int32{1883, 9001}, from: "*"},
			{ports: []int32{4370}, from: "cluster"},
			{ports: []int32{8080}, from: "operator+app=prometheus"},
			{ports: []int32{18083}, from: "*"},
		}))

		updateCluster(mc, func(mc *v1alpha1.MQTTCluster) { mc.Spec.Dashboard.Enabled = false })
		Eventually(func() []ingressRule { return ingressRules(policy(mc), mc) }).Should(Equal([]ingressRule{
			{ports: []int32{1883, 9001}, from: "*"},
			{ports: []int32{4370}, from: "cluster"},
			{ports: []int32{8080}, from: "operator+app=prometheus"},
		}), "the dashboard port closes with the dashboard")
	})

	It("is on by default, deleted when turned off and back when turned on", func() {
		ns := newNamespace()
		mc := createCluster(ns, "npoff", nil)
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(mc), mc)).To(Succeed())
		Expect(mc.Spec.NetworkPolicy.Enabled).To(Equal(ptr.To(true)), "the CRD's default")
		uid := policy(mc).UID

		updateCluster(mc, func(mc *v1alpha1.MQTTCluster) { mc.Spec.NetworkPolicy.Enabled = ptr.To(false) })
		Eventually(func() bool {
			return apierrors.IsNotFound(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "npoff"}, &networkingv1.NetworkPolicy{}))
		}).Should(BeTrue(), "the NetworkPolicy goes when turned off")
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(mc), mc)).To(Succeed())
		Expect(mc.Spec.NetworkPolicy.Enabled).To(Equal(ptr.To(false)), "an explicit false is kept")
		sts(mc) // the rest of the pipeline still runs
		Consistently(func() bool {
			return apierrors.IsNotFound(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "npoff"}, &networkingv1.NetworkPolicy{}))
		}).Should(BeTrue(), "and is not recreated")

		updateCluster(mc, func(mc *v1alpha1.MQTTCluster) { mc.Spec.NetworkPolicy.Enabled = nil })
		Eventually(func() types.UID { return policy(mc).UID }).ShouldNot(Equal(uid), "back with the default")
	})

	It("leaves a NetworkPolicy of the same name it does not own alone when turned off", func() {
		ns := newNamespace()
		theirs := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "npmine"},
			Spec: networkingv1.NetworkPolicySpec{PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}}}
		Expect(k8sClient.Create(ctx, theirs)).To(Succeed())
		mc := createCluster(ns, "npmine", func(mc *v1alpha1.MQTTCluster) { mc.Spec.NetworkPolicy.Enabled = ptr.To(false) })
		sts(mc)
		Consistently(func() error {
			return k8sClient.Get(ctx, client.ObjectKeyFromObject(theirs), &networkingv1.NetworkPolicy{})
		}).Should(Succeed())
	})
})
