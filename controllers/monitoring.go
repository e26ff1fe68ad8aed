package controllers

import (
	"context"
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"

	"github.com/mqtt-operator/mqtt-operator/controllers/resource"
)

// reconcileMonitoring writes the PodMonitor and PrometheusRule of spec.monitoring, or
// deletes the ones it wrote once monitoring is turned off. The Prometheus Operator is
// optional: without its CRDs the monitoring asked for is not in force, so the cluster
// is Degraded (PrometheusOperatorNotInstalled) and not Ready, and the operator looks
// again every minute (no event says when the CRDs arrive). It never stops the
// pipeline: the brokers do not depend on being watched.
func (r *MQTTClusterReconciler) reconcileMonitoring(ctx context.Context, st *state) (bool, error) {
	mc := st.cluster
	builders := []resource.Builder{&resource.PodMonitorBuilder{Cluster: mc, HTTPS: st.clusterTLS}, &resource.PrometheusRuleBuilder{Cluster: mc}}
	var missing []string
	for _, gvk := range []struct{ kind, version string }{{resource.PodMonitorGVK.Kind, "v1"}, {resource.PrometheusRuleGVK.Kind, "v1"}} {
		gk := resource.PodMonitorGVK.GroupKind()
		gk.Kind = gvk.kind
		if _, err := r.RESTMapper().RESTMapping(gk, gvk.version); err != nil {
			if !meta.IsNoMatchError(err) {
				return false, err
			}
			missing = append(missing, gk.String())
		}
	}
	if !mc.Spec.Monitoring.Enabled {
		if len(missing) > 0 {
			return false, nil // nothing of these kinds can exist
		}
		for _, b := range builders {
			if err := r.deleteIfOwned(ctx, mc, b.Object()); err != nil {
				return false, err
			}
		}
		return false, nil
	}
	if len(missing) > 0 {
		r.report(st, notInForce, "PrometheusOperatorNotInstalled", fmt.Sprintf(
			"spec.monitoring.enabled asks for a PodMonitor and a PrometheusRule, but the Prometheus Operator's CRDs are not installed (no %v in the API): install the Prometheus Operator (for example kube-prometheus-stack), or turn spec.monitoring off",
			missing))
		st.requeue = minRequeue(st.requeue, time.Minute)
		return false, nil
	}
	for _, b := range builders {
		if _, err := r.apply(ctx, mc, b); err != nil {
			return false, err
		}
	}
	return false, nil
}

// minRequeue is the sooner of two requeue delays (zero: none).
func minRequeue(a, b time.Duration) time.Duration {
	if a == 0 || (b != 0 && b < a) {
		return b
	}
	return a
}
