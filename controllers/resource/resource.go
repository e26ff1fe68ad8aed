// Package resource builds the child objects of an MQTTCluster: one builder per object.
// A builder names its object and fills the fields the operator owns; the controller
// applies it with controllerutil.CreateOrUpdate, so a builder must leave alone what
// the API server or other controllers fill in (cluster IPs, node ports, defaults).
package resource

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"

	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
)

// Ports of the broker that are not client listeners (docs/architecture.md).
const (
	ClusterPort   int32 = 4370
	APIPort       int32 = 8080
	DashboardPort int32 = 18083
)

// Label keys and values.
const (
	LabelName      = "app.kubernetes.io/name"
	LabelInstance  = "app.kubernetes.io/instance"
	LabelComponent = "app.kubernetes.io/component"
	LabelManagedBy = "app.kubernetes.io/managed-by"
	LabelPartOf    = "app.kubernetes.io/part-of"

	appName   = "mqttd"
	component = "broker"
	managedBy = "mqtt-operator"
)

// Annotations the operator sets.
const (
	// AnnotationConfigHash on the pod template changes when the broker configuration
	// changes, so the change is noticed (and, with the lifecycle work, rolled out).
	AnnotationConfigHash = "broker.mqtt-operator.io/config-hash"
	// AnnotationTemplateHash on the pod template records the desired template the
	// operator last wrote, so it rewrites the StatefulSet only when that changes.
	AnnotationTemplateHash = "broker.mqtt-operator.io/template-hash"
)

// Builder names one child object and fills its desired fields.
type Builder interface {
	// Object returns an empty object of the child's kind with its name and namespace.
	Object() client.Object
	// Mutate sets the desired fields on obj, which holds the child's current state
	// (empty when it does not exist yet).
	Mutate(obj client.Object) error
}

// as is obj as the kind T a builder's Mutate expects, or an error naming the builder.
func as[T client.Object](obj client.Object, builder string) (T, error) {
	t, ok := obj.(T)
	if !ok {
		return t, fmt.Errorf("%s.Mutate: got %T, want %T", builder, obj, t)
	}
	return t, nil
}

// SelectorLabels select the pods of one MQTTCluster; they never change.
func SelectorLabels(mc *v1alpha1.MQTTCluster) map[string]string {
	return map[string]string{LabelName: appName, LabelInstance: mc.Name}
}

// ChildrenLabels select the children of every MQTTCluster, the volume claims the
// StatefulSet makes from its claim template included (they carry SelectorLabels
// only): the manager's cache holds nothing else of the kinds the operator owns.
func ChildrenLabels() map[string]string {
	return map[string]string{LabelName: appName}
}

// Labels are the labels of every child object.
func Labels(mc *v1alpha1.MQTTCluster) map[string]string {
	l := SelectorLabels(mc)
	l[LabelComponent] = component
	l[LabelManagedBy] = managedBy
	l[LabelPartOf] = managedBy
	return l
}

// mergeLabels returns base with the operator's labels on top (they win).
func mergeLabels(base map[string]string, ours map[string]string) map[string]string {
	out := make(map[string]string, len(base)+len(ours))
	maps.Copy(out, base)
	maps.Copy(out, ours)
	return out
}

// Names of the children.

// StatefulSetName is the StatefulSet's (and the pods' prefix).
func StatefulSetName(mc *v1alpha1.MQTTCluster) string { return mc.Name }

// HeadlessServiceName is the governing Service that gives pods stable DNS names.
func HeadlessServiceName(mc *v1alpha1.MQTTCluster) string { return mc.Name + "-headless" }

// ClientServiceName is the Service clients connect to.
func ClientServiceName(mc *v1alpha1.MQTTCluster) string { return mc.Name }

// InternalServiceName is the ClusterIP Service of the plain listeners (HasPlain).
func InternalServiceName(mc *v1alpha1.MQTTCluster) string { return mc.Name + "-internal" }

// DashboardServiceName is the dashboard's Service.
func DashboardServiceName(mc *v1alpha1.MQTTCluster) string { return mc.Name + "-dashboard" }

// ConfigMapName holds mqttd.yaml.
func ConfigMapName(mc *v1alpha1.MQTTCluster) string { return mc.Name + "-config" }

// PDBName is the PodDisruptionBudget's.
func PDBName(mc *v1alpha1.MQTTCluster) string { return mc.Name }

// CookieSecret returns the Secret name and key that hold the cluster cookie: the
// user's when spec.cookieSecretRef is set, else the generated one.
func CookieSecret(mc *v1alpha1.MQTTCluster) (name, key string) {
	if r := mc.Spec.CookieSecretRef; r != nil {
		return r.Name, r.Key
	}
	return mc.Name + "-cookie", CookieKey
}

// APITokenSecret returns the Secret name and key that hold the API token.
func APITokenSecret(mc *v1alpha1.MQTTCluster) (name, key string) {
	if r := mc.Spec.APITokenSecretRef; r != nil {
		return r.Name, r.Key
	}
	return mc.Name + "-api-token", APITokenKey
}

// GeneratedUsersSecretName is the users Secret the operator generates.
func GeneratedUsersSecretName(mc *v1alpha1.MQTTCluster) string { return mc.Name + "-users" }

// AllowAnonymous reports whether clients may connect without a username (the
// default, also without spec.auth).
func AllowAnonymous(mc *v1alpha1.MQTTCluster) bool {
	a := mc.Spec.Auth
	return a == nil || a.AllowAnonymous == nil || *a.AllowAnonymous
}

// UsersSecret returns the Secret whose key UsersKey the pods mount as the users file:
// the user's (spec.auth.usersSecretRef), or the generated one when anonymous clients
// are refused without it; ok is false when there is none.
func UsersSecret(mc *v1alpha1.MQTTCluster) (name string, ok bool) {
	if a := mc.Spec.Auth; a != nil && a.UsersSecretRef != nil {
		return a.UsersSecretRef.Name, true
	}
	if !AllowAnonymous(mc) {
		return GeneratedUsersSecretName(mc), true
	}
	return "", false
}

// GeneratesUsersSecret reports whether the operator makes the users Secret.
func GeneratesUsersSecret(mc *v1alpha1.MQTTCluster) bool {
	return !AllowAnonymous(mc) && mc.Spec.Auth.UsersSecretRef == nil
}

// hash is a short, stable digest of b.
func hash(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

// PodName is the name of the pod with the given ordinal.
func PodName(mc *v1alpha1.MQTTCluster, ordinal int) string {
	return fmt.Sprintf("%s-%d", StatefulSetName(mc), ordinal)
}

// ClusterAddress is the cluster address a pod advertises: its stable DNS name under
// the headless Service and the cluster port.
func ClusterAddress(mc *v1alpha1.MQTTCluster, pod string) string {
	return fmt.Sprintf("%s.%s.%s.svc:%d", pod, HeadlessServiceName(mc), mc.Namespace, ClusterPort)
}

// DataClaimName is the name of the PersistentVolumeClaim of a pod.
func DataClaimName(mc *v1alpha1.MQTTCluster, pod string) string {
	return DataVolume + "-" + pod
}
