package resource

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"

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

// AnnotationCookieFingerprint on the StatefulSet's own metadata (not its template:
// it rolls nothing) is Fingerprint of the cookie the nodes run. When the node Secret
// is gone while pods run, it tells whether the cookie Secret still holds that cookie.
const AnnotationCookieFingerprint = "broker.mqtt-operator.io/cookie-fingerprint"

// ErrUnreadableNodeSecret is returned when the node Secret exists but its values cannot be read.
var ErrUnreadableNodeSecret = errors.New("unreadable node Secret")

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

// NodeSecretBuilder builds the node Secret with the values Next decides from the ones
// the Secret being written holds (nil: it does not exist), so that a write retried
// on a conflict decides again on what is there rather than on an older read.
type NodeSecretBuilder struct {
	Cluster *v1alpha1.MQTTCluster
	Next    func(inForce *NodeSecrets) (NodeSecrets, error)
	// Written are the values of the last Mutate.
	Written NodeSecrets
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
	var inForce *NodeSecrets
	if s.ResourceVersion != "" {
		v, err := ReadNodeSecrets(s)
		if err != nil {
			return fmt.Errorf("%w %q: %w", ErrUnreadableNodeSecret, s.Name, err)
		}
		inForce = &v
	}
	values, err := b.Next(inForce)
	if err != nil {
		return err
	}
	b.Written = values
	s.Labels = mergeLabels(s.Labels, Labels(b.Cluster))
	if s.CreationTimestamp.IsZero() {
		s.Type = corev1.SecretTypeOpaque
	}
	s.Data = map[string][]byte{NodeCookieKey: values.Cookie, NodeTokenKey: values.Token}
	if len(values.PreviousTokens) > 0 {
		raw, err := json.Marshal(values.PreviousTokens)
		if err != nil {
			return err
		}
		s.Data[NodePreviousTokensKey] = raw
	}
	return nil
}

// TokenHash is the digest of an API token on the pod template: Fingerprint with the
// cluster's fingerprint key, so that it changes with the token and cannot be guessed
// offline by whoever can read the StatefulSet but not the key's Secret.
func TokenHash(key, token []byte) string { return Fingerprint(key, token) }

// Fingerprint is a short HMAC-SHA256 of value under the cluster's fingerprint key
// (FingerprintKeySecretName).
func Fingerprint(key, value []byte) string {
	m := hmac.New(sha256.New, key)
	m.Write(value)
	return hex.EncodeToString(m.Sum(nil)[:16])
}
