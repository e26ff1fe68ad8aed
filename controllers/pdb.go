package controllers

import (
	"context"

	"github.com/mqtt-operator/mqtt-operator/controllers/resource"
)

// reconcilePDB writes the PodDisruptionBudget.
func (r *MQTTClusterReconciler) reconcilePDB(ctx context.Context, st *state) (bool, error) {
	_, err := r.apply(ctx, st.cluster, &resource.PDBBuilder{Cluster: st.cluster})
	return false, err
}
