package controllers

import (
	"context"

	"github.com/mqtt-operator/mqtt-operator/controllers/resource"
)

// reconcileServices writes the headless and client Services, and the dashboard
// Service while the dashboard is enabled (it is deleted when disabled).
func (r *MQTTClusterReconciler) reconcileServices(ctx context.Context, st *state) (bool, error) {
	mc := st.cluster
	for _, kind := range []resource.ServiceKind{resource.HeadlessService, resource.ClientService} {
		if _, err := r.apply(ctx, mc, &resource.ServiceBuilder{Cluster: mc, Kind: kind}); err != nil {
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
