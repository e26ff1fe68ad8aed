package resource

import (
	"fmt"
	"net"
	"slices"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
	"github.com/mqtt-operator/mqtt-operator/broker/config"
)

// ConfigFile is the key of mqttd.yaml in the ConfigMap and its name in the pod.
const ConfigFile = "mqttd.yaml"

// RenderConfig renders the mqttd configuration of mc: the broker's defaults, the
// listeners from spec.listeners, the HTTP API on APIPort, JSON logs, then the user's
// spec.config settings. An
// unknown key or a bad value is the user's error, returned with the key named.
func RenderConfig(mc *v1alpha1.MQTTCluster) ([]byte, error) {
	cfg := config.Default()
	cfg.Log.Format = "json"
	// The probes and, later, the operator's cluster verbs use the HTTP API.
	cfg.API.Listen = net.JoinHostPort("0.0.0.0", strconv.Itoa(int(APIPort)))
	cfg.Store.Dir = DataDir
	// Every node opens the cluster port and authenticates peers with the cookie; the
	// node name and the address it advertises come from the pod
	// (MQTTD_CLUSTER_NODE_NAME, MQTTD_CLUSTER_ADVERTISE). Joins are the operator's to
	// order, through the API and its token: no seeds, no bootstrap flag here.
	cfg.Cluster.Listen = net.JoinHostPort("0.0.0.0", strconv.Itoa(int(ClusterPort)))
	cfg.Cluster.CookieFile = SecretsDir + "/cookie"
	cfg.API.TokenFile = SecretsDir + "/api-token"
	cfg.Listeners.TCP, cfg.Listeners.WebSocket = "", ""
	for _, l := range mc.Spec.Listeners {
		addr := net.JoinHostPort("0.0.0.0", strconv.Itoa(int(l.Port)))
		switch l.Name {
		case v1alpha1.ListenerMQTT:
			cfg.Listeners.TCP = addr
		case v1alpha1.ListenerWS:
			cfg.Listeners.WebSocket = addr
		}
	}
	keys := slices.Sorted(func(yield func(string) bool) {
		for k := range mc.Spec.Config {
			if !yield(k) {
				return
			}
		}
	})
	for _, k := range keys {
		if err := cfg.Set(k, mc.Spec.Config[k]); err != nil {
			return nil, fmt.Errorf("spec.config: %w", err)
		}
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("spec.config: %w", err)
	}
	return cfg.YAML()
}

// ConfigMapBuilder builds the ConfigMap with the rendered mqttd.yaml.
type ConfigMapBuilder struct {
	Cluster *v1alpha1.MQTTCluster
	Config  []byte // from RenderConfig
}

// Object implements Builder.
func (b *ConfigMapBuilder) Object() client.Object {
	return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: ConfigMapName(b.Cluster), Namespace: b.Cluster.Namespace}}
}

// Mutate implements Builder.
func (b *ConfigMapBuilder) Mutate(obj client.Object) error {
	cm, ok := obj.(*corev1.ConfigMap)
	if !ok {
		return fmt.Errorf("ConfigMapBuilder.Mutate: got %T, want *corev1.ConfigMap", obj)
	}
	cm.Labels = mergeLabels(cm.Labels, Labels(b.Cluster))
	cm.Data = map[string]string{ConfigFile: string(b.Config)}
	return nil
}

// ConfigHash is the digest recorded on the pod template for config.
func ConfigHash(config []byte) string { return hash(config) }
