package resource

import (
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
)

// TestNetworkPolicyBuilder tables who each port admits: "*" is everyone, a peer is
// "ns=<namespace selector>/pods=<pod selector>" (ns absent: the policy's namespace).
func TestNetworkPolicyBuilder(t *testing.T) {
	operator := Operator{Namespace: "ops", PodLabels: map[string]string{"control-plane": "controller-manager"}}
	prometheus := networkingv1.NetworkPolicyPeer{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "prometheus"}}}
	for _, tc := range []struct {
		name     string
		edit     func(*v1alpha1.MQTTCluster)
		operator Operator
		want     map[int32][]string
	}{
		{"defaults", nil, operator, map[int32][]string{
			1883: {"*"}, 8083: {"*"},
			ClusterPort: {"pods=app.kubernetes.io/instance=demo,app.kubernetes.io/name=mqttd"},
			APIPort:     {"ns=kubernetes.io/metadata.name=ops/pods=control-plane=controller-manager"},
		}},
		{"operator's namespace unknown: no operator pod admitted, the API port closed", nil, Operator{PodLabels: operator.PodLabels}, map[int32][]string{
			1883: {"*"}, 8083: {"*"},
			ClusterPort: {"pods=app.kubernetes.io/instance=demo,app.kubernetes.io/name=mqttd"},
		}},
		{"operator's labels empty: no operator pod admitted", nil, Operator{Namespace: "ops"}, map[int32][]string{
			1883: {"*"}, 8083: {"*"},
			ClusterPort: {"pods=app.kubernetes.io/instance=demo,app.kubernetes.io/name=mqttd"},
		}},
		{"no listener: no rule opening every port", func(mc *v1alpha1.MQTTCluster) { mc.Spec.Listeners = nil }, operator, map[int32][]string{
			ClusterPort: {"pods=app.kubernetes.io/instance=demo,app.kubernetes.io/name=mqttd"},
			APIPort:     {"ns=kubernetes.io/metadata.name=ops/pods=control-plane=controller-manager"},
		}},
		{"namespace unknown, a scraper: only the scraper", func(mc *v1alpha1.MQTTCluster) {
			mc.Spec.NetworkPolicy = v1alpha1.NetworkPolicySpec{Enabled: ptr.To(true), APIFrom: []networkingv1.NetworkPolicyPeer{prometheus}}
		}, Operator{PodLabels: operator.PodLabels}, map[int32][]string{
			1883: {"*"}, 8083: {"*"},
			ClusterPort: {"pods=app.kubernetes.io/instance=demo,app.kubernetes.io/name=mqttd"},
			APIPort:     {"pods=app=prometheus"},
		}},
		{"dashboard with the default credentials: its port stays closed (port-forward only)", func(mc *v1alpha1.MQTTCluster) {
			mc.Spec.Dashboard.Enabled = true
		}, operator, map[int32][]string{
			1883: {"*"}, 8083: {"*"},
			ClusterPort: {"pods=app.kubernetes.io/instance=demo,app.kubernetes.io/name=mqttd"},
			APIPort:     {"ns=kubernetes.io/metadata.name=ops/pods=control-plane=controller-manager"},
		}},
		{"dashboard with an admin Secret, one listener, a scraper", func(mc *v1alpha1.MQTTCluster) {
			mc.Spec.Dashboard = v1alpha1.DashboardSpec{Enabled: true, AdminSecretRef: &corev1.LocalObjectReference{Name: "admin"}}
			mc.Spec.Listeners = mc.Spec.Listeners[:1]
			mc.Spec.NetworkPolicy = v1alpha1.NetworkPolicySpec{Enabled: ptr.To(true), APIFrom: []networkingv1.NetworkPolicyPeer{prometheus}}
		}, operator, map[int32][]string{
			1883:          {"*"},
			ClusterPort:   {"pods=app.kubernetes.io/instance=demo,app.kubernetes.io/name=mqttd"},
			APIPort:       {"ns=kubernetes.io/metadata.name=ops/pods=control-plane=controller-manager", "pods=app=prometheus"},
			DashboardPort: {"*"},
		}},
		{"TLS exposed alone: the plain listeners admit the Kubernetes cluster's pods only", func(mc *v1alpha1.MQTTCluster) {
			mc.Spec.Service.Type = "LoadBalancer"
			mc.Spec.Listeners = append(mc.Spec.Listeners, v1alpha1.Listener{Name: v1alpha1.ListenerMQTTS, Port: 8883, TLSSecretName: "t"})
		}, operator, map[int32][]string{
			8883: {"*"}, 1883: {"ns=<none>/pods=<none>"}, 8083: {"ns=<none>/pods=<none>"},
			ClusterPort: {"pods=app.kubernetes.io/instance=demo,app.kubernetes.io/name=mqttd"},
			APIPort:     {"ns=kubernetes.io/metadata.name=ops/pods=control-plane=controller-manager"},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mc := cluster()
			if tc.edit != nil {
				tc.edit(mc)
			}
			b := &NetworkPolicyBuilder{Cluster: mc, Operator: tc.operator}
			np := b.Object().(*networkingv1.NetworkPolicy)
			if err := b.Mutate(np); err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(np.Spec.PolicyTypes) != "[Ingress]" || np.Spec.PodSelector.MatchLabels[LabelInstance] != "demo" || np.Labels[LabelManagedBy] != managedBy {
				t.Fatalf("policy %+v", np)
			}
			got := map[int32][]string{}
			for _, r := range np.Spec.Ingress {
				if len(r.Ports) == 0 {
					t.Errorf("a rule without ports admits every port: %+v", r)
				}
				for _, p := range r.Ports {
					if *p.Protocol != "TCP" {
						t.Errorf("port %v: protocol %s", p.Port, *p.Protocol)
					}
					if len(r.From) == 0 {
						got[p.Port.IntVal] = append(got[p.Port.IntVal], "*")
					}
					for _, f := range r.From {
						s := "pods=" + metav1.FormatLabelSelector(f.PodSelector)
						if f.NamespaceSelector != nil {
							s = "ns=" + metav1.FormatLabelSelector(f.NamespaceSelector) + "/" + s
						}
						got[p.Port.IntVal] = append(got[p.Port.IntVal], s)
					}
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("admitted:\n got %v\nwant %v", got, tc.want)
			}
		})
	}
	if !NetworkPolicyEnabled(cluster()) {
		t.Error("NetworkPolicyEnabled false without spec.networkPolicy")
	}
	off := cluster()
	off.Spec.NetworkPolicy.Enabled = ptr.To(false)
	if NetworkPolicyEnabled(off) {
		t.Error("NetworkPolicyEnabled true with enabled: false")
	}
}
