package controllers

import (
	"context"

	"github.com/mqtt-operator/mqtt-operator/controllers/resource"
)

// reconcileConfig renders mqttd.yaml and the ACL from the spec and writes the
// ConfigMap. A bad spec.config setting or ACL rule is invalid input.
func (r *MQTTClusterReconciler) reconcileConfig(ctx context.Context, st *state) (bool, error) {
	cfg, err := resource.RenderConfig(st.cluster)
	if err != nil {
		r.report(st, invalidInput, "InvalidConfig", err.Error())
		return true, nil
	}
	acl, err := resource.RenderACL(st.cluster)
	if err != nil {
		r.report(st, invalidInput, "InvalidACL", err.Error())
		return true, nil
	}
	st.config = cfg
	_, err = r.apply(ctx, st.cluster, &resource.ConfigMapBuilder{Cluster: st.cluster, Config: cfg, ACL: acl})
	return false, err
}
