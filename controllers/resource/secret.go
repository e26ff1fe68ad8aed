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
	"github.com/mqtt-operator/mqtt-operator/broker/auth"
)

// Keys of the generated Secrets.
const (
	CookieKey   = "cookie"
	APITokenKey = "token"
	// UsersKey holds the "username:bcrypt-hash" lines mqttd reads (auth.users_file);
	// a users Secret of the user's must have it too.
	UsersKey = "users"
	// UsernameKey and PasswordKey of the generated users Secret hold its one user's
	// credentials in clear, for clients; they are not mounted in the pods.
	UsernameKey = "username"
	PasswordKey = "password"
)

// Settings of the generated user.
const (
	// GeneratedUsername is the user of a generated users Secret.
	GeneratedUsername = "mqtt"
	// passwordBytes of randomness: 32 characters of base64url.
	passwordBytes = 24
	// BcryptCost of generated hashes (bcrypt.DefaultCost, as mqttd passwd).
	BcryptCost = 10
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

// FingerprintKeySecretName is the Secret holding the cluster's fingerprint key: the
// HMAC key of the cookie fingerprint on the StatefulSet and of the API token hash on
// its pod template. It is kept apart from the node Secret so that the cookie in force
// can still be told from another when the node Secret is gone.
func FingerprintKeySecretName(mc *v1alpha1.MQTTCluster) string { return mc.Name + "-fingerprint-key" }

// FingerprintKeyKey is the key of the fingerprint key Secret.
const FingerprintKeyKey = "key"

// FingerprintKeySecretBuilder builds the generated fingerprint key Secret.
func FingerprintKeySecretBuilder(mc *v1alpha1.MQTTCluster) *GeneratedSecret {
	return &GeneratedSecret{Cluster: mc, Name: FingerprintKeySecretName(mc), Key: FingerprintKeyKey}
}

// Object implements Builder.
func (b *GeneratedSecret) Object() client.Object {
	return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: b.Name, Namespace: b.Cluster.Namespace}}
}

// Mutate implements Builder: it fills the value only when the key is missing or
// empty, so an existing cookie survives every reconcile and operator restart.
func (b *GeneratedSecret) Mutate(obj client.Object) error {
	s, err := as[*corev1.Secret](obj, "GeneratedSecret")
	if err != nil {
		return err
	}
	s.Labels = mergeLabels(s.Labels, Labels(b.Cluster))
	if s.CreationTimestamp.IsZero() {
		s.Type = corev1.SecretTypeOpaque
	}
	if len(s.Data[b.Key]) > 0 {
		return nil
	}
	token, err := randomToken(b.Rand, 32)
	if err != nil {
		return fmt.Errorf("generating %s: %w", b.Name, err)
	}
	if s.Data == nil {
		s.Data = map[string][]byte{}
	}
	s.Data[b.Key] = []byte(token)
	return nil
}

// randomToken is n random bytes from r (crypto/rand when nil), base64url-encoded.
func randomToken(r io.Reader, n int) (string, error) {
	if r == nil {
		r = rand.Reader
	}
	raw := make([]byte, n)
	if _, err := io.ReadFull(r, raw); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(raw), nil
}

// UsersSecretBuilder builds the generated users Secret of a cluster that refuses
// anonymous clients without naming a users Secret of its own.
func UsersSecretBuilder(mc *v1alpha1.MQTTCluster) *GeneratedUsersSecret {
	return &GeneratedUsersSecret{Cluster: mc}
}

// GeneratedUsersSecret is the Secret "<name>-users": one user with a random password,
// made once. The "users" key is what the pods mount; "username" and "password" are
// there for clients (the demo reads them with kubectl).
type GeneratedUsersSecret struct {
	Cluster *v1alpha1.MQTTCluster
	// Rand is the source of the password (crypto/rand when nil).
	Rand io.Reader
}

// Object implements Builder.
func (b *GeneratedUsersSecret) Object() client.Object {
	return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: GeneratedUsersSecretName(b.Cluster), Namespace: b.Cluster.Namespace}}
}

// Mutate implements Builder. The Secret is filled only when it is created: afterwards
// it belongs to whoever edits it (adding users is how it is meant to be used), so
// neither the password nor an edit is ever overwritten — not even an emptied "users"
// key, which locks every client out on purpose (the controller reports it).
func (b *GeneratedUsersSecret) Mutate(obj client.Object) error {
	s, err := as[*corev1.Secret](obj, "GeneratedUsersSecret")
	if err != nil {
		return err
	}
	s.Labels = mergeLabels(s.Labels, Labels(b.Cluster))
	if !s.CreationTimestamp.IsZero() {
		return nil
	}
	s.Type = corev1.SecretTypeOpaque
	password, err := randomToken(b.Rand, passwordBytes)
	if err != nil {
		return fmt.Errorf("generating %s: %w", s.Name, err)
	}
	line, err := UsersLine(GeneratedUsername, password)
	if err != nil {
		return fmt.Errorf("generating %s: %w", s.Name, err)
	}
	if s.Data == nil {
		s.Data = map[string][]byte{}
	}
	s.Data[UsernameKey] = []byte(GeneratedUsername)
	s.Data[PasswordKey] = []byte(password)
	s.Data[UsersKey] = []byte(line)
	return nil
}

// UsersLine is the users-file line of username with password, as `mqttd passwd`
// writes it: "username:bcrypt-hash\n".
func UsersLine(username, password string) (string, error) {
	line, err := auth.HashLine(username, []byte(password), BcryptCost)
	if err != nil {
		return "", err
	}
	return line + "\n", nil
}
