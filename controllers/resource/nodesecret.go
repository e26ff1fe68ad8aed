package resource

import (
	"encoding/json"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
)

// Keys of the node Secret.
const (
	// NodeCookieKey is the cluster cookie the nodes run.
	NodeCookieKey = "cookie"
	// NodeTokenKey is the API token the nodes are given.
	NodeTokenKey = "api-token"
	// NodePreviousTokensKey lists, as a JSON array, the API tokens some node may
	// still run while a new one rolls out; absent when none.
	NodePreviousTokensKey = "api-token-previous"
)

// AnnotationAPITokenHash on the pod template changes with the API token the nodes
// are given, so that a new token rolls the pods (mqttd reads its token file only
// at start).
const AnnotationAPITokenHash = "broker.mqtt-operator.io/api-token-hash"

// NodeSecretName is the Secret the pods take the cookie and the API token from: the
// operator's copy of what the nodes run, so that a cookie changed in its own Secret
// never reaches a pod while the cluster runs (docs/architecture.md, "Cookie and API
// token").
func NodeSecretName(mc *v1alpha1.MQTTCluster) string { return mc.Name + "-node-secrets" }

// NodeSecrets are the values of the node Secret.
type NodeSecrets struct {
	Cookie []byte
	Token  []byte
	// PreviousTokens are older tokens some node may still run, newest first.
	PreviousTokens []string
}

// ReadNodeSecrets returns the values of a node Secret (zero values when keys are
// missing).
func ReadNodeSecrets(s *corev1.Secret) (NodeSecrets, error) {
	v := NodeSecrets{Cookie: s.Data[NodeCookieKey], Token: s.Data[NodeTokenKey]}
	if raw := s.Data[NodePreviousTokensKey]; len(raw) > 0 {
		if err := json.Unmarshal(raw, &v.PreviousTokens); err != nil {
			return v, err
		}
	}
	return v, nil
}

// NodeSecretBuilder builds the node Secret with exactly Values.
type NodeSecretBuilder struct {
	Cluster *v1alpha1.MQTTCluster
	Values  NodeSecrets
}

// Object implements Builder.
func (b *NodeSecretBuilder) Object() client.Object {
	return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: NodeSecretName(b.Cluster), Namespace: b.Cluster.Namespace}}
}

// Mutate implements Builder.
func (b *NodeSecretBuilder) Mutate(obj client.Object) error {
	s, err := as[*corev1.Secret](obj, "NodeSecretBuilder")
	if err != nil {
		return err
	}
	s.Labels = mergeLabels(s.Labels, Labels(b.Cluster))
	if s.CreationTimestamp.IsZero() {
		s.Type = corev1.SecretTypeOpaque
	}
	s.Data = map[string][]byte{NodeCookieKey: b.Values.Cookie, NodeTokenKey: b.Values.Token}
	if len(b.Values.PreviousTokens) > 0 {
		raw, err := json.Marshal(b.Values.PreviousTokens)
		if err != nil {
			return err
		}
		s.Data[NodePreviousTokensKey] = raw
	}
	return nil
}

// TokenHash is the digest of an API token on the pod template: salted with the
// cluster's UID, so that equal tokens of two clusters do not show, and short.
func TokenHash(mc *v1alpha1.MQTTCluster, token []byte) string {
	return hash(append([]byte(string(mc.UID)+"\x00"), token...))
}
