package resource

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apiresource "k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
	"github.com/mqtt-operator/mqtt-operator/broker/config"
)

// cluster returns an MQTTCluster with the API's defaults filled in, as the API server
// would store it.
func cluster() *v1alpha1.MQTTCluster {
	return &v1alpha1.MQTTCluster{
		ObjectMeta: metav1.ObjectMeta{Name: "demo", Namespace: "ns", UID: "uid-1"},
		Spec: v1alpha1.MQTTClusterSpec{
			Replicas:        ptr.To[int32](3),
			Image:           "mqttd:test",
			ImagePullPolicy: corev1.PullIfNotPresent,
			Storage: v1alpha1.StorageSpec{Size: ptr.To(apiresource.MustParse("1Gi")),
				Retention: v1alpha1.RetentionPolicy{WhenScaled: v1alpha1.Delete, WhenDeleted: v1alpha1.Retain}},
			Listeners: []v1alpha1.Listener{{Name: v1alpha1.ListenerMQTT, Port: 1883}, {Name: v1alpha1.ListenerWS, Port: 8083}},
			Service:   v1alpha1.ServiceSpec{Type: corev1.ServiceTypeClusterIP},
		},
	}
}

func TestLabels(t *testing.T) {
	mc := cluster()
	sel := SelectorLabels(mc)
	if len(sel) != 2 || sel[LabelName] != "mqttd" || sel[LabelInstance] != "demo" {
		t.Fatalf("selector labels %v", sel)
	}
	l := Labels(mc)
	for k, v := range sel {
		if l[k] != v {
			t.Fatalf("labels %v lack selector label %s=%s", l, k, v)
		}
	}
	if l[LabelManagedBy] != "mqtt-operator" {
		t.Fatalf("labels %v", l)
	}
	// The user's pod labels never override the operator's.
	if got := mergeLabels(map[string]string{LabelInstance: "other", "team": "a"}, l); got[LabelInstance] != "demo" || got["team"] != "a" {
		t.Fatalf("merged %v", got)
	}
}

func TestGeneratedSecret(t *testing.T) {
	mc := cluster()
	b := CookieSecretBuilder(mc)
	b.Rand = bytes.NewReader(bytes.Repeat([]byte{7}, 64))
	s := b.Object().(*corev1.Secret)
	if s.Name != "demo-cookie" || s.Namespace != "ns" {
		t.Fatalf("named %s/%s", s.Namespace, s.Name)
	}
	if err := b.Mutate(s); err != nil {
		t.Fatal(err)
	}
	first := string(s.Data[CookieKey])
	if len(first) != 43 || s.Type != corev1.SecretTypeOpaque || s.Labels[LabelInstance] != "demo" {
		t.Fatalf("generated %q (type %s, labels %v)", first, s.Type, s.Labels)
	}
	// A later reconcile keeps the value, whatever the random source says.
	b.Rand = bytes.NewReader(bytes.Repeat([]byte{9}, 64))
	if err := b.Mutate(s); err != nil {
		t.Fatal(err)
	}
	if string(s.Data[CookieKey]) != first {
		t.Fatal("the cookie was regenerated")
	}
	// A failing random source is an error, not an empty cookie.
	empty := &corev1.Secret{}
	b.Rand = io.LimitReader(nil, 0)
	if err := b.Mutate(empty); err == nil || len(empty.Data[CookieKey]) != 0 {
		t.Fatalf("Mutate with no randomness: %v, %q", err, empty.Data[CookieKey])
	}
	if err := b.Mutate(&corev1.ConfigMap{}); err == nil {
		t.Fatal("Mutate accepted a ConfigMap")
	}

	mc.Spec.APITokenSecretRef = &v1alpha1.SecretKeySelector{Name: "mine", Key: "tok"}
	if name, key := APITokenSecret(mc); name != "mine" || key != "tok" {
		t.Fatalf("user's token Secret: %s/%s", name, key)
	}
	if name, key := CookieSecret(mc); name != "demo-cookie" || key != CookieKey {
		t.Fatalf("generated cookie Secret: %s/%s", name, key)
	}
}

func TestGeneratedUsersSecret(t *testing.T) {
	mc := cluster()
	mc.Spec.Auth = &v1alpha1.AuthSpec{AllowAnonymous: ptr.To(false)}
	if !GeneratesUsersSecret(mc) {
		t.Fatal("anonymous off without a users Secret: the operator must generate one")
	}
	b := UsersSecretBuilder(mc)
	b.Rand = bytes.NewReader(bytes.Repeat([]byte{7}, 64))
	s := b.Object().(*corev1.Secret)
	if s.Name != "demo-users" || s.Namespace != "ns" {
		t.Fatalf("named %s/%s", s.Namespace, s.Name)
	}
	if err := b.Mutate(s); err != nil {
		t.Fatal(err)
	}
	user, password, line := string(s.Data[UsernameKey]), string(s.Data[PasswordKey]), string(s.Data[UsersKey])
	if user != "mqtt" || len(password) < 24 || s.Type != corev1.SecretTypeOpaque || s.Labels[LabelInstance] != "demo" {
		t.Fatalf("generated user %q password %q (type %s, labels %v)", user, password, s.Type, s.Labels)
	}
	name, hash, ok := strings.Cut(strings.TrimSuffix(line, "\n"), ":")
	if !ok || name != "mqtt" || strings.Contains(line, password) {
		t.Fatalf("users line %q", line)
	}
	if cost, err := bcrypt.Cost([]byte(hash)); err != nil || cost != 10 {
		t.Fatalf("bcrypt cost %d, %v", cost, err)
	}
	if bcrypt.CompareHashAndPassword([]byte(hash), []byte(password)) != nil {
		t.Fatal("the hash is not the password's")
	}
	// Once stored, never regenerated: a user added by hand stays, and an emptied
	// users key stays empty (the controller reports it).
	s.CreationTimestamp = metav1.Now()
	s.Data[UsersKey] = append(s.Data[UsersKey], []byte("alice:$2a$10$x\n")...)
	edited := string(s.Data[UsersKey])
	b.Rand = bytes.NewReader(bytes.Repeat([]byte{9}, 64))
	if err := b.Mutate(s); err != nil {
		t.Fatal(err)
	}
	if string(s.Data[PasswordKey]) != password || string(s.Data[UsersKey]) != edited {
		t.Fatal("the users Secret was regenerated")
	}
	delete(s.Data, UsersKey)
	if err := b.Mutate(s); err != nil || len(s.Data[UsersKey]) != 0 || string(s.Data[PasswordKey]) != password {
		t.Fatalf("an emptied users key was refilled: %v, %q", err, s.Data[UsersKey])
	}
	empty := &corev1.Secret{}
	b.Rand = io.LimitReader(nil, 0)
	if err := b.Mutate(empty); err == nil || len(empty.Data[UsersKey]) != 0 {
		t.Fatalf("Mutate with no randomness: %v, %q", err, empty.Data[UsersKey])
	}
	if err := b.Mutate(&corev1.ConfigMap{}); err == nil {
		t.Fatal("Mutate accepted a ConfigMap")
	}
}

func TestUsersSecret(t *testing.T) {
	for _, tc := range []struct {
		name          string
		auth          *v1alpha1.AuthSpec
		want          string // "" when none
		generated     bool
		anonymousOpen bool
	}{
		{"no auth", nil, "", false, true},
		{"anonymous allowed", &v1alpha1.AuthSpec{AllowAnonymous: ptr.To(true)}, "", false, true},
		{"anonymous allowed, users of the user's", &v1alpha1.AuthSpec{AllowAnonymous: ptr.To(true),
			UsersSecretRef: &corev1.LocalObjectReference{Name: "mine"}}, "mine", false, true},
		{"anonymous off, users of the user's", &v1alpha1.AuthSpec{AllowAnonymous: ptr.To(false),
			UsersSecretRef: &corev1.LocalObjectReference{Name: "mine"}}, "mine", false, false},
		{"anonymous off, no users Secret", &v1alpha1.AuthSpec{AllowAnonymous: ptr.To(false)}, "demo-users", true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mc := cluster()
			mc.Spec.Auth = tc.auth
			name, ok := UsersSecret(mc)
			if name != tc.want || ok != (tc.want != "") || GeneratesUsersSecret(mc) != tc.generated || AllowAnonymous(mc) != tc.anonymousOpen {
				t.Fatalf("UsersSecret %q %v, generated %v, anonymous %v", name, ok, GeneratesUsersSecret(mc), AllowAnonymous(mc))
			}
		})
	}
}

func TestRenderConfig(t *testing.T) {
	for _, tc := range []struct {
		name    string
		edit    func(*v1alpha1.MQTTCluster)
		wantErr string
		check   func(t *testing.T, c config.Config)
	}{
		{"defaults", func(*v1alpha1.MQTTCluster) {}, "", func(t *testing.T, c config.Config) {
			if c.Listeners.TCP != "0.0.0.0:1883" || c.Listeners.WebSocket != "0.0.0.0:8083" || c.Log.Format != "json" ||
				c.API.Listen != "0.0.0.0:8080" || c.Store.Dir != "/var/lib/mqttd" ||
				c.Cluster.Listen != "0.0.0.0:4370" || c.Cluster.CookieFile != "/etc/mqttd/secrets/cookie" {
				t.Fatalf("listeners/log %+v %+v", c.Listeners, c.Log)
			}
		}},
		{"mqtt only on another port", func(mc *v1alpha1.MQTTCluster) {
			mc.Spec.Listeners = []v1alpha1.Listener{{Name: v1alpha1.ListenerMQTT, Port: 11883}}
		}, "", func(t *testing.T, c config.Config) {
			if c.Listeners.TCP != "0.0.0.0:11883" || c.Listeners.WebSocket != "" {
				t.Fatalf("listeners %+v", c.Listeners)
			}
		}},
		{"extra settings", func(mc *v1alpha1.MQTTCluster) {
			mc.Spec.Config = map[string]string{"limits.max_queued_messages": "42", "log.level": "debug"}
		}, "", func(t *testing.T, c config.Config) {
			if c.Limits.MaxQueued != 42 || c.Log.Level != "debug" {
				t.Fatalf("settings not applied: %+v %+v", c.Limits, c.Log)
			}
		}},
		{"unknown key", func(mc *v1alpha1.MQTTCluster) { mc.Spec.Config = map[string]string{"limits.bogus": "1"} },
			"spec.config: limits.bogus: unknown setting", nil},
		{"bad value", func(mc *v1alpha1.MQTTCluster) {
			mc.Spec.Config = map[string]string{"limits.max_queued_messages": "lots"}
		}, "limits.max_queued_messages", nil},
		{"invalid combination", func(mc *v1alpha1.MQTTCluster) {
			mc.Spec.Config = map[string]string{"limits.queue_drop_policy": "drop-random"}
		}, "queue_drop_policy", nil},
		{"anonymous clients by default, no users file, always the ACL file", func(*v1alpha1.MQTTCluster) {}, "", func(t *testing.T, c config.Config) {
			if !c.Auth.AllowAnonymous || c.Auth.UsersFile != "" || c.Auth.ACLFile != "/etc/mqttd/config/acl.yaml" {
				t.Fatalf("auth %+v", c.Auth)
			}
		}},
		{"anonymous off: the generated users file", func(mc *v1alpha1.MQTTCluster) {
			mc.Spec.Auth = &v1alpha1.AuthSpec{AllowAnonymous: ptr.To(false)}
		}, "", func(t *testing.T, c config.Config) {
			if c.Auth.AllowAnonymous || c.Auth.UsersFile != "/etc/mqttd/users/users" || c.Auth.ACLFile != "/etc/mqttd/config/acl.yaml" {
				t.Fatalf("auth %+v", c.Auth)
			}
		}},
		{"users of the user's beside anonymous clients", func(mc *v1alpha1.MQTTCluster) {
			mc.Spec.Auth = &v1alpha1.AuthSpec{AllowAnonymous: ptr.To(true), UsersSecretRef: &corev1.LocalObjectReference{Name: "u"}}
		}, "", func(t *testing.T, c config.Config) {
			if !c.Auth.AllowAnonymous || c.Auth.UsersFile != "/etc/mqttd/users/users" {
				t.Fatalf("auth %+v", c.Auth)
			}
		}},
		{"ACL rules: the ACL file", func(mc *v1alpha1.MQTTCluster) {
			mc.Spec.Auth = &v1alpha1.AuthSpec{ACLDefault: "allow", ACL: []v1alpha1.ACLRule{{Username: "*", Topic: "#", Access: "all", Action: "deny"}}}
		}, "", func(t *testing.T, c config.Config) {
			if !c.Auth.AllowAnonymous || c.Auth.UsersFile != "" || c.Auth.ACLFile != "/etc/mqttd/config/acl.yaml" {
				t.Fatalf("auth %+v", c.Auth)
			}
		}},
		{"default deny alone: the ACL file", func(mc *v1alpha1.MQTTCluster) {
			mc.Spec.Auth = &v1alpha1.AuthSpec{ACLDefault: "deny"}
		}, "", func(t *testing.T, c config.Config) {
			if c.Auth.ACLFile != "/etc/mqttd/config/acl.yaml" {
				t.Fatalf("auth %+v", c.Auth)
			}
		}},
		{"spec.config cannot open what spec.auth closes", func(mc *v1alpha1.MQTTCluster) {
			mc.Spec.Auth = &v1alpha1.AuthSpec{AllowAnonymous: ptr.To(false)}
			mc.Spec.Config = map[string]string{"auth.allow_anonymous": "true"}
		}, "spec.config: auth.allow_anonymous is set by spec.auth", nil},
		{"other auth settings are the user's", func(mc *v1alpha1.MQTTCluster) {
			mc.Spec.Config = map[string]string{"auth.reload_interval": "5s", "auth.client_id_ownership": "on"}
		}, "", func(t *testing.T, c config.Config) {
			if c.Auth.ReloadInterval != config.Duration(5*time.Second) || c.Auth.ClientIDOwnership != "on" {
				t.Fatalf("auth %+v", c.Auth)
			}
		}},
		{"TLS listeners read their Secrets' mounted files", func(mc *v1alpha1.MQTTCluster) {
			mc.Spec.Listeners = []v1alpha1.Listener{{Name: v1alpha1.ListenerMQTTS, Port: 8883, TLSSecretName: "tls"},
				{Name: v1alpha1.ListenerWSS, Port: 8084, TLSSecretName: "tls-ws"}}
		}, "", func(t *testing.T, c config.Config) {
			l := c.Listeners
			if l.TCP != "" || l.WebSocket != "" || l.MQTTS != "0.0.0.0:8883" || l.WSS != "0.0.0.0:8084" ||
				l.MQTTSCertFile != TLSDir+"/mqtts/tls.crt" || l.MQTTSKeyFile != TLSDir+"/mqtts/tls.key" ||
				l.WSSCertFile != TLSDir+"/wss/tls.crt" || l.WSSKeyFile != TLSDir+"/wss/tls.key" {
				t.Fatalf("listeners %+v", l)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mc := cluster()
			tc.edit(mc)
			raw, err := RenderConfig(mc)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			// What mqttd itself loads from the file.
			path := filepath.Join(t.TempDir(), ConfigFile)
			if err := os.WriteFile(path, raw, 0o600); err != nil {
				t.Fatal(err)
			}
			c, err := config.Load([]string{"--config", path}, nil, io.Discard)
			if err != nil {
				t.Fatalf("mqttd rejects the rendered config:\n%s\n%v", raw, err)
			}
			tc.check(t, c)
		})
	}
}

func TestRenderACL(t *testing.T) {
	for _, tc := range []struct {
		name    string
		auth    *v1alpha1.AuthSpec
		want    string
		wantErr string
	}{
		{"no auth", nil, "default: allow\nrules: []\n", ""},
		{"no rules, default allow", &v1alpha1.AuthSpec{ACLDefault: "allow"}, "default: allow\nrules: []\n", ""},
		{"no rules, default deny", &v1alpha1.AuthSpec{ACLDefault: "deny"}, "default: deny\nrules: []\n", ""},
		{"rules in order, default filled in", &v1alpha1.AuthSpec{ACL: []v1alpha1.ACLRule{
			{Username: "sensor", Topic: "sensors/%u/#", Access: "publish", Action: "allow"},
			{Username: "*", ClientID: "probe-1", Topic: "$SYS/#", Access: "subscribe", Action: "allow"},
			{Username: "$anonymous", Topic: "#", Access: "all", Action: "deny"},
		}}, `default: allow
rules:
    - username: sensor
      topic: sensors/%u/#
      access: publish
      action: allow
    - username: '*'
      clientid: probe-1
      topic: $SYS/#
      access: subscribe
      action: allow
    - username: $anonymous
      topic: '#'
      access: all
      action: deny
`, ""},
		{"bad filter", &v1alpha1.AuthSpec{ACL: []v1alpha1.ACLRule{
			{Username: "*", Topic: "a/#", Access: "all", Action: "allow"},
			{Username: "*", Topic: "a/#/b", Access: "all", Action: "deny"},
		}}, "", `spec.auth.acl: rule 2: topic "a/#/b" is not a valid topic filter`},
		{"placeholder in the middle of a level", &v1alpha1.AuthSpec{ACL: []v1alpha1.ACLRule{
			{Username: "*", Topic: "a/x%u/+", Access: "all", Action: "allow"},
			{Username: "*", Topic: "a/%u#", Access: "all", Action: "allow"},
		}}, "", `spec.auth.acl: rule 2: topic "a/%u#" is not a valid topic filter`},
		{"shared subscription filter", &v1alpha1.AuthSpec{ACL: []v1alpha1.ACLRule{
			{Username: "*", Topic: "$share/g/a", Access: "subscribe", Action: "allow"},
		}}, "", `spec.auth.acl: rule 1: topic "$share/g/a" is not a valid topic filter`},
		{"reserved username", &v1alpha1.AuthSpec{ACL: []v1alpha1.ACLRule{
			{Username: "$admin", Topic: "#", Access: "all", Action: "allow"},
		}}, "", `spec.auth.acl: rule 1: username "$admin" is reserved`},
		{"username with a colon", &v1alpha1.AuthSpec{ACL: []v1alpha1.ACLRule{
			{Username: "a:b", Topic: "#", Access: "all", Action: "allow"},
		}}, "", `spec.auth.acl: rule 1: username "a:b" contains ':'`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mc := cluster()
			mc.Spec.Auth = tc.auth
			got, err := RenderACL(mc)
			if tc.wantErr != "" {
				if err == nil || !strings.HasPrefix(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.want {
				t.Fatalf("ACL file:\n%s\nwant:\n%s", got, tc.want)
			}
		})
	}
}

func TestConfigMapBuilder(t *testing.T) {
	mc := cluster()
	b := &ConfigMapBuilder{Cluster: mc, Config: []byte("x: 1\n")}
	cm := b.Object().(*corev1.ConfigMap)
	if err := b.Mutate(cm); err != nil {
		t.Fatal(err)
	}
	if cm.Name != "demo-config" || cm.Data[ConfigFile] != "x: 1\n" || cm.Labels[LabelInstance] != "demo" || len(cm.Data) != 1 {
		t.Fatalf("config map %+v", cm)
	}
	// The ACL is a key of its own, which the next reconcile removes when it goes.
	b.ACL = []byte("default: deny\n")
	if err := b.Mutate(cm); err != nil {
		t.Fatal(err)
	}
	if cm.Data[ACLFile] != "default: deny\n" || cm.Data[ConfigFile] != "x: 1\n" {
		t.Fatalf("config map with ACL %+v", cm.Data)
	}
	b.ACL = nil
	if err := b.Mutate(cm); err != nil {
		t.Fatal(err)
	}
	if _, ok := cm.Data[ACLFile]; ok {
		t.Fatalf("ACL kept: %+v", cm.Data)
	}
	a1, a2, b1 := ConfigHash([]byte("a")), ConfigHash([]byte("a")), ConfigHash([]byte("b"))
	if a1 == b1 || a1 != a2 {
		t.Fatal("config hash is not a digest of the config")
	}
}

func portNames(ports []corev1.ServicePort) []string {
	var out []string
	for _, p := range ports {
		out = append(out, p.Name)
	}
	return out
}

func TestServiceBuilder(t *testing.T) {
	mc := cluster()
	mc.Spec.Service = v1alpha1.ServiceSpec{Type: corev1.ServiceTypeNodePort, Annotations: map[string]string{"lb": "x"}}

	headless := &ServiceBuilder{Cluster: mc, Kind: HeadlessService}
	svc := headless.Object().(*corev1.Service)
	if err := headless.Mutate(svc); err != nil {
		t.Fatal(err)
	}
	if svc.Name != "demo-headless" || svc.Spec.ClusterIP != corev1.ClusterIPNone || !svc.Spec.PublishNotReadyAddresses {
		t.Fatalf("headless service %+v", svc.Spec)
	}
	if got := strings.Join(portNames(svc.Spec.Ports), ","); got != "mqtt,ws,cluster,api" {
		t.Fatalf("headless ports %s", got)
	}

	client := &ServiceBuilder{Cluster: mc, Kind: ClientService}
	svc = client.Object().(*corev1.Service)
	if err := client.Mutate(svc); err != nil {
		t.Fatal(err)
	}
	if svc.Name != "demo" || svc.Spec.Type != corev1.ServiceTypeNodePort || svc.Annotations["lb"] != "x" ||
		strings.Join(portNames(svc.Spec.Ports), ",") != "mqtt,ws" || svc.Spec.Selector[LabelInstance] != "demo" {
		t.Fatalf("client service %+v %+v", svc.ObjectMeta, svc.Spec)
	}
	if svc.Spec.Ports[0].TargetPort.StrVal != "mqtt" || svc.Spec.Ports[0].Port != 1883 {
		t.Fatalf("client port %+v", svc.Spec.Ports[0])
	}
	// Node ports the API server allocated survive the next reconcile.
	svc.Spec.Ports[0].NodePort = 31883
	if err := client.Mutate(svc); err != nil {
		t.Fatal(err)
	}
	if svc.Spec.Ports[0].NodePort != 31883 {
		t.Fatalf("node port lost: %+v", svc.Spec.Ports[0])
	}

	// Fail closed: a client Service that must not be exposed goes back to ClusterIP
	// and loses its node ports; the headless Service does not change.
	client.ClusterIPOnly = true
	if err := client.Mutate(svc); err != nil {
		t.Fatal(err)
	}
	if svc.Spec.Type != corev1.ServiceTypeClusterIP || svc.Spec.Ports[0].NodePort != 0 {
		t.Fatalf("ClusterIPOnly client service %+v", svc.Spec)
	}

	dash := &ServiceBuilder{Cluster: mc, Kind: DashboardService}
	svc = dash.Object().(*corev1.Service)
	if err := dash.Mutate(svc); err != nil {
		t.Fatal(err)
	}
	if svc.Name != "demo-dashboard" || len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Port != DashboardPort {
		t.Fatalf("dashboard service %+v", svc.Spec)
	}
}

func TestPDBBuilder(t *testing.T) {
	mc := cluster()
	b := &PDBBuilder{Cluster: mc}
	pdb := b.Object().(*policyv1.PodDisruptionBudget)
	if err := b.Mutate(pdb); err != nil {
		t.Fatal(err)
	}
	if pdb.Spec.MaxUnavailable.IntValue() != 1 || pdb.Spec.MinAvailable != nil || pdb.Spec.Selector.MatchLabels[LabelInstance] != "demo" ||
		*pdb.Spec.UnhealthyPodEvictionPolicy != policyv1.AlwaysAllow {
		t.Fatalf("pdb %+v", pdb.Spec)
	}
}

func mutateSTS(t *testing.T, b *StatefulSetBuilder, sts *appsv1.StatefulSet) {
	t.Helper()
	if err := b.Mutate(sts); err != nil {
		t.Fatal(err)
	}
}

func TestStatefulSetBuilderCreate(t *testing.T) {
	mc := cluster()
	mc.Spec.Storage.StorageClassName = ptr.To("fast")
	mc.Spec.Storage.Retention.WhenDeleted = v1alpha1.Delete
	mc.Spec.Listeners = append(mc.Spec.Listeners, v1alpha1.Listener{Name: v1alpha1.ListenerMQTTS, Port: 8883, TLSSecretName: "tls"})
	mc.Spec.Auth = &v1alpha1.AuthSpec{UsersSecretRef: &corev1.LocalObjectReference{Name: "users"}}
	mc.Spec.Dashboard.Enabled = true
	mc.Spec.Pod = v1alpha1.PodOverrides{
		Labels:            map[string]string{"team": "iot", LabelInstance: "hijack"},
		Annotations:       map[string]string{"note": "x"},
		NodeSelector:      map[string]string{"disk": "ssd"},
		Tolerations:       []corev1.Toleration{{Key: "dedicated", Operator: corev1.TolerationOpExists}},
		PriorityClassName: "high",
	}
	b := &StatefulSetBuilder{Cluster: mc, ConfigHash: "abc"}
	sts := b.Object().(*appsv1.StatefulSet)
	mutateSTS(t, b, sts)

	s := sts.Spec
	if sts.Name != "demo" || *s.Replicas != 3 || s.ServiceName != "demo-headless" ||
		s.PodManagementPolicy != appsv1.ParallelPodManagement || s.UpdateStrategy.Type != appsv1.OnDeleteStatefulSetStrategyType {
		t.Fatalf("statefulset spec %+v", s)
	}
	// whenScaled Delete is the operator's to apply (never to ordinal 0's volume): the
	// StatefulSet controller keeps every scaled-away volume.
	if s.PersistentVolumeClaimRetentionPolicy.WhenScaled != appsv1.RetainPersistentVolumeClaimRetentionPolicyType ||
		s.PersistentVolumeClaimRetentionPolicy.WhenDeleted != appsv1.DeletePersistentVolumeClaimRetentionPolicyType {
		t.Fatalf("retention %+v", s.PersistentVolumeClaimRetentionPolicy)
	}
	if len(s.VolumeClaimTemplates) != 1 || *s.VolumeClaimTemplates[0].Spec.StorageClassName != "fast" ||
		s.VolumeClaimTemplates[0].Spec.Resources.Requests.Storage().String() != "1Gi" {
		t.Fatalf("volume claim %+v", s.VolumeClaimTemplates)
	}
	tpl := s.Template
	if tpl.Labels[LabelInstance] != "demo" || tpl.Labels["team"] != "iot" || tpl.Annotations[AnnotationConfigHash] != "abc" ||
		tpl.Annotations["note"] != "x" || tpl.Annotations[AnnotationTemplateHash] == "" {
		t.Fatalf("template meta %+v", tpl.ObjectMeta)
	}
	if !equality.Semantic.DeepEqual(s.Selector.MatchLabels, SelectorLabels(mc)) {
		t.Fatalf("selector %v", s.Selector)
	}
	ps := tpl.Spec
	if ps.NodeSelector["disk"] != "ssd" || len(ps.Tolerations) != 1 || ps.PriorityClassName != "high" ||
		!*ps.SecurityContext.RunAsNonRoot || *ps.AutomountServiceAccountToken {
		t.Fatalf("pod spec %+v", ps)
	}
	c := ps.Containers[0]
	if c.Image != "mqttd:test" || strings.Join(c.Args, " ") != "--config /etc/mqttd/config/mqttd.yaml" {
		t.Fatalf("container %s %v", c.Image, c.Args)
	}
	var ports []string
	for _, p := range c.Ports {
		ports = append(ports, p.Name)
	}
	if strings.Join(ports, ",") != "mqtt,ws,mqtts,cluster,api,dashboard" {
		t.Fatalf("container ports %v", ports)
	}
	if c.ReadinessProbe.HTTPGet.Path != "/readyz" || c.LivenessProbe.HTTPGet.Path != "/healthz" || c.StartupProbe.HTTPGet.Path != "/healthz" ||
		c.ReadinessProbe.HTTPGet.Port.StrVal != "api" {
		t.Fatalf("probes %+v %+v", c.ReadinessProbe, c.LivenessProbe)
	}
	sc := c.SecurityContext
	if !*sc.ReadOnlyRootFilesystem || *sc.AllowPrivilegeEscalation || !*sc.RunAsNonRoot || sc.Capabilities.Drop[0] != "ALL" {
		t.Fatalf("container security %+v", sc)
	}
	mounts := map[string]string{}
	for _, m := range c.VolumeMounts {
		mounts[m.Name] = m.MountPath
	}
	for name, path := range map[string]string{"data": DataDir, "config": ConfigDir, "secrets": SecretsDir,
		"tls-mqtts": TLSDir + "/mqtts", "users": UsersDir} {
		if mounts[name] != path {
			t.Fatalf("mount %s at %q, want %q (all: %v)", name, mounts[name], path, mounts)
		}
	}
	var secrets []string
	for _, v := range ps.Volumes {
		if v.Projected != nil {
			for _, src := range v.Projected.Sources {
				secrets = append(secrets, src.Secret.Name)
			}
		}
	}
	if strings.Join(secrets, ",") != "demo-cookie,demo-api-token" {
		t.Fatalf("projected secrets %v", secrets)
	}
	if v := usersVolume(ps); v == nil || v.SecretName != "users" || len(v.Items) != 1 || v.Items[0].Key != UsersKey {
		t.Fatalf("users volume %+v", v)
	}
}

// usersVolume returns the Secret source of the pod's users volume (nil without).
func usersVolume(ps corev1.PodSpec) *corev1.SecretVolumeSource {
	for _, v := range ps.Volumes {
		if v.Name == "users" {
			return v.Secret
		}
	}
	return nil
}

// TestUsersVolume: the users file is a directory mount (the kubelet updates it; a
// subPath mount would never change) of the "users" key only, from the user's Secret
// or the generated one, and its content feeds no hash of the pod template.
func TestUsersVolume(t *testing.T) {
	for _, tc := range []struct {
		name string
		auth *v1alpha1.AuthSpec
		want string // Secret name, "" for no volume
	}{
		{"anonymous", nil, ""},
		{"generated", &v1alpha1.AuthSpec{AllowAnonymous: ptr.To(false)}, "demo-users"},
		{"the user's", &v1alpha1.AuthSpec{AllowAnonymous: ptr.To(false), UsersSecretRef: &corev1.LocalObjectReference{Name: "mine"}}, "mine"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mc := cluster()
			mc.Spec.Auth = tc.auth
			b := &StatefulSetBuilder{Cluster: mc, ConfigHash: "abc"}
			sts := b.Object().(*appsv1.StatefulSet)
			mutateSTS(t, b, sts)
			ps := sts.Spec.Template.Spec
			v := usersVolume(ps)
			if tc.want == "" {
				if v != nil {
					t.Fatalf("users volume %+v", v)
				}
				return
			}
			if v == nil || v.SecretName != tc.want || len(v.Items) != 1 || v.Items[0].Path != UsersKey {
				t.Fatalf("users volume %+v", v)
			}
			for _, m := range ps.Containers[0].VolumeMounts {
				if m.SubPath != "" || m.SubPathExpr != "" {
					t.Fatalf("mount %s uses subPath: it would never see updates", m.Name)
				}
			}
		})
	}
}

// TestStatefulSetBuilderUpdate checks what a reconcile writes to an existing
// StatefulSet: nothing when nothing changed (even after the API server filled in
// defaults), the new template when the config or the spec changed, and never the
// immutable fields.
func TestStatefulSetBuilderUpdate(t *testing.T) {
	mc := cluster()
	b := &StatefulSetBuilder{Cluster: mc, ConfigHash: "abc"}
	sts := b.Object().(*appsv1.StatefulSet)
	mutateSTS(t, b, sts)
	sts.CreationTimestamp = metav1.Now()
	// Defaults the API server adds.
	sts.Spec.Template.Spec.RestartPolicy = corev1.RestartPolicyAlways
	sts.Spec.Template.Spec.DNSPolicy = corev1.DNSClusterFirst
	sts.Spec.Template.Spec.SchedulerName = corev1.DefaultSchedulerName
	sts.Spec.RevisionHistoryLimit = ptr.To[int32](10)
	stored := sts.DeepCopy()

	mutateSTS(t, b, sts)
	if !equality.Semantic.DeepEqual(stored, sts) {
		t.Fatal("a reconcile with nothing to do changed the StatefulSet")
	}

	b.ConfigHash = "def"
	mutateSTS(t, b, sts)
	if sts.Spec.Template.Annotations[AnnotationConfigHash] != "def" {
		t.Fatal("a config change did not reach the pod template")
	}

	mc.Spec.Image = "mqttd:next"
	mc.Spec.Replicas = ptr.To[int32](5)
	mc.Spec.Storage.Size = ptr.To(apiresource.MustParse("5Gi"))
	mutateSTS(t, b, sts)
	if sts.Spec.Template.Spec.Containers[0].Image != "mqttd:next" || *sts.Spec.Replicas != 5 {
		t.Fatalf("image %s replicas %d", sts.Spec.Template.Spec.Containers[0].Image, *sts.Spec.Replicas)
	}
	if got := sts.Spec.VolumeClaimTemplates[0].Spec.Resources.Requests.Storage().String(); got != "1Gi" {
		t.Fatalf("volume claim template changed to %s on an existing StatefulSet", got)
	}

	// A hand edit of a field the operator owns is put back.
	sts.Spec.Template.Spec.Containers[0].Image = "evil:1"
	mutateSTS(t, b, sts)
	if sts.Spec.Template.Spec.Containers[0].Image != "mqttd:next" {
		t.Fatal("a hand-edited image was not reverted")
	}
}

func TestPodSecurityContextOverlay(t *testing.T) {
	def := podSecurityContext(nil)
	if *def.RunAsUser != 65532 || *def.FSGroup != 65532 || !*def.RunAsNonRoot || def.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Fatalf("defaults %+v", def)
	}
	user := &corev1.PodSecurityContext{SupplementalGroups: []int64{5}, RunAsUser: ptr.To[int64](1000)}
	got := podSecurityContext(user)
	if *got.RunAsUser != 1000 || *got.FSGroup != 65532 || got.SupplementalGroups[0] != 5 || got.SeccompProfile == nil {
		t.Fatalf("overlay %+v", got)
	}
	if user.FSGroup != nil {
		t.Fatal("the user's spec was modified")
	}
}

func TestServiceAnnotationsFollowTheSpec(t *testing.T) {
	mc := cluster()
	mc.Spec.Service.Annotations = map[string]string{"lb/a": "1", "lb/b": "2"}
	b := &ServiceBuilder{Cluster: mc, Kind: ClientService}
	svc := b.Object().(*corev1.Service)
	if err := b.Mutate(svc); err != nil {
		t.Fatal(err)
	}
	svc.Annotations["cloud/assigned"] = "by-someone-else"
	mc.Spec.Service.Annotations = map[string]string{"lb/b": "3"}
	if err := b.Mutate(svc); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"lb/b": "3", "cloud/assigned": "by-someone-else", AnnotationManagedAnnotations: "lb/b"}
	if !equality.Semantic.DeepEqual(svc.Annotations, want) {
		t.Fatalf("annotations %v, want %v", svc.Annotations, want)
	}
	mc.Spec.Service.Annotations = nil
	if err := b.Mutate(svc); err != nil {
		t.Fatal(err)
	}
	if !equality.Semantic.DeepEqual(svc.Annotations, map[string]string{"cloud/assigned": "by-someone-else"}) {
		t.Fatalf("annotations %v", svc.Annotations)
	}
}

func TestStatefulSetDefaultImage(t *testing.T) {
	mc := cluster()
	mc.Spec.Image = ""
	b := &StatefulSetBuilder{Cluster: mc, ConfigHash: "h", DefaultImage: "mqttd:v9"}
	sts := b.Object().(*appsv1.StatefulSet)
	mutateSTS(t, b, sts)
	if got := sts.Spec.Template.Spec.Containers[0].Image; got != "mqttd:v9" {
		t.Fatalf("image %q, want the operator's default", got)
	}
}
