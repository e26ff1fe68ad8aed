package controllers

import (
	"context"

	"github.com/mqtt-operator/mqtt-operator/controllers/resource"
)

// reconcileNetworkPolicy writes the broker pods' NetworkPolicy, or deletes it when
// spec.networkPolicy.enabled is false.
func (r *MQTTClusterReconciler) reconcileNetworkPolicy(ctx context.Context, st *state) (bool, error) {
	b := &resource.NetworkPolicyBuilder{Cluster: st.cluster, Operator: r.Operator}
	if !resource.NetworkPolicyEnabled(st.cluster) {
		return false, r.deleteIfOwned(ctx, st.cluster, b.Object())
	}
	_, err := r.apply(ctx, st.cluster, b)
	return false, err
}
