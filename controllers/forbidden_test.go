package controllers

import (
	"context"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
)

// TestForbiddenIsReported: a step the operator's role does not allow (the
// NetworkPolicy, with the RBAC of an older release) is not only retried: status says
// so (Degraded and Ready False, reason Forbidden), since what it guards is not in
// force, and the pipeline stops before the pods.
func TestForbiddenIsReported(t *testing.T) {
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	mc := &v1alpha1.MQTTCluster{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "c", UID: "uid-1"},
		Spec: v1alpha1.MQTTClusterSpec{Listeners: []v1alpha1.Listener{{Name: "mqtt", Port: 1883}}}}
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(mc).WithStatusSubresource(mc).
		WithInterceptorFuncs(interceptor.Funcs{
			Get: func(ctx context.Context, cl client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
				if _, ok := obj.(*networkingv1.NetworkPolicy); ok {
					return apierrors.NewForbidden(schema.GroupResource{Group: "networking.k8s.io", Resource: "networkpolicies"}, key.Name, nil)
				}
				return cl.Get(ctx, key, obj, opts...)
			},
		}).Build()
	r := &MQTTClusterReconciler{Client: c, APIReader: c, Scheme: scheme, DefaultImage: "mqttd:test"}
	_, err := r.Reconcile(context.Background(), ctrl.Request{NamespacedName: client.ObjectKeyFromObject(mc)})
	if !apierrors.IsForbidden(err) {
		_ = c.Get(context.Background(), client.ObjectKeyFromObject(mc), mc)
		t.Fatalf("Reconcile: %v, want the Forbidden error (retried with backoff); status %+v", err, mc.Status.Conditions)
	}
	if err := c.Get(context.Background(), client.ObjectKeyFromObject(mc), mc); err != nil {
		t.Fatal(err)
	}
	for _, typ := range []string{v1alpha1.ConditionDegraded, v1alpha1.ConditionReady} {
		cond := meta.FindStatusCondition(mc.Status.Conditions, typ)
		if cond == nil || cond.Reason != "Forbidden" {
			t.Fatalf("condition %s: %+v, want reason Forbidden", typ, cond)
		}
	}
}
