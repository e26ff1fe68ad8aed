package controllers

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"

	"github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
	"github.com/mqtt-operator/mqtt-operator/controllers/resource"
)

// reconcileServices writes the headless and client Services, and the dashboard
// Service while the dashboard is enabled (it is deleted when disabled). While the
// spec asks for something mqttd does not enforce, the client Service stays ClusterIP.
func (r *MQTTClusterReconciler) reconcileServices(ctx context.Context, st *state) (bool, error) {
	mc := st.cluster
	reason, msg, exposable := clientServiceExposable(mc)
	if !exposable {
		r.report(st, unsupportedFeature, reason, msg)
	}
	for _, kind := range []resource.ServiceKind{resource.HeadlessService, resource.ClientService} {
		b := &resource.ServiceBuilder{Cluster: mc, Kind: kind, ClusterIPOnly: len(unsupportedFeatures(mc)) > 0}
		if _, err := r.apply(ctx, mc, b); err != nil {
			return false, err
		}
	}
	dashboard := &resource.ServiceBuilder{Cluster: mc, Kind: resource.DashboardService}
	if !mc.Spec.Dashboard.Enabled {
		return false, r.deleteIfOwned(ctx, mc, dashboard.Object())
	}
	_, err := r.apply(ctx, mc, dashboard)
	return false, err
}

// clientServiceExposable is the check that the client Service may have the type the
// spec asks for: a NodePort or LoadBalancer Service is withheld (ClusterIP instead)
// while some requested feature is not enforced by mqttd.
func clientServiceExposable(mc *v1alpha1.MQTTCluster) (reason, message string, ok bool) {
	t := mc.Spec.Service.Type
	if t == "" || t == corev1.ServiceTypeClusterIP || len(unsupportedFeatures(mc)) == 0 {
		return "", "", true
	}
	return "FeatureNotSupported", fmt.Sprintf("spec.service.type %s is withheld: the client Service stays ClusterIP until then", t), false
}
