package resource

import (
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
	"github.com/mqtt-operator/mqtt-operator/broker/auth"
	"github.com/mqtt-operator/mqtt-operator/broker/config"
)

// Keys of the ConfigMap, which is mounted as a directory at ConfigDir (never with
// subPath, whose files the kubelet does not update).
const (
	// ConfigFile is mqttd.yaml: read at start, so its hash is on the pod template
	// and a change rolls the pods.
	ConfigFile = "mqttd.yaml"
	// ACLFile is the ACL rules: mqttd re-reads it when the kubelet updates the
	// volume, so it stays out of every hash and a change restarts nothing.
	ACLFile = "acl.yaml"
)

// operatorAuthKeys are the auth settings spec.auth decides; spec.config may not set
// them (the CRD says so too).
var operatorAuthKeys = []string{"auth.allow_anonymous", "auth.users_file", "auth.acl_file"}

// RenderConfig renders the mqttd configuration of mc: the broker's defaults, the
// listeners from spec.listeners, the HTTP API on APIPort, JSON logs, the auth files
// from spec.auth, then the user's spec.config settings. An unknown key or a bad value
// is the user's error, returned with the key named.
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
		case v1alpha1.ListenerMQTTS:
			// The Secret's volume: the kubelet replaces the files when the Secret
			// changes and mqttd reads them again, so a renewal restarts nothing.
			cfg.Listeners.MQTTS = addr
			cfg.Listeners.MQTTSCertFile = TLSDir + "/mqtts/" + corev1.TLSCertKey
			cfg.Listeners.MQTTSKeyFile = TLSDir + "/mqtts/" + corev1.TLSPrivateKeyKey
		case v1alpha1.ListenerWSS:
			cfg.Listeners.WSS = addr
			cfg.Listeners.WSSCertFile = TLSDir + "/wss/" + corev1.TLSCertKey
			cfg.Listeners.WSSKeyFile = TLSDir + "/wss/" + corev1.TLSPrivateKeyKey
		}
	}
	// The users file and the ACL are mounted files that mqttd re-reads on change.
	cfg.Auth.AllowAnonymous = AllowAnonymous(mc)
	if _, ok := UsersSecret(mc); ok {
		cfg.Auth.UsersFile = UsersDir + "/" + UsersKey
	}
	if mc.Spec.Dashboard.Enabled {
		cfg.Dashboard.Listen = net.JoinHostPort("0.0.0.0", strconv.Itoa(int(DashboardPort)))
		if mc.Spec.Dashboard.AdminSecretRef != nil {
			// The Secret's volume: mqttd reads the files at every login, so a changed
			// password applies without a restart (and ends the sessions).
			cfg.Dashboard.UsernameFile = DashboardDir + "/username"
			cfg.Dashboard.PasswordFile = DashboardDir + "/password"
		}
	}
	// Always an ACL file, even without rules: adding the first rule then changes a
	// mounted file that mqttd reloads, not mqttd.yaml (which would restart the pods).
	cfg.Auth.ACLFile = ConfigDir + "/" + ACLFile
	keys := slices.Sorted(func(yield func(string) bool) {
		for k := range mc.Spec.Config {
			if !yield(k) {
				return
			}
		}
	})
	for _, k := range keys {
		if slices.Contains(operatorAuthKeys, k) {
			return nil, fmt.Errorf("spec.config: %s is set by spec.auth", k)
		}
		if strings.HasPrefix(k, "dashboard.") {
			// The CRD refuses them too; an older CRD may not.
			return nil, fmt.Errorf("spec.config: %s is set by spec.dashboard", k)
		}
		if err := cfg.Set(k, mc.Spec.Config[k]); err != nil {
			return nil, fmt.Errorf("spec.config: %w", err)
		}
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("spec.config: %w", err)
	}
	return cfg.YAML()
}

// aclDocument is mqttd's ACL file (auth.acl_file): the field names are mqttd's.
type aclDocument struct {
	Default string    `yaml:"default"`
	Rules   []aclRule `yaml:"rules"`
}

type aclRule struct {
	Username string `yaml:"username"`
	ClientID string `yaml:"clientid,omitempty"`
	Topic    string `yaml:"topic"`
	Access   string `yaml:"access"`
	Action   string `yaml:"action"`
}

// RenderACL renders spec.auth's ACL as mqttd's ACL file; without spec.auth or rules
// it is "default: allow" with no rules (every topic but '$' ones: $SYS is readable
// only where a rule allows it). The file is checked with mqttd's own parser: a rule
// mqttd would refuse is the user's error, reported in status (mqttd would refuse the
// whole file and keep its previous rules).
func RenderACL(mc *v1alpha1.MQTTCluster) ([]byte, error) {
	a := mc.Spec.Auth
	if a == nil {
		a = &v1alpha1.AuthSpec{}
	}
	doc := aclDocument{Default: a.ACLDefault, Rules: make([]aclRule, 0, len(a.ACL))}
	if doc.Default == "" {
		doc.Default = "allow"
	}
	for _, r := range a.ACL {
		doc.Rules = append(doc.Rules, aclRule{Username: r.Username, ClientID: r.ClientID, Topic: r.Topic, Access: r.Access, Action: r.Action})
	}
	out, err := yaml.Marshal(doc)
	if err != nil {
		return nil, err
	}
	if _, err := auth.ParseACL(out); err != nil {
		return nil, fmt.Errorf("spec.auth.acl: %w", err)
	}
	return out, nil
}

// ConfigMapBuilder builds the ConfigMap with the rendered mqttd.yaml and ACL.
type ConfigMapBuilder struct {
	Cluster *v1alpha1.MQTTCluster
	Config  []byte // from RenderConfig
	ACL     []byte // from RenderACL (nil only in tests: the key is then removed)
}

// Object implements Builder.
func (b *ConfigMapBuilder) Object() client.Object {
	return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: ConfigMapName(b.Cluster), Namespace: b.Cluster.Namespace}}
}

// Mutate implements Builder.
func (b *ConfigMapBuilder) Mutate(obj client.Object) error {
	cm, err := as[*corev1.ConfigMap](obj, "ConfigMapBuilder")
	if err != nil {
		return err
	}
	cm.Labels = mergeLabels(cm.Labels, Labels(b.Cluster))
	cm.Data = map[string]string{ConfigFile: string(b.Config)}
	if b.ACL != nil {
		cm.Data[ACLFile] = string(b.ACL)
	}
	return nil
}

// ConfigHash is the digest recorded on the pod template for config: the rendered
// mqttd.yaml only. Files mqttd re-reads (the ACL, the users) must never feed it.
func ConfigHash(config []byte) string { return hash(config) }
