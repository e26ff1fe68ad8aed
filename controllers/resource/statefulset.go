package resource

import (
	"encoding/json"
	"fmt"
	"maps"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
)

// Paths and names inside the broker pod.
const (
	ContainerName  = "mqttd"
	DataVolume     = "data"
	DataDir        = "/var/lib/mqttd"
	ConfigDir      = "/etc/mqttd/config" // not /etc/mqttd: the other mounts are not nested in the ConfigMap volume
	SecretsDir     = "/etc/mqttd/secrets"
	TLSDir         = "/etc/mqttd/tls"
	UsersDir       = "/etc/mqttd/users"
	DashboardDir   = "/etc/mqttd/dashboard" // spec.dashboard.adminSecretRef's username and password
	DefaultStorage = "1Gi"

	// nonRootUID is the user of the images (FROM scratch, see Dockerfile).
	nonRootUID int64 = 65532
)

// StatefulSetBuilder builds the broker StatefulSet.
type StatefulSetBuilder struct {
	Cluster      *v1alpha1.MQTTCluster
	ConfigHash   string // ConfigHash of the rendered configuration
	DefaultImage string // the broker image when spec.image is empty
	// Replicas overrides spec.replicas while a scale-down is in progress (0: spec).
	Replicas int32
	// NodeSecret is the Secret the pods take the cookie and the API token from
	// (NodeSecretName, which the controller keeps); empty: straight from the cookie
	// and token Secrets.
	NodeSecret string
	// APITokenHash is TokenHash of the token the pods are given, recorded on the
	// template so that a new token rolls them (empty: not recorded).
	APITokenHash string
	// CookieFingerprint is Fingerprint of the cookie the node Secret holds, recorded
	// on the StatefulSet's own metadata (empty: left as it is).
	CookieFingerprint string
	// ClusterTLS mounts the node certificates Secret and has each node link with
	// mutual TLS under its own certificate (ClusterTLSInTemplate tells it back).
	ClusterTLS bool
}

// ServesAPIOverTLS reports whether a pod's mqttd serves its API over HTTPS: its
// container is given MQTTD_API_TLS_CERT_FILE (the volume alone does not say so).
func ServesAPIOverTLS(pod *corev1.Pod) bool {
	for _, c := range pod.Spec.Containers {
		if c.Name != ContainerName {
			continue
		}
		for _, e := range c.Env {
			if e.Name == "MQTTD_API_TLS_CERT_FILE" && e.Value != "" {
				return true
			}
		}
	}
	return false
}

// ClusterTLSInTemplate reports whether a pod template runs cluster TLS.
func ClusterTLSInTemplate(t *corev1.PodTemplateSpec) bool {
	for _, v := range t.Spec.Volumes {
		if v.Name == ClusterTLSVolume {
			return true
		}
	}
	return false
}

// Object implements Builder.
func (b *StatefulSetBuilder) Object() client.Object {
	return &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: StatefulSetName(b.Cluster), Namespace: b.Cluster.Namespace}}
}

// Mutate implements Builder. Immutable fields (selector, service name, volume claim
// templates) are set only on creation; the pod template is replaced only when the
// desired template changed (its hash) or someone edited a field the operator owns, so
// a reconcile with nothing to do writes nothing.
func (b *StatefulSetBuilder) Mutate(obj client.Object) error {
	sts, err := as[*appsv1.StatefulSet](obj, "StatefulSetBuilder")
	if err != nil {
		return err
	}
	mc := b.Cluster
	sts.Labels = mergeLabels(sts.Labels, Labels(mc))
	if b.CookieFingerprint != "" {
		if sts.Annotations == nil {
			sts.Annotations = map[string]string{}
		}
		sts.Annotations[AnnotationCookieFingerprint] = b.CookieFingerprint
	}
	if sts.CreationTimestamp.IsZero() {
		sts.Spec.Selector = &metav1.LabelSelector{MatchLabels: SelectorLabels(mc)}
		sts.Spec.ServiceName = HeadlessServiceName(mc)
		sts.Spec.PodManagementPolicy = appsv1.ParallelPodManagement
		sts.Spec.VolumeClaimTemplates = []corev1.PersistentVolumeClaim{b.volumeClaim()}
	}
	sts.Spec.Replicas = ptr.To(replicas(mc))
	if b.Replicas > 0 {
		sts.Spec.Replicas = ptr.To(b.Replicas)
	}
	// The operator replaces pods itself, one at a time, after evacuating them.
	sts.Spec.UpdateStrategy = appsv1.StatefulSetUpdateStrategy{Type: appsv1.OnDeleteStatefulSetStrategyType}
	// Scaled-away volumes are the operator's to delete (spec.storage.retention.whenScaled,
	// applied by the lifecycle step, which keeps the last node's volume on a scale to
	// zero): the StatefulSet controller deletes none.
	sts.Spec.PersistentVolumeClaimRetentionPolicy = &appsv1.StatefulSetPersistentVolumeClaimRetentionPolicy{
		WhenScaled:  appsv1.RetainPersistentVolumeClaimRetentionPolicyType,
		WhenDeleted: retention(mc.Spec.Storage.Retention.WhenDeleted, appsv1.RetainPersistentVolumeClaimRetentionPolicyType),
	}

	desired := b.podTemplate()
	raw, err := json.Marshal(desired)
	if err != nil {
		return err
	}
	templateHash := hash(raw)
	desired.Annotations[AnnotationTemplateHash] = templateHash
	current := sts.Spec.Template
	if current.Annotations[AnnotationTemplateHash] != templateHash ||
		!equality.Semantic.DeepDerivative(desired.Spec, current.Spec) ||
		!equality.Semantic.DeepDerivative(desired.ObjectMeta, current.ObjectMeta) {
		sts.Spec.Template = desired
	}
	return nil
}

func replicas(mc *v1alpha1.MQTTCluster) int32 {
	if mc.Spec.Replicas == nil {
		return 3
	}
	return *mc.Spec.Replicas
}

func retention(p v1alpha1.RetentionPolicyType, def appsv1.PersistentVolumeClaimRetentionPolicyType) appsv1.PersistentVolumeClaimRetentionPolicyType {
	switch p {
	case v1alpha1.Retain:
		return appsv1.RetainPersistentVolumeClaimRetentionPolicyType
	case v1alpha1.Delete:
		return appsv1.DeletePersistentVolumeClaimRetentionPolicyType
	}
	return def
}

// StorageSize is the requested size of each node's volume.
func StorageSize(mc *v1alpha1.MQTTCluster) resource.Quantity {
	if mc.Spec.Storage.Size == nil || mc.Spec.Storage.Size.IsZero() {
		return resource.MustParse(DefaultStorage)
	}
	return *mc.Spec.Storage.Size
}

func (b *StatefulSetBuilder) volumeClaim() corev1.PersistentVolumeClaim {
	mc := b.Cluster
	return corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: DataVolume, Labels: SelectorLabels(mc)},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			StorageClassName: mc.Spec.Storage.StorageClassName,
			VolumeMode:       ptr.To(corev1.PersistentVolumeFilesystem),
			Resources: corev1.VolumeResourceRequirements{
				Requests: corev1.ResourceList{corev1.ResourceStorage: StorageSize(mc)},
			},
		},
	}
}

func (b *StatefulSetBuilder) podTemplate() corev1.PodTemplateSpec {
	mc := b.Cluster
	annotations := map[string]string{}
	maps.Copy(annotations, mc.Spec.Pod.Annotations)
	annotations[AnnotationConfigHash] = b.ConfigHash
	if b.APITokenHash != "" {
		annotations[AnnotationAPITokenHash] = b.APITokenHash
	}

	podSecurity := podSecurityContext(mc.Spec.Pod.SecurityContext)
	grace := mc.Spec.Pod.TerminationGracePeriodSeconds
	if grace == nil {
		grace = ptr.To[int64](60)
	}
	return corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{
			Labels:      mergeLabels(mc.Spec.Pod.Labels, Labels(mc)),
			Annotations: annotations,
		},
		Spec: corev1.PodSpec{
			Containers:                    []corev1.Container{b.container()},
			Volumes:                       b.volumes(),
			SecurityContext:               podSecurity,
			Affinity:                      mc.Spec.Pod.Affinity,
			Tolerations:                   mc.Spec.Pod.Tolerations,
			NodeSelector:                  mc.Spec.Pod.NodeSelector,
			TopologySpreadConstraints:     mc.Spec.Pod.TopologySpreadConstraints,
			PriorityClassName:             mc.Spec.Pod.PriorityClassName,
			ImagePullSecrets:              mc.Spec.ImagePullSecrets,
			TerminationGracePeriodSeconds: grace,
			// The broker needs no Kubernetes API access.
			AutomountServiceAccountToken: ptr.To(false),
			EnableServiceLinks:           ptr.To(false),
		},
	}
}

func (b *StatefulSetBuilder) container() corev1.Container {
	mc := b.Cluster
	var ports []corev1.ContainerPort
	for _, l := range mc.Spec.Listeners {
		ports = append(ports, containerPort(string(l.Name), l.Port))
	}
	ports = append(ports, containerPort("cluster", ClusterPort), containerPort("api", APIPort))
	if mc.Spec.Dashboard.Enabled {
		ports = append(ports, containerPort("dashboard", DashboardPort))
	}
	mounts := []corev1.VolumeMount{
		{Name: DataVolume, MountPath: DataDir},
		{Name: "config", MountPath: ConfigDir, ReadOnly: true},
		{Name: "secrets", MountPath: SecretsDir, ReadOnly: true},
	}
	for _, l := range mc.Spec.Listeners {
		if ListenerSecret(mc, l) != "" {
			mounts = append(mounts, corev1.VolumeMount{Name: "tls-" + string(l.Name), MountPath: TLSDir + "/" + string(l.Name), ReadOnly: true})
		}
	}
	if _, ok := UsersSecret(mc); ok {
		// A directory, never subPath: the kubelet updates it when the Secret changes
		// and mqttd re-reads the file.
		mounts = append(mounts, corev1.VolumeMount{Name: "users", MountPath: UsersDir, ReadOnly: true})
	}
	if d := mc.Spec.Dashboard; d.Enabled && d.AdminSecretRef != nil {
		mounts = append(mounts, corev1.VolumeMount{Name: "dashboard-admin", MountPath: DashboardDir, ReadOnly: true})
	}
	env := []corev1.EnvVar{
		{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.name"}}},
		{Name: "POD_NAMESPACE", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.namespace"}}},
		{Name: "MQTTD_CLUSTER_NODE_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.name"}}},
		// The stable DNS name under the headless Service (ClusterAddress).
		{Name: "MQTTD_CLUSTER_ADVERTISE", Value: fmt.Sprintf("$(POD_NAME).%s.%s.svc:%d", HeadlessServiceName(mc), mc.Namespace, ClusterPort)},
	}
	if b.ClusterTLS {
		// A directory (the kubelet updates renewed certificates; mqttd reads them
		// again); each pod takes its own pair by its name.
		mounts = append(mounts, corev1.VolumeMount{Name: ClusterTLSVolume, MountPath: ClusterTLSDir, ReadOnly: true})
		env = append(env,
			corev1.EnvVar{Name: "MQTTD_CLUSTER_TLS_CERT_FILE", Value: ClusterTLSDir + "/" + NodeCertKey("$(POD_NAME)")},
			corev1.EnvVar{Name: "MQTTD_CLUSTER_TLS_KEY_FILE", Value: ClusterTLSDir + "/" + NodeKeyKey("$(POD_NAME)")},
			corev1.EnvVar{Name: "MQTTD_CLUSTER_TLS_CA_FILE", Value: ClusterTLSDir + "/" + CACertKey},
			// The API over HTTPS with the same certificate: the operator checks it
			// names the pod before it sends the token.
			corev1.EnvVar{Name: "MQTTD_API_TLS_CERT_FILE", Value: ClusterTLSDir + "/" + NodeCertKey("$(POD_NAME)")},
			corev1.EnvVar{Name: "MQTTD_API_TLS_KEY_FILE", Value: ClusterTLSDir + "/" + NodeKeyKey("$(POD_NAME)")})
	}
	probeScheme := corev1.URISchemeHTTP
	if b.ClusterTLS {
		probeScheme = corev1.URISchemeHTTPS // the kubelet does not verify it
	}
	pullPolicy := mc.Spec.ImagePullPolicy
	if pullPolicy == "" {
		pullPolicy = corev1.PullIfNotPresent
	}
	image := mc.Spec.Image
	if image == "" {
		image = b.DefaultImage
	}
	return corev1.Container{
		Name:            ContainerName,
		Image:           image,
		ImagePullPolicy: pullPolicy,
		Args:            []string{"--config", ConfigDir + "/" + ConfigFile},
		Env:             env,
		Ports:           ports,
		Resources:       mc.Spec.Resources,
		VolumeMounts:    mounts,
		ReadinessProbe: &corev1.Probe{
			ProbeHandler:     corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/readyz", Port: intstr.FromString("api"), Scheme: probeScheme}},
			PeriodSeconds:    5,
			TimeoutSeconds:   2,
			SuccessThreshold: 1,
			FailureThreshold: 3,
		},
		// Opening a large store can take a while: liveness starts once this passes.
		StartupProbe: &corev1.Probe{
			ProbeHandler:     corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromString("api"), Scheme: probeScheme}},
			PeriodSeconds:    5,
			TimeoutSeconds:   2,
			SuccessThreshold: 1,
			FailureThreshold: 60,
		},
		LivenessProbe: &corev1.Probe{
			ProbeHandler:     corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromString("api"), Scheme: probeScheme}},
			PeriodSeconds:    10,
			TimeoutSeconds:   2,
			SuccessThreshold: 1,
			FailureThreshold: 6,
		},
		SecurityContext: &corev1.SecurityContext{
			RunAsNonRoot:             ptr.To(true),
			ReadOnlyRootFilesystem:   ptr.To(true),
			AllowPrivilegeEscalation: ptr.To(false),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		},
		TerminationMessagePath:   corev1.TerminationMessagePathDefault,
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
	}
}

func containerPort(name string, port int32) corev1.ContainerPort {
	return corev1.ContainerPort{Name: name, ContainerPort: port, Protocol: corev1.ProtocolTCP}
}

func (b *StatefulSetBuilder) volumes() []corev1.Volume {
	mc := b.Cluster
	cookieName, cookieKey := CookieSecret(mc)
	tokenName, tokenKey := APITokenSecret(mc)
	if b.NodeSecret != "" {
		cookieName, cookieKey = b.NodeSecret, NodeCookieKey
		tokenName, tokenKey = b.NodeSecret, NodeTokenKey
	}
	vols := []corev1.Volume{
		{Name: "config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: ConfigMapName(mc)},
			DefaultMode:          ptr.To[int32](0o444),
		}}},
		{Name: "secrets", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
			DefaultMode: ptr.To[int32](0o400),
			Sources: []corev1.VolumeProjection{
				{Secret: &corev1.SecretProjection{LocalObjectReference: corev1.LocalObjectReference{Name: cookieName},
					Items: []corev1.KeyToPath{{Key: cookieKey, Path: "cookie"}}}},
				{Secret: &corev1.SecretProjection{LocalObjectReference: corev1.LocalObjectReference{Name: tokenName},
					Items: []corev1.KeyToPath{{Key: tokenKey, Path: "api-token"}}}},
			},
		}}},
	}
	for _, l := range mc.Spec.Listeners {
		if name := ListenerSecret(mc, l); name != "" {
			vols = append(vols, corev1.Volume{Name: "tls-" + string(l.Name), VolumeSource: corev1.VolumeSource{
				Secret: &corev1.SecretVolumeSource{SecretName: name, DefaultMode: ptr.To[int32](0o400)}}})
		}
	}
	if b.ClusterTLS {
		vols = append(vols, corev1.Volume{Name: ClusterTLSVolume, VolumeSource: corev1.VolumeSource{
			Secret: &corev1.SecretVolumeSource{SecretName: ClusterTLSSecretName(mc), DefaultMode: ptr.To[int32](0o400)}}})
	}
	if name, ok := UsersSecret(mc); ok {
		// Only the hashes: a generated Secret's clear password stays out of the pods.
		vols = append(vols, corev1.Volume{Name: "users", VolumeSource: corev1.VolumeSource{
			Secret: &corev1.SecretVolumeSource{SecretName: name, DefaultMode: ptr.To[int32](0o400),
				Items: []corev1.KeyToPath{{Key: UsersKey, Path: UsersKey}}}}})
	}
	if d := mc.Spec.Dashboard; d.Enabled && d.AdminSecretRef != nil {
		vols = append(vols, corev1.Volume{Name: "dashboard-admin", VolumeSource: corev1.VolumeSource{
			Secret: &corev1.SecretVolumeSource{SecretName: d.AdminSecretRef.Name, DefaultMode: ptr.To[int32](0o400),
				Items: []corev1.KeyToPath{{Key: "username", Path: "username"}, {Key: "password", Path: "password"}}}}})
	}
	return vols
}

// podSecurityContext is the user's pod security context over the defaults: non-root
// uid/gid 65532, fsGroup 65532 (so the volume and the 0400 Secret files are readable)
// and the RuntimeDefault seccomp profile. Fields the user sets win; the rest keep
// their defaults instead of disappearing.
func podSecurityContext(user *corev1.PodSecurityContext) *corev1.PodSecurityContext {
	out := &corev1.PodSecurityContext{}
	if user != nil {
		out = user.DeepCopy()
	}
	if out.RunAsNonRoot == nil {
		out.RunAsNonRoot = ptr.To(true)
	}
	if out.RunAsUser == nil {
		out.RunAsUser = ptr.To(nonRootUID)
	}
	if out.RunAsGroup == nil {
		out.RunAsGroup = ptr.To(nonRootUID)
	}
	if out.FSGroup == nil {
		out.FSGroup = ptr.To(nonRootUID)
	}
	if out.SeccompProfile == nil {
		out.SeccompProfile = &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}
	}
	return out
}
