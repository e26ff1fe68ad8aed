package controllers

import (
	"context"

	"github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
	"github.com/mqtt-operator/mqtt-operator/controllers/resource"
)

// reconcileConfig renders mqttd.yaml from the spec and writes the ConfigMap. A bad
// spec.config setting is invalid input.
func (r *MQTTClusterReconciler) reconcileConfig(ctx context.Context, st *state) (bool, error) {
	cfg, err := resource.RenderConfig(st.cluster)
	if err != nil {
		r.report(st, invalidInput, "InvalidConfig", err.Error())
		return true, nil
	}
	st.config = cfg
	for _, f := range unsupportedFeatures(st.cluster) {
		r.report(st, unsupportedChange, "FeatureNotSupported", f+" is not implemented by mqttd yet and has no effect")
	}
	_, err = r.apply(ctx, st.cluster, &resource.ConfigMapBuilder{Cluster: st.cluster, Config: cfg})
	return false, err
}

// unsupportedFeatures lists what the spec asks for that this mqttd cannot do yet, so
// that status says so instead of pretending (an "allowAnonymous: false" broker that
// lets everyone in would be worse than a Degraded condition).
func unsupportedFeatures(mc *v1alpha1.MQTTCluster) []string {
	var out []string
	for _, l := range mc.Spec.Listeners {
		if l.Name == v1alpha1.ListenerMQTTS || l.Name == v1alpha1.ListenerWSS {
			out = append(out, "the "+string(l.Name)+" (TLS) listener")
		}
	}
	if a := mc.Spec.Auth; a != nil && ((a.AllowAnonymous != nil && !*a.AllowAnonymous) || a.UsersSecretRef != nil || len(a.ACL) > 0) {
		out = append(out, "spec.auth (users, ACL, refusing anonymous clients)")
	}
	if mc.Spec.Dashboard.Enabled {
		out = append(out, "the dashboard")
	}
	return out
}
