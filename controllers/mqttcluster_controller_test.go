package controllers_test

import (
	"context"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
	res "github.com/mqtt-operator/mqtt-operator/controllers/resource"
)

var ctx = context.Background()

func ownedBy(obj client.Object, mc *v1alpha1.MQTTCluster) bool {
	ref := metav1.GetControllerOf(obj)
	return ref != nil && ref.UID == mc.UID && ref.Kind == "MQTTCluster"
}

var _ = Describe("MQTTCluster defaults and validation", func() {
	It("fills in the defaults", func() {
		ns := newNamespace()
		mc := createCluster(ns, "defaults", nil)
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(mc), mc)).To(Succeed())
		Expect(*mc.Spec.Replicas).To(Equal(int32(3)))
		Expect(mc.Spec.Image).To(BeEmpty(), "no image default in the CRD: the operator's --mqttd-image applies")
		Expect(mc.Spec.ImagePullPolicy).To(Equal(corev1.PullIfNotPresent))
		Expect(mc.Spec.Storage.Size.String()).To(Equal("1Gi"))
		Expect(mc.Spec.Storage.Retention).To(Equal(v1alpha1.RetentionPolicy{WhenScaled: v1alpha1.Delete, WhenDeleted: v1alpha1.Retain}))
		Expect(mc.Spec.Listeners).To(Equal([]v1alpha1.Listener{{Name: "mqtt", Port: 1883}, {Name: "ws", Port: 8083}}))
		Expect(mc.Spec.Service.Type).To(Equal(corev1.ServiceTypeClusterIP))
		Expect(mc.Spec.UpdateStrategy.Type).To(Equal(v1alpha1.RollingUpdate))
	})

	DescribeTable("rejects a bad spec with a clear message",
		func(edit func(*v1alpha1.MQTTCluster), want string) {
			mc := &v1alpha1.MQTTCluster{ObjectMeta: metav1.ObjectMeta{Namespace: "default", GenerateName: "bad-"}}
			edit(mc)
			err := k8sClient.Create(ctx, mc)
			Expect(apierrors.IsInvalid(err)).To(BeTrue(), "want Invalid, got %v", err)
			Expect(err.Error()).To(ContainSubstring(want))
		},
		Entry("negative replicas", func(mc *v1alpha1.MQTTCluster) { mc.Spec.Replicas = ptr.To[int32](-1) },
			"spec.replicas: Invalid value: -1: spec.replicas in body should be greater than or equal to 0"),
		Entry("duplicate ports", func(mc *v1alpha1.MQTTCluster) {
			mc.Spec.Listeners = []v1alpha1.Listener{{Name: "mqtt", Port: 1883}, {Name: "ws", Port: 1883}}
		}, "listener ports must be unique"),
		Entry("reserved port", func(mc *v1alpha1.MQTTCluster) {
			mc.Spec.Listeners = []v1alpha1.Listener{{Name: "mqtt", Port: 8080}}
		}, "ports 4370 (cluster), 8080 (API) and 18083 (dashboard) are reserved"),
		Entry("TLS listener without a Secret", func(mc *v1alpha1.MQTTCluster) {
			mc.Spec.Listeners = []v1alpha1.Listener{{Name: "mqtts", Port: 8883}}
		}, "mqtts and wss listeners need tlsSecretName"),
		Entry("plain listener with a TLS Secret", func(mc *v1alpha1.MQTTCluster) {
			mc.Spec.Listeners = []v1alpha1.Listener{{Name: "mqtt", Port: 1883, TLSSecretName: "tls"}}
		}, "mqtt and ws listeners must not have a tlsSecretName"),
		Entry("unknown listener kind", func(mc *v1alpha1.MQTTCluster) {
			mc.Spec.Listeners = []v1alpha1.Listener{{Name: "quic", Port: 1883}}
		}, `Unsupported value: "quic"`),
		Entry("port out of range", func(mc *v1alpha1.MQTTCluster) {
			mc.Spec.Listeners = []v1alpha1.Listener{{Name: "mqtt", Port: 70000}}
		}, "should be less than or equal to 65535"),
		Entry("auth settings that spec.auth decides, in spec.config", func(mc *v1alpha1.MQTTCluster) {
			mc.Spec.Config = map[string]string{"auth.allow_anonymous": "true"}
		}, "auth.allow_anonymous, auth.users_file and auth.acl_file come from spec.auth"),
		Entry("bad ACL default", func(mc *v1alpha1.MQTTCluster) {
			mc.Spec.Auth = &v1alpha1.AuthSpec{ACLDefault: "maybe"}
		}, `Unsupported value: "maybe"`),
		Entry("operator-managed config key", func(mc *v1alpha1.MQTTCluster) {
			mc.Spec.Config = map[string]string{"listeners.tcp": ":1"}
		}, "listeners.*, cluster.*, api.*, store.* and dashboard.* are managed by the operator"),
		Entry("the dashboard's credentials in spec.config", func(mc *v1alpha1.MQTTCluster) {
			mc.Spec.Config = map[string]string{"dashboard.password_file": ""}
		}, "listeners.*, cluster.*, api.*, store.* and dashboard.* are managed by the operator"),
		Entry("a monitoring interval Prometheus would refuse", func(mc *v1alpha1.MQTTCluster) {
			mc.Spec.Monitoring = v1alpha1.MonitoringSpec{Enabled: true, Interval: "30s1m"}
		}, "spec.monitoring.interval"),
		Entry("bad service type", func(mc *v1alpha1.MQTTCluster) { mc.Spec.Service.Type = "ExternalName" },
			`Unsupported value: "ExternalName"`),
		Entry("bad retention policy", func(mc *v1alpha1.MQTTCluster) { mc.Spec.Storage.Retention.WhenScaled = "Keep" },
			`Unsupported value: "Keep"`),
		Entry("name too long for the children", func(mc *v1alpha1.MQTTCluster) {
			mc.GenerateName, mc.Name = "", strings.Repeat("a", 53)
		}, "metadata.name must be a DNS label"),
		Entry("negative storage size", func(mc *v1alpha1.MQTTCluster) {
			mc.Spec.Storage.Size = ptr.To(resource.MustParse("-1Gi"))
		}, "storage.size must be positive"),
		Entry("bad ACL action", func(mc *v1alpha1.MQTTCluster) {
			mc.Spec.Auth = &v1alpha1.AuthSpec{ACL: []v1alpha1.ACLRule{{Username: "*", Topic: "#", Access: "all", Action: "maybe"}}}
		}, `Unsupported value: "maybe"`),
	)

	It("keeps the storage class immutable", func() {
		ns := newNamespace()
		mc := createCluster(ns, "immutable", func(mc *v1alpha1.MQTTCluster) { mc.Spec.Storage.StorageClassName = ptr.To("fast") })
		for _, change := range []func(*v1alpha1.MQTTCluster){
			func(mc *v1alpha1.MQTTCluster) { mc.Spec.Storage.StorageClassName = ptr.To("slow") },
			func(mc *v1alpha1.MQTTCluster) { mc.Spec.Storage.StorageClassName = nil },
		} {
			Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(mc), mc)).To(Succeed())
			change(mc)
			err := k8sClient.Update(ctx, mc)
			Expect(apierrors.IsInvalid(err)).To(BeTrue(), "want Invalid, got %v", err)
			Expect(err.Error()).To(ContainSubstring("storage.storageClassName is immutable"))
		}
	})
})

var _ = Describe("MQTTCluster reconciler", func() {
	It("creates every child with the right fields", func() {
		ns := newNamespace()
		mc := createCluster(ns, "demo", nil)
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(mc), mc)).To(Succeed())

		cookie := child(&corev1.Secret{}, ns, "demo-cookie")
		Expect(cookie.Data[res.CookieKey]).To(HaveLen(43))
		token := child(&corev1.Secret{}, ns, "demo-api-token")
		Expect(token.Data[res.APITokenKey]).To(HaveLen(43))
		Expect(token.Data[res.APITokenKey]).NotTo(Equal(cookie.Data[res.CookieKey]))

		cm := child(&corev1.ConfigMap{}, ns, "demo-config")
		Expect(cm.Data[res.ConfigFile]).To(ContainSubstring(`tcp: 0.0.0.0:1883`))
		Expect(cm.Data[res.ConfigFile]).To(ContainSubstring(`websocket: 0.0.0.0:8083`))

		headless := child(&corev1.Service{}, ns, "demo-headless")
		Expect(headless.Spec.ClusterIP).To(Equal(corev1.ClusterIPNone))
		Expect(headless.Spec.PublishNotReadyAddresses).To(BeTrue())
		clientSvc := child(&corev1.Service{}, ns, "demo")
		Expect(clientSvc.Spec.Type).To(Equal(corev1.ServiceTypeClusterIP))
		Expect(clientSvc.Spec.Ports).To(HaveLen(2))
		Expect(clientSvc.Spec.Selector).To(Equal(res.SelectorLabels(mc)))

		s := sts(mc)
		Expect(*s.Spec.Replicas).To(Equal(int32(3)))
		Expect(s.Spec.ServiceName).To(Equal("demo-headless"))
		Expect(s.Spec.PodManagementPolicy).To(Equal(appsv1.ParallelPodManagement))
		Expect(s.Spec.UpdateStrategy.Type).To(Equal(appsv1.OnDeleteStatefulSetStrategyType))
		Expect(s.Spec.VolumeClaimTemplates[0].Spec.Resources.Requests.Storage().String()).To(Equal("1Gi"))
		Expect(s.Spec.Template.Annotations[res.AnnotationConfigHash]).To(Equal(res.ConfigHash([]byte(cm.Data[res.ConfigFile]))))
		c := s.Spec.Template.Spec.Containers[0]
		Expect(c.Image).To(Equal("mqttd:suite-default"))
		Expect(*c.SecurityContext.ReadOnlyRootFilesystem).To(BeTrue())
		Expect(*s.Spec.Template.Spec.SecurityContext.RunAsNonRoot).To(BeTrue())
		Expect(c.ReadinessProbe.HTTPGet.Path).To(Equal("/readyz"))

		pdb := child(&policyv1.PodDisruptionBudget{}, ns, "demo")
		Expect(pdb.Spec.MaxUnavailable.IntValue()).To(Equal(1))

		for _, obj := range []client.Object{cookie, token, cm, headless, clientSvc, s, pdb} {
			Expect(ownedBy(obj, mc)).To(BeTrue(), "%T %s is not owned by the cluster", obj, obj.GetName())
		}
		Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "demo-dashboard"}, &corev1.Service{})).
			To(WithTransform(apierrors.IsNotFound, BeTrue()), "no dashboard Service unless enabled")

		Eventually(func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(mc), mc)).To(Succeed())
			g.Expect(mc.Status.ObservedGeneration).To(Equal(mc.Generation))
			g.Expect(mc.Status.Selector).To(Equal("app.kubernetes.io/instance=demo,app.kubernetes.io/name=mqttd"))
		}).Should(Succeed())
	})

	It("carries each spec area to the children", func() {
		ns := newNamespace()
		mc := createCluster(ns, "upd", nil)
		before := sts(mc)
		cookie := child(&corev1.Secret{}, ns, "upd-cookie").Data[res.CookieKey]
		oldHash := before.Spec.Template.Annotations[res.AnnotationConfigHash]

		updateCluster(mc, func(mc *v1alpha1.MQTTCluster) {
			mc.Spec.Replicas = ptr.To[int32](5)
			mc.Spec.Image = "mqttd:v2"
			mc.Spec.Resources = corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("256Mi")}}
			mc.Spec.Listeners = []v1alpha1.Listener{{Name: "mqtt", Port: 11883}}
			mc.Spec.Service = v1alpha1.ServiceSpec{Type: corev1.ServiceTypeNodePort, Annotations: map[string]string{"lb": "internal"}}
			mc.Spec.Config = map[string]string{"limits.max_queued_messages": "77"}
			mc.Spec.Pod.Labels = map[string]string{"team": "iot"}
			mc.Spec.Pod.Tolerations = []corev1.Toleration{{Key: "mqtt", Operator: corev1.TolerationOpExists}}
		})

		Eventually(func(g Gomega) {
			s := sts(mc)
			g.Expect(*s.Spec.Replicas).To(Equal(int32(5)))
			t := s.Spec.Template
			g.Expect(t.Spec.Containers[0].Image).To(Equal("mqttd:v2"))
			g.Expect(t.Spec.Containers[0].Resources.Limits.Memory().String()).To(Equal("256Mi"))
			g.Expect(t.Labels["team"]).To(Equal("iot"))
			g.Expect(t.Spec.Tolerations).To(HaveLen(1))
			g.Expect(t.Annotations[res.AnnotationConfigHash]).NotTo(Equal(oldHash))
		}).Should(Succeed())
		// A wider Service type waits until the pods run the new configuration: play
		// the StatefulSet controller reporting every pod on the new template.
		setSTSStatus(mc, 0)
		Eventually(func(g Gomega) {
			cm := child(&corev1.ConfigMap{}, ns, "upd-config")
			g.Expect(cm.Data[res.ConfigFile]).To(ContainSubstring("max_queued_messages: 77"))
			g.Expect(cm.Data[res.ConfigFile]).To(ContainSubstring("tcp: 0.0.0.0:11883"))
			svc := child(&corev1.Service{}, ns, "upd")
			g.Expect(svc.Spec.Type).To(Equal(corev1.ServiceTypeNodePort))
			g.Expect(svc.Annotations["lb"]).To(Equal("internal"))
			g.Expect(svc.Spec.Ports).To(HaveLen(1))
			g.Expect(svc.Spec.Ports[0].Port).To(Equal(int32(11883)))
			g.Expect(svc.Spec.Ports[0].NodePort).NotTo(BeZero())
		}).Should(Succeed())

		// The dashboard: its Service, its port in the pod template and its listener
		// in mqttd.yaml; the client Service keeps its type (it was already wide).
		updateCluster(mc, func(mc *v1alpha1.MQTTCluster) { mc.Spec.Dashboard.Enabled = true })
		child(&corev1.Service{}, ns, "upd-dashboard")
		Eventually(func(g Gomega) {
			g.Expect(child(&corev1.ConfigMap{}, ns, "upd-config").Data[res.ConfigFile]).To(ContainSubstring("listen: 0.0.0.0:18083"))
			g.Expect(sts(mc).Spec.Template.Spec.Containers[0].Ports).To(ContainElement(HaveField("Name", "dashboard")))
		}).Should(Succeed())
		Consistently(func() corev1.ServiceType { return child(&corev1.Service{}, ns, "upd").Spec.Type }).Should(Equal(corev1.ServiceTypeNodePort))

		updateCluster(mc, func(mc *v1alpha1.MQTTCluster) { mc.Spec.Dashboard.Enabled = false })
		Eventually(func() bool {
			return apierrors.IsNotFound(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "upd-dashboard"}, &corev1.Service{}))
		}).Should(BeTrue(), "the dashboard Service goes when the dashboard is disabled")
		// The dashboard port leaves the pod template; only then may the pods report
		// running it (a status written before would describe the older template).
		Eventually(func(g Gomega) {
			for _, p := range sts(mc).Spec.Template.Spec.Containers[0].Ports {
				g.Expect(p.Name).NotTo(Equal("dashboard"))
			}
		}).Should(Succeed())
		setSTSStatus(mc, 0) // the pods run the template again: the Service may widen
		Eventually(func() corev1.ServiceType { return child(&corev1.Service{}, ns, "upd").Spec.Type }).Should(Equal(corev1.ServiceTypeNodePort))

		Expect(child(&corev1.Secret{}, ns, "upd-cookie").Data[res.CookieKey]).To(Equal(cookie), "the cookie was regenerated")
	})

	It("recreates a child deleted by hand", func() {
		ns := newNamespace()
		mc := createCluster(ns, "heal", nil)
		for _, obj := range []client.Object{
			child(&corev1.ConfigMap{}, ns, "heal-config"),
			child(&corev1.Service{}, ns, "heal"),
			child(&corev1.Service{}, ns, "heal-headless"),
			child(&policyv1.PodDisruptionBudget{}, ns, "heal"),
			child(&networkingv1.NetworkPolicy{}, ns, "heal"),
			sts(mc),
		} {
			uid := obj.GetUID()
			Expect(k8sClient.Delete(ctx, obj)).To(Succeed())
			Eventually(func(g Gomega) {
				g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(obj), obj)).To(Succeed())
				g.Expect(obj.GetUID()).NotTo(Equal(uid))
			}).Should(Succeed(), "%T %s was not recreated", obj, obj.GetName())
		}
	})

	It("uses the user's cookie Secret, reports a missing one and never generates its own", func() {
		ns := newNamespace()
		mc := createCluster(ns, "byo", func(mc *v1alpha1.MQTTCluster) {
			mc.Spec.CookieSecretRef = &v1alpha1.SecretKeySelector{Name: "my-cookie", Key: "value"}
		})
		expectCondition(mc, v1alpha1.ConditionDegraded, metav1.ConditionTrue, "SecretNotFound")
		expectCondition(mc, v1alpha1.ConditionReady, metav1.ConditionFalse, "InvalidSpec")
		Expect(condition(mc, v1alpha1.ConditionDegraded).Message).To(ContainSubstring(`spec.cookieSecretRef: Secret "my-cookie" not found`))
		Eventually(func() int { return len(warningEvents(mc, "SecretNotFound")) }).Should(BeNumerically(">", 0))
		Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "byo"}, &appsv1.StatefulSet{})).
			To(WithTransform(apierrors.IsNotFound, BeTrue()), "no pods before their Secret exists")

		Expect(k8sClient.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "my-cookie"},
			Data: map[string][]byte{"value": []byte("s3cret-cookie")}})).To(Succeed())
		expectCondition(mc, v1alpha1.ConditionDegraded, metav1.ConditionFalse, "AsExpected")
		// The pods mount the operator's copy of it (the node Secret).
		Expect(projectedSources(sts(mc))).To(ContainElement("byo-node-secrets/cookie"))
		Eventually(func() []byte { return child(&corev1.Secret{}, ns, "byo-node-secrets").Data[res.NodeCookieKey] }).
			Should(Equal([]byte("s3cret-cookie")))
		Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "byo-cookie"}, &corev1.Secret{})).
			To(WithTransform(apierrors.IsNotFound, BeTrue()), "a cookie was generated although the user brought one")
		Expect(child(&corev1.Secret{}, ns, "my-cookie").Data["value"]).To(Equal([]byte("s3cret-cookie")))
	})

	It("reports a bad config setting as invalid input", func() {
		ns := newNamespace()
		mc := createCluster(ns, "badcfg", func(mc *v1alpha1.MQTTCluster) {
			mc.Spec.Config = map[string]string{"limits.max_queued_messages": "plenty"}
		})
		expectCondition(mc, v1alpha1.ConditionDegraded, metav1.ConditionTrue, "InvalidConfig")
		Expect(condition(mc, v1alpha1.ConditionDegraded).Message).To(ContainSubstring("limits.max_queued_messages"))
		Eventually(func() int { return len(warningEvents(mc, "InvalidConfig")) }).Should(BeNumerically(">", 0))

		updateCluster(mc, func(mc *v1alpha1.MQTTCluster) { mc.Spec.Config["limits.max_queued_messages"] = "500" })
		expectCondition(mc, v1alpha1.ConditionDegraded, metav1.ConditionFalse, "AsExpected")
		sts(mc)
	})

	It("refuses to take over an object it did not create", func() {
		ns := newNamespace()
		Expect(k8sClient.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "taken-config"},
			Data: map[string]string{"mine": "yes"}})).To(Succeed())
		mc := createCluster(ns, "taken", nil)
		expectCondition(mc, v1alpha1.ConditionDegraded, metav1.ConditionTrue, "ChildNameConflict")
		Expect(condition(mc, v1alpha1.ConditionDegraded).Message).To(ContainSubstring(`"taken-config" exists and is not owned`))
		cm := child(&corev1.ConfigMap{}, ns, "taken-config")
		Expect(cm.Data).To(Equal(map[string]string{"mine": "yes"}))
		Expect(metav1.GetControllerOf(cm)).To(BeNil())
	})

	It("keeps the volumes when the storage size changes and says why", func() {
		ns := newNamespace()
		mc := createCluster(ns, "resize", nil)
		sts(mc)
		updateCluster(mc, func(mc *v1alpha1.MQTTCluster) { mc.Spec.Storage.Size = ptr.To(resource.MustParse("10Gi")) })
		expectCondition(mc, v1alpha1.ConditionDegraded, metav1.ConditionTrue, "StorageResizeUnsupported")
		Expect(sts(mc).Spec.VolumeClaimTemplates[0].Spec.Resources.Requests.Storage().String()).To(Equal("1Gi"))
		Eventually(func() int { return len(warningEvents(mc, "StorageResizeUnsupported")) }).Should(BeNumerically(">", 0))
	})

	It("follows the StatefulSet's readiness in its conditions", func() {
		ns := newNamespace()
		mc := createCluster(ns, "ready", nil)
		sts(mc)
		setSTSStatus(mc, 0)
		expectCondition(mc, v1alpha1.ConditionReady, metav1.ConditionFalse, "NodesNotReady")
		expectCondition(mc, v1alpha1.ConditionAvailable, metav1.ConditionFalse, "NoNodeReady")
		expectCondition(mc, v1alpha1.ConditionProgressing, metav1.ConditionTrue, "Reconciling")

		setSTSStatus(mc, 1)
		expectCondition(mc, v1alpha1.ConditionAvailable, metav1.ConditionTrue, "NodesReady")
		expectCondition(mc, v1alpha1.ConditionReady, metav1.ConditionFalse, "NodesNotReady")

		setSTSStatus(mc, 3)
		expectCondition(mc, v1alpha1.ConditionReady, metav1.ConditionFalse, "MembersNotJoined") // pods ready, no broker answers: Ready needs joined members (test/lifecycle)
		expectCondition(mc, v1alpha1.ConditionProgressing, metav1.ConditionFalse, "Stable")
		expectCondition(mc, v1alpha1.ConditionDegraded, metav1.ConditionFalse, "AsExpected")
		Eventually(func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(mc), mc)).To(Succeed())
			g.Expect(mc.Status.ReadyReplicas).To(Equal(int32(3)))
			g.Expect(mc.Status.Replicas).To(Equal(int32(3)))
		}).Should(Succeed())

		// Scaling up through the scale subresource, as `kubectl scale` does.
		scale := &autoscalingv1.Scale{}
		Expect(k8sClient.SubResource("scale").Get(ctx, mc, scale)).To(Succeed())
		Expect(scale.Spec.Replicas).To(Equal(int32(3)))
		Expect(scale.Status.Selector).To(Equal("app.kubernetes.io/instance=ready,app.kubernetes.io/name=mqttd"))
		scale.Spec.Replicas = 4
		Expect(k8sClient.SubResource("scale").Update(ctx, mc, client.WithSubResourceBody(scale))).To(Succeed())
		Eventually(func() int32 { return *sts(mc).Spec.Replicas }).Should(Equal(int32(4)))
		expectCondition(mc, v1alpha1.ConditionReady, metav1.ConditionFalse, "NodesNotReady")
	})

	It("does not rewrite children when nothing changed", func() {
		ns := newNamespace()
		mc := createCluster(ns, "quiet", nil)
		sts(mc)
		setSTSStatus(mc, 3)
		expectCondition(mc, v1alpha1.ConditionReady, metav1.ConditionFalse, "MembersNotJoined") // pods ready, no broker answers: Ready needs joined members (test/lifecycle)

		counters := map[string]*watchCounter{
			"statefulsets": countWatchEvents(ns, &appsv1.StatefulSetList{}),
			"configmaps":   countWatchEvents(ns, &corev1.ConfigMapList{}),
			"services":     countWatchEvents(ns, &corev1.ServiceList{}),
			"secrets":      countWatchEvents(ns, &corev1.SecretList{}),
			"pdbs":         countWatchEvents(ns, &policyv1.PodDisruptionBudgetList{}),
			"netpols":      countWatchEvents(ns, &networkingv1.NetworkPolicyList{}),
		}
		// Reconciles with nothing to do: a metadata-only change of the cluster, then a
		// StatefulSet status change, whose effect on the cluster's status shows that
		// the reconciles ran.
		updateCluster(mc, func(mc *v1alpha1.MQTTCluster) {
			if mc.Annotations == nil {
				mc.Annotations = map[string]string{}
			}
			mc.Annotations["touched"] = "yes"
		})
		setSTSStatus(mc, 2)
		expectCondition(mc, v1alpha1.ConditionReady, metav1.ConditionFalse, "NodesNotReady")
		setSTSStatus(mc, 3)
		expectCondition(mc, v1alpha1.ConditionReady, metav1.ConditionFalse, "MembersNotJoined") // pods ready, no broker answers: Ready needs joined members (test/lifecycle)

		Consistently(func() int64 { return counters["statefulsets"].events.Load() }).Should(Equal(int64(2)),
			"only the two status updates made by the test")
		for kind, c := range counters {
			if kind == "statefulsets" {
				continue
			}
			Expect(c.events.Load()).To(BeZero(), "%s were rewritten with nothing to change", kind)
		}
		Expect(strings.Join(mc.Finalizers, ",")).To(BeEmpty())
	})
})
