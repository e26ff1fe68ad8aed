package resource

import (
	"maps"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
)

// ServiceKind is one of the Services of a cluster.
type ServiceKind int

// The cluster's Services.
const (
	// HeadlessService governs the StatefulSet: stable pod DNS names, published
	// before the pods are ready so that nodes can find each other while joining.
	HeadlessService ServiceKind = iota
	// ClientService load-balances client connections over ready pods.
	ClientService
	// DashboardService exposes the dashboard.
	DashboardService
	// InternalService carries the plain (non-TLS) listeners inside the cluster,
	// whatever the client Service is (HasPlain): one stable in-cluster address, and
	// the plain listeners' only Service when the client Service exposes TLS only
	// (SplitPlain).
	InternalService
)

// SplitPlain reports whether the plain listeners leave the client Service for the
// internal one: the client Service is a NodePort or LoadBalancer and the cluster has
// a TLS listener, so only TLS is exposed outside the cluster and plain MQTT stays on
// a ClusterIP Service ("<name>-internal") for in-cluster clients.
func SplitPlain(mc *v1alpha1.MQTTCluster) bool {
	t := mc.Spec.Service.Type
	if t != corev1.ServiceTypeNodePort && t != corev1.ServiceTypeLoadBalancer {
		return false
	}
	tls, plain := false, false
	for _, l := range mc.Spec.Listeners {
		if isTLS(l.Name) {
			tls = true
		} else {
			plain = true
		}
	}
	return tls && plain
}

// HasPlain reports whether the cluster has a listener without TLS.
func HasPlain(mc *v1alpha1.MQTTCluster) bool {
	for _, l := range mc.Spec.Listeners {
		if !isTLS(l.Name) {
			return true
		}
	}
	return false
}

func isTLS(n v1alpha1.ListenerName) bool {
	return n == v1alpha1.ListenerMQTTS || n == v1alpha1.ListenerWSS
}

// listenerPorts are the ports of the listeners that tls says (TLS or plain).
func listenerPorts(mc *v1alpha1.MQTTCluster, tls bool) []corev1.ServicePort {
	var ports []corev1.ServicePort
	for _, p := range ListenerPorts(mc) {
		if isTLS(v1alpha1.ListenerName(p.Name)) == tls {
			ports = append(ports, p)
		}
	}
	return ports
}

// ServiceBuilder builds one of the cluster's Services.
type ServiceBuilder struct {
	Cluster *v1alpha1.MQTTCluster
	Kind    ServiceKind
	// ClusterIPOnly keeps the client Service inside the cluster whatever
	// spec.service.type says (the spec asks for something mqttd does not enforce).
	ClusterIPOnly bool
}

// Object implements Builder.
func (b *ServiceBuilder) Object() client.Object {
	var name string
	switch b.Kind {
	case HeadlessService:
		name = HeadlessServiceName(b.Cluster)
	case ClientService:
		name = ClientServiceName(b.Cluster)
	case InternalService:
		name = InternalServiceName(b.Cluster)
	default:
		name = DashboardServiceName(b.Cluster)
	}
	return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: b.Cluster.Namespace}}
}

// ListenerPorts are the ports of the client listeners, named after them.
func ListenerPorts(mc *v1alpha1.MQTTCluster) []corev1.ServicePort {
	ports := make([]corev1.ServicePort, 0, len(mc.Spec.Listeners))
	for _, l := range mc.Spec.Listeners {
		ports = append(ports, servicePort(string(l.Name), l.Port))
	}
	return ports
}

func servicePort(name string, port int32) corev1.ServicePort {
	return corev1.ServicePort{Name: name, Port: port, TargetPort: intstr.FromString(name), Protocol: corev1.ProtocolTCP}
}

// Mutate implements Builder.
func (b *ServiceBuilder) Mutate(obj client.Object) error {
	svc, err := as[*corev1.Service](obj, "ServiceBuilder")
	if err != nil {
		return err
	}
	mc := b.Cluster
	svc.Labels = mergeLabels(svc.Labels, Labels(mc))
	svc.Spec.Selector = SelectorLabels(mc)
	var ports []corev1.ServicePort
	switch b.Kind {
	case HeadlessService:
		svc.Spec.Type = corev1.ServiceTypeClusterIP
		svc.Spec.ClusterIP = corev1.ClusterIPNone
		svc.Spec.PublishNotReadyAddresses = true
		ports = append(ListenerPorts(mc), servicePort("cluster", ClusterPort), servicePort("api", APIPort))
	case ClientService:
		svc.Spec.Type = mc.Spec.Service.Type
		if svc.Spec.Type == "" || b.ClusterIPOnly {
			// Leaving NodePort or LoadBalancer drops the node ports (below) and the
			// API server clears the fields only those types have.
			svc.Spec.Type = corev1.ServiceTypeClusterIP
		}
		svc.Annotations = userAnnotations(svc.Annotations, mc.Spec.Service.Annotations)
		ports = ListenerPorts(mc)
		if SplitPlain(mc) && !b.ClusterIPOnly {
			ports = listenerPorts(mc, true)
		}
	case InternalService:
		svc.Spec.Type = corev1.ServiceTypeClusterIP
		ports = listenerPorts(mc, false)
	case DashboardService:
		svc.Spec.Type = corev1.ServiceTypeClusterIP
		ports = []corev1.ServicePort{servicePort("dashboard", DashboardPort)}
	}
	// Keep the node ports the API server allocated: a port sent without one would
	// get a new one.
	for i := range ports {
		for _, old := range svc.Spec.Ports {
			if old.Name == ports[i].Name && svc.Spec.Type != corev1.ServiceTypeClusterIP {
				ports[i].NodePort = old.NodePort
			}
		}
	}
	svc.Spec.Ports = ports
	return nil
}

// AnnotationManagedAnnotations on the client Service lists the annotation keys that
// came from spec.service.annotations, so that a key removed from the spec is removed
// from the Service while annotations added by others (cloud controllers) stay.
const AnnotationManagedAnnotations = "broker.mqtt-operator.io/managed-annotations"

func userAnnotations(current, wanted map[string]string) map[string]string {
	out := make(map[string]string, len(current)+len(wanted)+1)
	maps.Copy(out, current)
	for _, k := range strings.Split(current[AnnotationManagedAnnotations], ",") {
		if _, still := wanted[k]; k != "" && !still {
			delete(out, k)
		}
	}
	delete(out, AnnotationManagedAnnotations)
	maps.Copy(out, wanted)
	if len(wanted) > 0 {
		out[AnnotationManagedAnnotations] = strings.Join(slices.Sorted(maps.Keys(wanted)), ",")
	}
	if len(out) == 0 {
		return nil
	}
	return out
}
