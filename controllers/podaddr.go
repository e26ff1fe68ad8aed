package controllers

import (
	"context"
	"net"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
	"github.com/mqtt-operator/mqtt-operator/controllers/resource"
)

// PodAddresses turns a broker pod into the addresses of its broker: the one place
// where a pod becomes a host:port. Tests map pods to local mqttd processes here.
type PodAddresses interface {
	// API is the base URL of the pod's HTTP API ("" while the pod has no address):
	// https:// when the pod serves it with its cluster certificate.
	API(mc *v1alpha1.MQTTCluster, pod *corev1.Pod) string
	// Cluster is the pod's cluster address, as its node advertises it.
	Cluster(mc *v1alpha1.MQTTCluster, pod *corev1.Pod) string
}

// InClusterAddresses is the production seam: the API on the pod IP, the cluster port
// on the pod's stable DNS name under the headless Service (what the pod advertises).
type InClusterAddresses struct{}

// API implements PodAddresses.
func (InClusterAddresses) API(_ *v1alpha1.MQTTCluster, pod *corev1.Pod) string {
	if pod.Status.PodIP == "" {
		return ""
	}
	scheme := "http://"
	if resource.ServesAPIOverTLS(pod) {
		scheme = "https://" // the pod serves its API with its cluster certificate
	}
	return scheme + net.JoinHostPort(pod.Status.PodIP, strconv.Itoa(int(resource.APIPort)))
}

// Cluster implements PodAddresses.
func (InClusterAddresses) Cluster(mc *v1alpha1.MQTTCluster, pod *corev1.Pod) string {
	return resource.ClusterAddress(mc, pod.Name)
}

// clusterOfPod maps a broker pod to its MQTTCluster: pod changes (a replacement
// becoming ready, a crash loop) drive the lifecycle without waiting for a requeue.
func clusterOfPod(_ context.Context, obj client.Object) []reconcile.Request {
	l := obj.GetLabels()
	name := l[resource.LabelInstance]
	if name == "" || l[resource.LabelName] != resource.SelectorLabels(&v1alpha1.MQTTCluster{})[resource.LabelName] {
		return nil
	}
	return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: obj.GetNamespace(), Name: name}}}
}
