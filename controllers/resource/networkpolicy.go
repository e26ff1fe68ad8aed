package resource

import (
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
)

// labelNamespaceName is the label the API server puts on every namespace with its
// name (Kubernetes 1.22 and later).
const labelNamespaceName = "kubernetes.io/metadata.name"

// Operator identifies the operator's own pods, the clients of the brokers' API.
type Operator struct {
	// Namespace the operator runs in; empty: unknown (out of the cluster), and no
	// operator pod is admitted (its labels alone would admit look-alikes from every
	// namespace).
	Namespace string
	// PodLabels select the operator's pods (never empty: that would be every pod of
	// the namespace; main.go refuses it, and the builder admits none then).
	PodLabels map[string]string
}

// NetworkPolicyName is the NetworkPolicy's.
func NetworkPolicyName(mc *v1alpha1.MQTTCluster) string { return mc.Name }

// NetworkPolicyEnabled reports whether the cluster gets its NetworkPolicy (the
// default; spec.networkPolicy.enabled false turns it off).
func NetworkPolicyEnabled(mc *v1alpha1.MQTTCluster) bool {
	e := mc.Spec.NetworkPolicy.Enabled
	return e == nil || *e
}

// NetworkPolicyBuilder builds the NetworkPolicy of the broker pods: the listeners are
// open to everyone, the cluster port only to the cluster's own pods (the cookie
// handshake is the second lock), the API port (the cluster verbs, /metrics) only to
// the operator and the peers of spec.networkPolicy.apiFrom, the dashboard port to
// everyone while the dashboard is enabled with an admin Secret. With the default
// credentials (admin/public) the dashboard port stays closed: only a
// kubectl port-forward reaches it (the kubelet's tunnel is not subject to the policy),
// so the well-known password cannot be tried from the network. The kubelet's probes
// are not affected (traffic from a pod's own node is always allowed).
type NetworkPolicyBuilder struct {
	Cluster  *v1alpha1.MQTTCluster
	Operator Operator
}

// Object implements Builder.
func (b *NetworkPolicyBuilder) Object() client.Object {
	return &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: NetworkPolicyName(b.Cluster), Namespace: b.Cluster.Namespace}}
}

// Mutate implements Builder.
func (b *NetworkPolicyBuilder) Mutate(obj client.Object) error {
	np, err := as[*networkingv1.NetworkPolicy](obj, "NetworkPolicyBuilder")
	if err != nil {
		return err
	}
	mc := b.Cluster
	np.Labels = mergeLabels(np.Labels, Labels(mc))
	np.Spec.PodSelector = metav1.LabelSelector{MatchLabels: SelectorLabels(mc)}
	np.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}
	np.Spec.Egress = nil

	// With only TLS exposed outside (SplitPlain), the plain listeners admit pods of
	// the Kubernetes cluster only, not every source that can reach a pod IP.
	var listeners, plain []networkingv1.NetworkPolicyPort
	for _, l := range mc.Spec.Listeners {
		if SplitPlain(mc) && !isTLS(l.Name) {
			plain = append(plain, policyPort(l.Port))
			continue
		}
		listeners = append(listeners, policyPort(l.Port))
	}
	var api []networkingv1.NetworkPolicyPeer
	if b.Operator.Namespace != "" && len(b.Operator.PodLabels) > 0 {
		api = append(api, b.operatorPeer())
	}
	api = append(api, mc.Spec.NetworkPolicy.APIFrom...)
	// A rule without From admits every source, and one without Ports every port: so a
	// rule is written only with both, or its From would open what it was to close.
	var rules []networkingv1.NetworkPolicyIngressRule
	if len(listeners) > 0 {
		rules = append(rules, networkingv1.NetworkPolicyIngressRule{Ports: listeners}) // no From: every source
	}
	if len(plain) > 0 {
		rules = append(rules, networkingv1.NetworkPolicyIngressRule{Ports: plain,
			From: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{}}}}) // every pod, no outside source
	}
	rules = append(rules, networkingv1.NetworkPolicyIngressRule{Ports: []networkingv1.NetworkPolicyPort{policyPort(ClusterPort)},
		From: []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: SelectorLabels(mc)}}}})
	if len(api) > 0 {
		rules = append(rules, networkingv1.NetworkPolicyIngressRule{Ports: []networkingv1.NetworkPolicyPort{policyPort(APIPort)}, From: api})
	}
	if d := mc.Spec.Dashboard; d.Enabled && d.AdminSecretRef != nil {
		rules = append(rules, networkingv1.NetworkPolicyIngressRule{Ports: []networkingv1.NetworkPolicyPort{policyPort(DashboardPort)}})
	}
	np.Spec.Ingress = rules
	return nil
}

// operatorPeer selects the operator's pods: by their labels in the operator's
// namespace.
func (b *NetworkPolicyBuilder) operatorPeer() networkingv1.NetworkPolicyPeer {
	ns := &metav1.LabelSelector{MatchLabels: map[string]string{labelNamespaceName: b.Operator.Namespace}}
	return networkingv1.NetworkPolicyPeer{
		NamespaceSelector: ns,
		PodSelector:       &metav1.LabelSelector{MatchLabels: b.Operator.PodLabels},
	}
}

func policyPort(port int32) networkingv1.NetworkPolicyPort {
	p := intstr.FromInt32(port)
	tcp := corev1.ProtocolTCP
	return networkingv1.NetworkPolicyPort{Protocol: &tcp, Port: &p}
}
