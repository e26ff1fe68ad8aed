package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// MQTTClusterSpec is the desired state of a clustered mqttd broker.
// +kubebuilder:validation:XValidation:rule="!has(self.listeners) || self.listeners.all(l, !(l.name == 'mqtts' || l.name == 'wss') || has(l.tlsSecretName) || (has(self.tls) && has(self.tls.issuerRef)))",message="mqtts and wss listeners need tlsSecretName (or spec.tls.issuerRef)"
type MQTTClusterSpec struct {
	// Replicas is the number of broker nodes.
	// +kubebuilder:default=3
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=99
	// +optional
	Replicas *int32 `json:"replicas,omitempty"`

	// Image is the mqttd container image. Empty: the operator's default broker image
	// (its --mqttd-image flag, which the Helm chart sets to the matching release).
	// +kubebuilder:validation:MinLength=1
	// +optional
	Image string `json:"image,omitempty"`

	// ImagePullPolicy of the mqttd container.
	// +kubebuilder:default=IfNotPresent
	// +kubebuilder:validation:Enum=Always;IfNotPresent;Never
	// +optional
	ImagePullPolicy corev1.PullPolicy `json:"imagePullPolicy,omitempty"`

	// ImagePullSecrets for the mqttd image.
	// +optional
	ImagePullSecrets []corev1.LocalObjectReference `json:"imagePullSecrets,omitempty"`

	// Resources of the mqttd container.
	// +optional
	Resources corev1.ResourceRequirements `json:"resources,omitempty"`

	// Storage is each node's volume for its store (sessions, retained messages, raft log).
	// +kubebuilder:default={}
	// +optional
	Storage StorageSpec `json:"storage,omitempty"`

	// Listeners are the client-facing listeners; ports must be unique.
	// +kubebuilder:default={{name: mqtt, port: 1883}, {name: ws, port: 8083}}
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=4
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:XValidation:rule="self.all(l, self.exists_one(m, m.port == l.port))",message="listener ports must be unique"
	// +kubebuilder:validation:XValidation:rule="self.all(l, !(l.port in [4370, 8080, 18083]))",message="ports 4370 (cluster), 8080 (API) and 18083 (dashboard) are reserved"
	// +optional
	Listeners []Listener `json:"listeners,omitempty"`

	// Service is the client Service in front of every ready node.
	// +kubebuilder:default={}
	// +optional
	Service ServiceSpec `json:"service,omitempty"`

	// Dashboard is the web dashboard on port 18083.
	// +optional
	Dashboard DashboardSpec `json:"dashboard,omitempty"`

	// Monitoring asks for the Prometheus Operator's objects: a PodMonitor scraping the
	// brokers' /metrics and a PrometheusRule with the cluster's alerts.
	// +optional
	Monitoring MonitoringSpec `json:"monitoring,omitempty"`

	// Auth configures client authentication and authorization.
	// +optional
	Auth *AuthSpec `json:"auth,omitempty"`

	// NetworkPolicy is the policy the operator writes for the broker pods (on unless
	// turned off).
	// +kubebuilder:default={}
	// +optional
	NetworkPolicy NetworkPolicySpec `json:"networkPolicy,omitempty"`

	// CookieSecretRef names the Secret with the cluster cookie, the shared secret nodes
	// prove to each other. When absent the operator generates one, once, and never
	// changes it.
	// +optional
	CookieSecretRef *SecretKeySelector `json:"cookieSecretRef,omitempty"`

	// APITokenSecretRef names the Secret with the bearer token of the brokers' HTTP API,
	// which the operator uses. When absent the operator generates one.
	// +optional
	APITokenSecretRef *SecretKeySelector `json:"apiTokenSecretRef,omitempty"`

	// Config holds extra mqttd settings as dotted keys, as in `mqttd --help`
	// (for example "limits.max_queued_messages": "5000"). Keys the operator manages
	// (listeners, cluster, api, store, dashboard, and the auth settings spec.auth
	// controls) cannot be set here.
	// +kubebuilder:validation:XValidation:rule="self.all(k, !k.startsWith('listeners.') && !k.startsWith('cluster.') && !k.startsWith('api.') && !k.startsWith('store.') && !k.startsWith('dashboard.'))",message="listeners.*, cluster.*, api.*, store.* and dashboard.* are managed by the operator"
	// +kubebuilder:validation:XValidation:rule="self.all(k, !(k in ['auth.allow_anonymous', 'auth.users_file', 'auth.acl_file']))",message="auth.allow_anonymous, auth.users_file and auth.acl_file come from spec.auth"
	// +optional
	Config map[string]string `json:"config,omitempty"`

	// Pod customizes the broker pods.
	// +optional
	Pod PodOverrides `json:"pod,omitempty"`

	// TLS configures certificates the operator requests for the TLS listeners.
	// +optional
	TLS *TLSSpec `json:"tls,omitempty"`

	// Cluster configures the links between the nodes.
	// +kubebuilder:default={}
	// +optional
	Cluster ClusterSpec `json:"cluster,omitempty"`

	// UpdateStrategy says how pods are replaced when the image or a restart-requiring
	// setting changes.
	// +kubebuilder:default={}
	// +optional
	UpdateStrategy UpdateStrategy `json:"updateStrategy,omitempty"`
}

// TLSSpec configures the certificates of the TLS listeners.
type TLSSpec struct {
	// IssuerRef names a cert-manager Issuer or ClusterIssuer. The operator then
	// requests a cert-manager Certificate "<name>-listener-tls" for the client
	// Service's DNS names and the pods' names under the headless Service; its Secret
	// "<name>-listener-tls"
	// serves every mqtts and wss listener that names no tlsSecretName. cert-manager
	// renews it; the brokers read the renewed files without a restart.
	// +optional
	IssuerRef *IssuerRef `json:"issuerRef,omitempty"`
}

// IssuerRef names a cert-manager issuer.
type IssuerRef struct {
	// Name of the issuer.
	// +kubebuilder:validation:MinLength=1
	Name string `json:"name"`
	// Kind is Issuer (in the MQTTCluster's namespace) or ClusterIssuer.
	// +kubebuilder:default=Issuer
	// +kubebuilder:validation:Enum=Issuer;ClusterIssuer
	// +optional
	Kind string `json:"kind,omitempty"`
	// Group of the issuer (cert-manager.io, or an external issuer's group).
	// +kubebuilder:default=cert-manager.io
	// +optional
	Group string `json:"group,omitempty"`
}

// ClusterTLSMode turns mutual TLS between the nodes on or off.
// +kubebuilder:validation:Enum=Enabled;Disabled
type ClusterTLSMode string

// Cluster TLS modes.
const (
	ClusterTLSEnabled  ClusterTLSMode = "Enabled"
	ClusterTLSDisabled ClusterTLSMode = "Disabled"
)

// ClusterSpec configures the links between the nodes.
type ClusterSpec struct {
	// TLS: with Enabled the operator keeps a CA for the cluster (the Secret
	// "<name>-cluster-ca", made once) and gives every pod a certificate for its
	// stable name, renewed before it expires without restarts; the nodes link with
	// mutual TLS 1.3 and the cookie handshake runs inside it. Disabled is for
	// debugging only and is reported in status. Either is taken when the cluster
	// starts (or has no pod left): a running cluster keeps the mode it runs, with
	// ClusterTLSChangeRefused saying how to change it. Unset: Enabled for a new
	// cluster; a cluster running before cluster TLS existed keeps running without
	// (status.clusterTLS says so) until it is scaled to 0 and back.
	// +optional
	TLS ClusterTLSMode `json:"tls,omitempty"`
}

// StorageSpec is the per-node persistent volume.
// +kubebuilder:validation:XValidation:rule="has(self.storageClassName) == has(oldSelf.storageClassName) && (!has(self.storageClassName) || self.storageClassName == oldSelf.storageClassName)",message="storage.storageClassName is immutable"
type StorageSpec struct {
	// Size of each node's volume.
	// +kubebuilder:default="1Gi"
	// +kubebuilder:validation:XValidation:rule="quantity(self).isGreaterThan(quantity('0'))",message="storage.size must be positive"
	// +optional
	Size *resource.Quantity `json:"size,omitempty"`

	// StorageClassName of the volumes; unset uses the cluster's default class. It
	// cannot be set, changed or removed later (volume claim templates are immutable).
	// +optional
	StorageClassName *string `json:"storageClassName,omitempty"`

	// Retention says what happens to a node's volume when the node is removed.
	// +kubebuilder:default={}
	// +optional
	Retention RetentionPolicy `json:"retention,omitempty"`
}

// RetentionPolicyType is Retain or Delete.
// +kubebuilder:validation:Enum=Retain;Delete
type RetentionPolicyType string

// Volume retention policies.
const (
	Retain RetentionPolicyType = "Retain"
	Delete RetentionPolicyType = "Delete"
)

// RetentionPolicy is what happens to volumes on scale-down and on deletion.
type RetentionPolicy struct {
	// WhenScaled applies to the volumes of nodes removed by a scale-down.
	// +kubebuilder:default=Delete
	// +optional
	WhenScaled RetentionPolicyType `json:"whenScaled,omitempty"`
	// WhenDeleted applies to every volume when the MQTTCluster is deleted.
	// +kubebuilder:default=Retain
	// +optional
	WhenDeleted RetentionPolicyType `json:"whenDeleted,omitempty"`
}

// ListenerName is a listener kind.
// +kubebuilder:validation:Enum=mqtt;mqtts;ws;wss
type ListenerName string

// Listener kinds.
const (
	ListenerMQTT  ListenerName = "mqtt"
	ListenerMQTTS ListenerName = "mqtts"
	ListenerWS    ListenerName = "ws"
	ListenerWSS   ListenerName = "wss"
)

// Listener is one client-facing listener.
// +kubebuilder:validation:XValidation:rule="(self.name == 'mqtts' || self.name == 'wss') || !has(self.tlsSecretName)",message="mqtt and ws listeners must not have a tlsSecretName"
type Listener struct {
	// Name is the listener kind: mqtt, mqtts (TLS), ws (WebSocket) or wss.
	Name ListenerName `json:"name"`
	// Port the broker listens on and the Services expose.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	Port int32 `json:"port"`
	// TLSSecretName is a kubernetes.io/tls Secret with the server certificate
	// (mqtts and wss only; without it, spec.tls.issuerRef's certificate).
	// +kubebuilder:validation:MinLength=1
	// +optional
	TLSSecretName string `json:"tlsSecretName,omitempty"`
}

// ServiceSpec shapes the client Service.
type ServiceSpec struct {
	// Type of the client Service.
	// +kubebuilder:default=ClusterIP
	// +kubebuilder:validation:Enum=ClusterIP;NodePort;LoadBalancer
	// +optional
	Type corev1.ServiceType `json:"type,omitempty"`
	// Annotations added to the client Service (for example, load balancer settings).
	// +optional
	Annotations map[string]string `json:"annotations,omitempty"`
}

// DashboardSpec enables the web dashboard.
type DashboardSpec struct {
	// Enabled turns the dashboard on: mqttd listens on 18083 and the operator creates
	// the "<name>-dashboard" Service. Without adminSecretRef the login is admin/public
	// (a banner says so, and only an IP address or localhost is served).
	// +optional
	Enabled bool `json:"enabled,omitempty"`
	// AdminSecretRef names a Secret with keys "username" and "password" for the
	// dashboard's administrator.
	// +optional
	AdminSecretRef *corev1.LocalObjectReference `json:"adminSecretRef,omitempty"`
}

// MonitoringSpec asks for the Prometheus Operator's PodMonitor and PrometheusRule
// ("<name>-mqttd"). Without the Prometheus Operator's CRDs the cluster is not Ready
// (PrometheusOperatorNotInstalled): the monitoring asked for is not in force.
type MonitoringSpec struct {
	// Enabled creates the PodMonitor and the PrometheusRule.
	// +optional
	Enabled bool `json:"enabled,omitempty"`
	// Labels are added to both objects, for the Prometheus's podMonitorSelector and
	// ruleSelector (for example release: kube-prometheus-stack).
	// +optional
	Labels map[string]string `json:"labels,omitempty"`
	// Interval between scrapes (default 30s), as Prometheus durations are written.
	// +kubebuilder:validation:Pattern=`^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$`
	// +optional
	Interval string `json:"interval,omitempty"`
}

// MonitoringStatus says whether the operator keeps monitoring objects.
// +kubebuilder:validation:Enum=Enabled
type MonitoringStatus string

// MonitoringEnabled means the operator wrote the PodMonitor and the PrometheusRule.
const MonitoringEnabled MonitoringStatus = "Enabled"

// NetworkPolicySpec shapes the NetworkPolicy "<name>" that admits traffic to the broker
// pods: every listener port from anywhere, the cluster port only from the cluster's own
// pods, the API port only from the operator's pods (and apiFrom), the dashboard port
// from anywhere while the dashboard is enabled. Other ports are closed; egress is not
// restricted. It takes effect only where the network plugin enforces NetworkPolicies.
type NetworkPolicySpec struct {
	// Enabled makes the operator write the NetworkPolicy; false deletes it (for a
	// cluster whose own policies govern the pods). A pointer with a default, so that
	// an explicit false is kept and an absent field means true.
	// +kubebuilder:default=true
	// +optional
	Enabled *bool `json:"enabled,omitempty"`
	// APIFrom are more peers admitted to the API port (8080), which also serves
	// /metrics: a Prometheus that scrapes the brokers, for example. The operator's
	// pods are always admitted.
	// +kubebuilder:validation:MaxItems=20
	// +optional
	APIFrom []networkingv1.NetworkPolicyPeer `json:"apiFrom,omitempty"`
}

// AuthSpec is client authentication and authorization. mqttd re-reads the users and
// the ACL when their mounted files change, so editing the users Secret or the ACL
// rules takes effect without restarting a pod.
type AuthSpec struct {
	// AllowAnonymous lets clients connect without a username. When false and
	// usersSecretRef is absent, the operator generates the Secret "<name>-users",
	// once, with one user (keys "username", "password", and "users" with its hash).
	// +kubebuilder:default=true
	// +optional
	AllowAnonymous *bool `json:"allowAnonymous,omitempty"`
	// UsersSecretRef names a Secret whose key "users" holds one "username:bcrypt-hash"
	// per line (`mqttd passwd FILE USER` writes one).
	// +optional
	UsersSecretRef *corev1.LocalObjectReference `json:"usersSecretRef,omitempty"`
	// ACLDefault decides what no ACL rule matches: allow or deny. It never grants
	// $SYS topics; only a rule does.
	// +kubebuilder:default=allow
	// +kubebuilder:validation:Enum=allow;deny
	// +optional
	ACLDefault string `json:"aclDefault,omitempty"`
	// ACL rules, evaluated in order; the first match decides, aclDefault when none
	// does. Without rules and with aclDefault allow every client that may connect
	// may publish and subscribe to everything.
	// +kubebuilder:validation:MaxItems=1000
	// +optional
	ACL []ACLRule `json:"acl,omitempty"`
}

// ACLRule allows or denies one kind of access to a topic filter.
type ACLRule struct {
	// Username the rule applies to; "*" for everyone, "$anonymous" for clients
	// without one.
	// +kubebuilder:validation:MinLength=1
	Username string `json:"username"`
	// ClientID restricts the rule to the client with exactly this client ID.
	// +kubebuilder:validation:MinLength=1
	// +optional
	ClientID string `json:"clientID,omitempty"`
	// Topic is a topic filter; "%u" and "%c" stand for the username and client ID.
	// +kubebuilder:validation:MinLength=1
	Topic string `json:"topic"`
	// Access is publish, subscribe or all.
	// +kubebuilder:validation:Enum=publish;subscribe;all
	Access string `json:"access"`
	// Action is allow or deny.
	// +kubebuilder:validation:Enum=allow;deny
	Action string `json:"action"`
}

// SecretKeySelector names a key of a Secret in the MQTTCluster's namespace.
type SecretKeySelector struct {
	// Name of the Secret.
	// +kubebuilder:validation:MinLength=1
	Name string `json:"name"`
	// Key in the Secret.
	// +kubebuilder:validation:MinLength=1
	Key string `json:"key"`
}

// PodOverrides are pod-level settings applied to every broker pod.
type PodOverrides struct {
	// Labels added to the pods (the operator's own labels win).
	// +optional
	Labels map[string]string `json:"labels,omitempty"`
	// Annotations added to the pods.
	// +optional
	Annotations map[string]string `json:"annotations,omitempty"`
	// Affinity of the pods.
	// +optional
	Affinity *corev1.Affinity `json:"affinity,omitempty"`
	// Tolerations of the pods.
	// +optional
	Tolerations []corev1.Toleration `json:"tolerations,omitempty"`
	// NodeSelector of the pods.
	// +optional
	NodeSelector map[string]string `json:"nodeSelector,omitempty"`
	// TopologySpreadConstraints of the pods.
	// +optional
	TopologySpreadConstraints []corev1.TopologySpreadConstraint `json:"topologySpreadConstraints,omitempty"`
	// SecurityContext of the pods; by default non-root with the RuntimeDefault seccomp
	// profile.
	// +optional
	SecurityContext *corev1.PodSecurityContext `json:"securityContext,omitempty"`
	// PriorityClassName of the pods.
	// +optional
	PriorityClassName string `json:"priorityClassName,omitempty"`
	// TerminationGracePeriodSeconds bounds a node's graceful shutdown.
	// +kubebuilder:validation:Minimum=1
	// +optional
	TerminationGracePeriodSeconds *int64 `json:"terminationGracePeriodSeconds,omitempty"`
}

// UpdateStrategyType says who replaces pods after a change that needs a restart.
// +kubebuilder:validation:Enum=RollingUpdate;Manual
type UpdateStrategyType string

// Update strategies.
const (
	// RollingUpdate: the operator replaces pods one at a time from the highest
	// ordinal, evacuating each first.
	RollingUpdate UpdateStrategyType = "RollingUpdate"
	// Manual: pods keep running the old spec until someone deletes them.
	Manual UpdateStrategyType = "Manual"
)

// UpdateStrategy configures pod replacement.
type UpdateStrategy struct {
	// Type is RollingUpdate or Manual.
	// +kubebuilder:default=RollingUpdate
	// +optional
	Type UpdateStrategyType `json:"type,omitempty"`
	// PodReadyTimeout bounds a pod's evacuation (counted from its readiness change:
	// evacuating makes it unready). In a rolling update the pod is replaced when the
	// time runs out (its volume, and the sessions left on it, stay); in a scale-down
	// the operator reports Degraded EvacuationTimedOut and keeps waiting, since the
	// node's sessions would leave with it.
	// +kubebuilder:default="10m"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1s')",message="podReadyTimeout must be a duration of at least 1s, such as 10m"
	// +optional
	PodReadyTimeout *metav1.Duration `json:"podReadyTimeout,omitempty"`
}

// StoreReset records one reset of a node's store by the operator.
type StoreReset struct {
	// Node is the pod whose store was reset.
	Node string `json:"node"`
	// Time is when it was reset.
	Time metav1.Time `json:"time"`
	// VolumeDeleted is true when the node's volume was deleted (mqttd could not use its
	// store) rather than its store reset through the broker's API (a stale store).
	// +optional
	VolumeDeleted bool `json:"volumeDeleted,omitempty"`
}

// MemberStatus is one broker node as the cluster reports it.
type MemberStatus struct {
	// Ordinal of the pod.
	Ordinal int32 `json:"ordinal"`
	// Node is the broker's node name.
	Node string `json:"node"`
	// Joined is true when the node is a cluster member.
	Joined bool `json:"joined"`
	// Ready is the node's own readiness.
	Ready bool `json:"ready"`
	// StoreState is the broker's report: empty (not joined yet), member, stale, or
	// unknown when the broker does not answer.
	// +optional
	StoreState string `json:"storeState,omitempty"`
	// Version of mqttd on the node.
	// +optional
	Version string `json:"version,omitempty"`
	// Connections is the number of connected clients.
	// +optional
	Connections int64 `json:"connections,omitempty"`
	// Reason says why the node is not ready, as it reports it (cut off from the
	// majority, catching up with the leader's log, evacuating, a stale store).
	// +optional
	Reason string `json:"reason,omitempty"`
	// Unreachable lists the other members this node has no working link to: a
	// network partition or a peer down, as this node sees it.
	// +optional
	// +listType=set
	Unreachable []string `json:"unreachable,omitempty"`
}

// MQTTClusterStatus is the observed state.
type MQTTClusterStatus struct {
	// ObservedGeneration is the generation the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Conditions: Ready, Available, Progressing, Degraded.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// Replicas is the number of broker pods.
	// +optional
	Replicas int32 `json:"replicas,omitempty"`
	// ReadyReplicas is the number of ready broker pods.
	// +optional
	ReadyReplicas int32 `json:"readyReplicas,omitempty"`
	// Selector is the pods' label selector, for the scale subresource.
	// +optional
	Selector string `json:"selector,omitempty"`
	// ClusterID is recorded when the first node bootstraps the cluster.
	// +optional
	ClusterID string `json:"clusterID,omitempty"`
	// StaleStoreResets counts the nodes whose stale store the operator reset.
	// +optional
	StaleStoreResets int32 `json:"staleStoreResets,omitempty"`
	// LastStoreReset is the operator's last reset of a node's store or deletion of a
	// node's volume: the next one waits until that node rejoined (and, for a volume,
	// a minimum interval).
	// +optional
	LastStoreReset *StoreReset `json:"lastStoreReset,omitempty"`
	// Members as the brokers report them.
	// +listType=map
	// +listMapKey=ordinal
	// +optional
	Members []MemberStatus `json:"members,omitempty"`
	// ClusterTLS is the mode the nodes' links run: Enabled (mutual TLS 1.3 with the
	// cluster's CA) or Disabled (cookie handshake only; debugging).
	// +optional
	ClusterTLS ClusterTLSMode `json:"clusterTLS,omitempty"`

	// Monitoring is Enabled while the operator keeps the PodMonitor and PrometheusRule
	// of spec.monitoring (it deletes them once monitoring is turned off).
	// +optional
	Monitoring MonitoringStatus `json:"monitoring,omitempty"`

	// MembersReady is "ready/desired": the nodes that are cluster members and ready,
	// over spec.replicas (kubectl get's Members column).
	// +optional
	MembersReady string `json:"membersReady,omitempty"`
}

// Condition types.
const (
	// ConditionReady: every desired node is ready (and, with clustering, joined).
	ConditionReady = "Ready"
	// ConditionAvailable: at least one node serves clients.
	ConditionAvailable = "Available"
	// ConditionProgressing: the cluster is moving towards the spec.
	ConditionProgressing = "Progressing"
	// ConditionDegraded: something needs attention (invalid input, failing pods).
	ConditionDegraded = "Degraded"
)

// MQTTCluster is a clustered MQTT broker.
// The name becomes the StatefulSet's and the pods' (<name>-<ordinal>, with a
// controller-revision-hash label derived from it) and the Services' (<name>-headless):
// it must be a DNS label of at most 52 characters.
// +kubebuilder:validation:XValidation:rule="self.metadata.name.size() <= 52 && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",message="metadata.name must be a DNS label (lowercase letters, digits, '-', starting with a letter) of at most 52 characters"
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:subresource:scale:specpath=.spec.replicas,statuspath=.status.replicas,selectorpath=.status.selector
// +kubebuilder:resource:shortName=mqc,categories=all
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Members",type=string,JSONPath=`.status.membersReady`,description="members ready / replicas desired"
// +kubebuilder:printcolumn:name="Replicas",type=integer,JSONPath=`.spec.replicas`,priority=1
// +kubebuilder:printcolumn:name="Ready Replicas",type=integer,JSONPath=`.status.readyReplicas`,priority=1
// +kubebuilder:printcolumn:name="Degraded",type=string,JSONPath=`.status.conditions[?(@.type=="Degraded")].reason`
// +kubebuilder:printcolumn:name="Cluster ID",type=string,JSONPath=`.status.clusterID`,priority=1
// +kubebuilder:printcolumn:name="Cluster TLS",type=string,JSONPath=`.status.clusterTLS`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type MQTTCluster struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +kubebuilder:default={}
	Spec   MQTTClusterSpec   `json:"spec,omitempty"`
	Status MQTTClusterStatus `json:"status,omitempty"`
}

// MQTTClusterList is a list of MQTTCluster.
// +kubebuilder:object:root=true
type MQTTClusterList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []MQTTCluster `json:"items"`
}
