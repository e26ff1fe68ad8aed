package controllers

import (
	"context"

	"github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
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
	for _, f := range unsupportedFeatures(st.cluster) {
		r.report(st, unsupportedFeature, "FeatureNotSupported", f+" is not implemented by mqttd yet")
	}
	_, err = r.apply(ctx, st.cluster, &resource.ConfigMapBuilder{Cluster: st.cluster, Config: cfg, ACL: acl})
	return false, err
}

// unsupportedFeatures lists what the spec asks for that this mqttd cannot do yet.
// Each one fails closed (Ready False, client Service ClusterIP only): a feature that
// is silently missing would be worse than a cluster that is not Ready.
func unsupportedFeatures(mc *v1alpha1.MQTTCluster) []string {
	var out []string
	if mc.Spec.Dashboard.Enabled {
		out = append(out, "the dashboard")
	}
	return out
}
