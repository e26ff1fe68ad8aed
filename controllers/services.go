package controllers

import (
	"context"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
	"github.com/mqtt-operator/mqtt-operator/controllers/resource"
)

// reconcileServices writes the headless and client Services, the internal Service of
// the plain listeners while there is one (resource.HasPlain; the client Service
// carries them too unless it exposes only TLS, resource.SplitPlain), and the dashboard
// Service while the dashboard is enabled (each deleted otherwise).
func (r *MQTTClusterReconciler) reconcileServices(ctx context.Context, st *state) (bool, error) {
	mc := st.cluster
	// A wider type than the Service has now waits until every pod runs the settings
	// the spec asks for (turning anonymous access off rolls the pods).
	narrow := false
	pending, err := r.settingsPending(ctx, st)
	if err != nil {
		return false, err
	}
	if pending {
		if narrow, err = r.clientServiceNarrow(ctx, mc); err != nil {
			return false, err
		}
	}
	// The internal Service first: the client Service may drop the plain ports next.
	internal := &resource.ServiceBuilder{Cluster: mc, Kind: resource.InternalService}
	if resource.HasPlain(mc) {
		if _, err := r.apply(ctx, mc, internal); err != nil {
			return false, err
		}
	} else if err := r.deleteIfOwned(ctx, mc, internal.Object()); err != nil {
		return false, err
	}
	for _, kind := range []resource.ServiceKind{resource.HeadlessService, resource.ClientService} {
		b := &resource.ServiceBuilder{Cluster: mc, Kind: kind, ClusterIPOnly: narrow}
		if _, err := r.apply(ctx, mc, b); err != nil {
			return false, err
		}
	}
	dashboard := &resource.ServiceBuilder{Cluster: mc, Kind: resource.DashboardService}
	if !mc.Spec.Dashboard.Enabled {
		return false, r.deleteIfOwned(ctx, mc, dashboard.Object())
	}
	_, err = r.apply(ctx, mc, dashboard)
	return false, err
}

// clientServiceNarrow reports whether the client Service is absent or ClusterIP.
func (r *MQTTClusterReconciler) clientServiceNarrow(ctx context.Context, mc *v1alpha1.MQTTCluster) (bool, error) {
	svc := &corev1.Service{}
	err := r.getChild(ctx, client.ObjectKey{Namespace: mc.Namespace, Name: resource.ClientServiceName(mc)}, svc)
	if apierrors.IsNotFound(err) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	return svc.Spec.Type == "" || svc.Spec.Type == corev1.ServiceTypeClusterIP, nil
}

// settingsPending reports whether the pods will not all run the configuration just
// rendered: the StatefulSet's template carries another config hash, or some pods run
// an older template.
func (r *MQTTClusterReconciler) settingsPending(ctx context.Context, st *state) (bool, error) {
	sts := &appsv1.StatefulSet{}
	err := r.getChild(ctx, client.ObjectKey{Namespace: st.cluster.Namespace, Name: resource.StatefulSetName(st.cluster)}, sts)
	if apierrors.IsNotFound(err) {
		return false, nil // nothing runs yet: the first pods start with these settings
	}
	if err != nil {
		return false, err
	}
	return sts.Spec.Template.Annotations[resource.AnnotationConfigHash] != resource.ConfigHash(st.config) ||
		sts.Status.ObservedGeneration < sts.Generation || sts.Status.UpdatedReplicas < sts.Status.Replicas, nil
}
