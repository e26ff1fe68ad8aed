package controllers

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
	"github.com/mqtt-operator/mqtt-operator/controllers/resource"
)

// reconcileMonitoring writes the PodMonitor and PrometheusRule of spec.monitoring, or
// deletes the ones it may have written (status.monitoring says so) once monitoring is
// turned off. The Prometheus Operator is optional: without its CRDs the monitoring
// asked for is not in force, so the cluster is Degraded (PrometheusOperatorNotInstalled)
// and not Ready, and the operator looks again every minute (no event says when the
// CRDs arrive). It never stops or fails the reconcile: a lasting cause (the CRDs
// removed, a role without the monitoring.coreos.com rules, a name taken, a spec
// refused) is reported and retried in a minute; a passing one (a timeout, a conflict)
// is logged and retried in a few seconds without a report. The brokers' lifecycle
// does not depend on it.
func (r *MQTTClusterReconciler) reconcileMonitoring(ctx context.Context, st *state) (bool, error) {
	mc := st.cluster
	builders := []resource.Builder{&resource.PodMonitorBuilder{Cluster: mc, HTTPS: st.clusterTLS}, &resource.PrometheusRuleBuilder{Cluster: mc}}
	failed := func(err error, reason, format string, args ...any) (bool, error) {
		if passing(err) {
			log.FromContext(ctx).Info("monitoring not written yet; retrying", "error", err)
			st.requeue = minRequeue(st.requeue, 10*time.Second)
			return false, nil
		}
		r.report(st, notInForce, reason, fmt.Sprintf(format, args...))
		st.requeue = minRequeue(st.requeue, time.Minute)
		return false, nil
	}
	if !mc.Spec.Monitoring.Enabled {
		if mc.Status.Monitoring != v1alpha1.MonitoringEnabled {
			return false, nil // none written: no call to the API at all
		}
		for _, b := range builders {
			err := r.deleteIfOwned(ctx, mc, b.Object())
			if err != nil && !meta.IsNoMatchError(err) && !apierrors.IsNotFound(err) {
				return failed(err, "MonitoringNotRemoved", "spec.monitoring is off, but the operator could not delete its %s %q: %v",
					b.Object().GetObjectKind().GroupVersionKind().Kind, resource.MonitoringName(mc), err)
			}
		}
		st.monitoring = ptr.To(v1alpha1.MonitoringStatus("")) // both gone
		return false, nil
	}
	var missing []string
	for _, gvk := range []struct{ kind, version string }{{resource.PodMonitorGVK.Kind, "v1"}, {resource.PrometheusRuleGVK.Kind, "v1"}} {
		gk := resource.PodMonitorGVK.GroupKind()
		gk.Kind = gvk.kind
		if _, err := r.RESTMapper().RESTMapping(gk, gvk.version); err != nil {
			if !meta.IsNoMatchError(err) {
				return failed(err, "MonitoringNotApplied", "looking up %s in the API: %v", gk, err)
			}
			missing = append(missing, gk.String())
		}
	}
	if len(missing) > 0 {
		return failed(nil, "PrometheusOperatorNotInstalled",
			"spec.monitoring.enabled asks for a PodMonitor and a PrometheusRule, but the Prometheus Operator's CRDs are not installed (no %v in the API): install the Prometheus Operator (for example kube-prometheus-stack), or turn spec.monitoring off",
			missing)
	}
	// Recorded before writing: one written and the other refused must still be
	// deleted once monitoring is turned off.
	st.monitoring = ptr.To(v1alpha1.MonitoringEnabled)
	for _, b := range builders {
		if _, err := r.apply(ctx, mc, b); err != nil {
			return failed(err, "MonitoringNotApplied", "writing the %s %q: %v",
				b.Object().GetObjectKind().GroupVersionKind().Kind, resource.MonitoringName(mc), err)
		}
	}
	return false, nil
}

// passing reports whether err is a passing failure of the API server (a timeout, a
// throttle, a conflict, a connection that failed), retried soon without a report;
// anything else is reported as not in force.
func passing(err error) bool {
	if err == nil {
		return false
	}
	var netErr net.Error
	return apierrors.IsTimeout(err) || apierrors.IsServerTimeout(err) || apierrors.IsTooManyRequests(err) ||
		apierrors.IsServiceUnavailable(err) || apierrors.IsConflict(err) || errors.As(err, &netErr)
}

// saveMonitoringStatus writes status.monitoring alone, for a reconcile that ends in
// an error before the status step (nothing to write when the monitoring step did
// not run or changed nothing).
func (r *MQTTClusterReconciler) saveMonitoringStatus(ctx context.Context, st *state) error {
	if st.monitoring == nil || st.cluster.Status.Monitoring == *st.monitoring {
		return nil
	}
	mc := st.cluster
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur := &v1alpha1.MQTTCluster{}
		if err := r.Get(ctx, client.ObjectKeyFromObject(mc), cur); err != nil {
			return client.IgnoreNotFound(err)
		}
		patch := client.MergeFromWithOptions(cur.DeepCopy(), client.MergeFromWithOptimisticLock{})
		cur.Status.Monitoring = *st.monitoring
		return r.Status().Patch(ctx, cur, patch)
	})
}

// minRequeue is the sooner of two requeue delays (zero: none).
func minRequeue(a, b time.Duration) time.Duration {
	if a == 0 || (b != 0 && b < a) {
		return b
	}
	return a
}
