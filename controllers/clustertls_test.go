package controllers

import (
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/mqtt-operator/mqtt-operator/controllers/resource"
)

// TestDecideClusterTLS: what the spec asks is taken only while no pod may run; a
// running cluster keeps what its pods run (a StatefulSet from before cluster TLS runs
// none), and a different wish is refused, never rolled into a split cluster.
func TestDecideClusterTLS(t *testing.T) {
	withTLS := &appsv1.StatefulSet{}
	withTLS.Spec.Template.Spec.Volumes = []corev1.Volume{{Name: resource.ClusterTLSVolume}}
	plain := &appsv1.StatefulSet{}
	for _, tc := range []struct {
		name       string
		want       bool
		sts        *appsv1.StatefulSet
		running    bool
		on, refuse bool
	}{
		{"new cluster, default", true, nil, false, true, false},
		{"new cluster, disabled for debugging", false, nil, false, false, false},
		{"running with TLS", true, withTLS, true, true, false},
		{"running without, as asked", false, plain, true, false, false},
		{"made before cluster TLS, running: kept off, refused", true, plain, true, false, true},
		{"running with TLS, asked off: kept on, refused", false, withTLS, true, true, true},
		{"scaled to zero, no pod left: takes the wish", true, plain, false, true, false},
		{"scaled to zero, turned off", false, withTLS, false, false, false},
		{"pods without a StatefulSet: the wish", true, nil, true, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := decideClusterTLS(tc.want, tc.sts, tc.running)
			if d.on != tc.on || d.refused != tc.refuse {
				t.Fatalf("on %v refused %v, want on %v refused %v", d.on, d.refused, tc.on, tc.refuse)
			}
		})
	}
}
