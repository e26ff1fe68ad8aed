package resource

import (
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
)

// PDBBuilder builds the PodDisruptionBudget: voluntary disruptions (node drains) take
// one broker at a time, so the cluster keeps its quorum and its clients a place to go.
type PDBBuilder struct {
	Cluster *v1alpha1.MQTTCluster
}

// Object implements Builder.
func (b *PDBBuilder) Object() client.Object {
	return &policyv1.PodDisruptionBudget{ObjectMeta: metav1.ObjectMeta{Name: PDBName(b.Cluster), Namespace: b.Cluster.Namespace}}
}

// Mutate implements Builder.
func (b *PDBBuilder) Mutate(obj client.Object) error {
	pdb, err := as[*policyv1.PodDisruptionBudget](obj, "PDBBuilder")
	if err != nil {
		return err
	}
	pdb.Labels = mergeLabels(pdb.Labels, Labels(b.Cluster))
	pdb.Spec.MaxUnavailable = &intstr.IntOrString{Type: intstr.Int, IntVal: 1}
	pdb.Spec.MinAvailable = nil
	// A crash-looping broker must not block node drains.
	pdb.Spec.UnhealthyPodEvictionPolicy = ptr.To(policyv1.AlwaysAllow)
	pdb.Spec.Selector = &metav1.LabelSelector{MatchLabels: SelectorLabels(b.Cluster)}
	return nil
}
