package resource

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
)

// Keys of the generated Secrets.
const (
	CookieKey   = "cookie"
	APITokenKey = "token"
)

// GeneratedSecret is a Secret holding one random value that is created once and never
// regenerated: the cluster cookie or the API token when the user brings none.
type GeneratedSecret struct {
	Cluster *v1alpha1.MQTTCluster
	Name    string
	Key     string
	// Rand is the source of the value (crypto/rand when nil).
	Rand io.Reader
}

// CookieSecretBuilder builds the generated cookie Secret.
func CookieSecretBuilder(mc *v1alpha1.MQTTCluster) *GeneratedSecret {
	name, key := CookieSecret(mc)
	return &GeneratedSecret{Cluster: mc, Name: name, Key: key}
}

// APITokenSecretBuilder builds the generated API token Secret.
func APITokenSecretBuilder(mc *v1alpha1.MQTTCluster) *GeneratedSecret {
	name, key := APITokenSecret(mc)
	return &GeneratedSecret{Cluster: mc, Name: name, Key: key}
}

// Object implements Builder.
func (b *GeneratedSecret) Object() client.Object {
	return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: b.Name, Namespace: b.Cluster.Namespace}}
}

// Mutate implements Builder: it fills the value only when the key is missing or
// empty, so an existing cookie survives every reconcile and operator restart.
func (b *GeneratedSecret) Mutate(obj client.Object) error {
	s, ok := obj.(*corev1.Secret)
	if !ok {
		return fmt.Errorf("GeneratedSecret.Mutate: got %T, want *corev1.Secret", obj)
	}
	s.Labels = mergeLabels(s.Labels, Labels(b.Cluster))
	if s.CreationTimestamp.IsZero() {
		s.Type = corev1.SecretTypeOpaque
	}
	if len(s.Data[b.Key]) > 0 {
		return nil
	}
	r := b.Rand
	if r == nil {
		r = rand.Reader
	}
	raw := make([]byte, 32)
	if _, err := io.ReadFull(r, raw); err != nil {
		return fmt.Errorf("generating %s: %w", b.Name, err)
	}
	if s.Data == nil {
		s.Data = map[string][]byte{}
	}
	s.Data[b.Key] = []byte(base64.RawURLEncoding.EncodeToString(raw))
	return nil
}
