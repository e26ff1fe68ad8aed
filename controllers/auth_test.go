package controllers_test

import (
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"golang.org/x/crypto/bcrypt"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
	"github.com/mqtt-operator/mqtt-operator/broker/auth"
	res "github.com/mqtt-operator/mqtt-operator/controllers/resource"
)

// touch makes the controller reconcile the cluster without changing its spec.
func touch(mc *v1alpha1.MQTTCluster, value string) {
	updateCluster(mc, func(mc *v1alpha1.MQTTCluster) {
		if mc.Annotations == nil {
			mc.Annotations = map[string]string{}
		}
		mc.Annotations["touched"] = value
	})
}

// usersVolume returns the Secret source of the pods' users volume (nil without).
func usersVolume(s *appsv1.StatefulSet) *corev1.SecretVolumeSource {
	for _, v := range s.Spec.Template.Spec.Volumes {
		if v.Name == "users" {
			return v.Secret
		}
	}
	return nil
}

var _ = Describe("MQTTCluster auth", func() {
	It("generates the users Secret once, owns it, mounts only its hashes and never regenerates it", func() {
		ns := newNamespace()
		mc := createCluster(ns, "closed", func(mc *v1alpha1.MQTTCluster) {
			mc.Spec.Auth = &v1alpha1.AuthSpec{AllowAnonymous: ptr.To(false)}
		})
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(mc), mc)).To(Succeed())

		users := child(&corev1.Secret{}, ns, "closed-users")
		Expect(ownedBy(users, mc)).To(BeTrue(), "the generated users Secret is owned by the cluster")
		Expect(string(users.Data[res.UsernameKey])).To(Equal("mqtt"))
		password := string(users.Data[res.PasswordKey])
		Expect(len(password)).To(BeNumerically(">=", 24))
		name, hash, ok := strings.Cut(strings.TrimSpace(string(users.Data[res.UsersKey])), ":")
		Expect(ok).To(BeTrue())
		Expect(name).To(Equal("mqtt"))
		Expect(bcrypt.CompareHashAndPassword([]byte(hash), []byte(password))).To(Succeed())

		cm := child(&corev1.ConfigMap{}, ns, "closed-config")
		Expect(cm.Data[res.ConfigFile]).To(ContainSubstring("allow_anonymous: false"))
		Expect(cm.Data[res.ConfigFile]).To(ContainSubstring("users_file: /etc/mqttd/users/users"))
		Expect(cm.Data[res.ACLFile]).To(Equal("default: allow\nrules: []\n"), "no ACL rules: an ACL file all the same, so the first rule restarts nothing")
		s := sts(mc)
		v := usersVolume(s)
		Expect(v).NotTo(BeNil())
		Expect(v.SecretName).To(Equal("closed-users"))
		Expect(v.Items).To(Equal([]corev1.KeyToPath{{Key: res.UsersKey, Path: res.UsersKey}}), "the clear password is not mounted")

		By("keeping a user added by hand and the password through later reconciles")
		alice, err := auth.HashLine("alice", []byte("alice-pw"), bcrypt.MinCost)
		Expect(err).NotTo(HaveOccurred())
		edited := string(users.Data[res.UsersKey]) + alice + "\n"
		users.Data[res.UsersKey] = []byte(edited)
		Expect(k8sClient.Update(ctx, users)).To(Succeed())
		generation := s.Generation
		touch(mc, "after-edit")
		Eventually(func(g Gomega) {
			cur := &v1alpha1.MQTTCluster{}
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(mc), cur)).To(Succeed())
			g.Expect(cur.Status.ObservedGeneration).To(Equal(cur.Generation))
		}).Should(Succeed())
		Consistently(func(g Gomega) {
			cur := child(&corev1.Secret{}, ns, "closed-users")
			g.Expect(string(cur.Data[res.UsersKey])).To(Equal(edited))
			g.Expect(string(cur.Data[res.PasswordKey])).To(Equal(password))
			g.Expect(sts(mc).Generation).To(Equal(generation), "a users change restarts no pod")
		}).Should(Succeed())

		By("refusing a users file mqttd could not start with, before any pod is touched")
		users = child(&corev1.Secret{}, ns, "closed-users")
		users.Data[res.UsersKey] = []byte(edited + "bob:not-a-hash\n")
		Expect(k8sClient.Update(ctx, users)).To(Succeed())
		expectCondition(mc, v1alpha1.ConditionReady, metav1.ConditionFalse, "InvalidSpec")
		Expect(condition(mc, v1alpha1.ConditionDegraded).Reason).To(Equal("InvalidUsersFile"))
		Expect(condition(mc, v1alpha1.ConditionDegraded).Message).To(ContainSubstring(`user "bob"`))
		Expect(sts(mc).Generation).To(Equal(generation))

		By("leaving an emptied users key empty, and saying that nobody can connect")
		users = child(&corev1.Secret{}, ns, "closed-users")
		users.Data[res.UsersKey] = []byte{}
		Expect(k8sClient.Update(ctx, users)).To(Succeed())
		expectCondition(mc, v1alpha1.ConditionDegraded, metav1.ConditionTrue, "NoUsers")
		Expect(child(&corev1.Secret{}, ns, "closed-users").Data[res.UsersKey]).To(BeEmpty(), "not refilled")
		Expect(string(child(&corev1.Secret{}, ns, "closed-users").Data[res.PasswordKey])).To(Equal(password))
	})

	It("renders the ACL into its own key, outside the config hash", func() {
		ns := newNamespace()
		mc := createCluster(ns, "acl", func(mc *v1alpha1.MQTTCluster) {
			mc.Spec.Auth = &v1alpha1.AuthSpec{ACL: []v1alpha1.ACLRule{
				{Username: "sensor", Topic: "sensors/%u/#", Access: "publish", Action: "allow"},
				{Username: "*", ClientID: "probe", Topic: "#", Access: "subscribe", Action: "deny"},
			}}
		})
		cm := child(&corev1.ConfigMap{}, ns, "acl-config")
		Expect(cm.Data[res.ConfigFile]).To(ContainSubstring("acl_file: /etc/mqttd/config/acl.yaml"))
		Expect(cm.Data[res.ConfigFile]).To(ContainSubstring("allow_anonymous: true"))
		Expect(cm.Data[res.ACLFile]).To(Equal(`default: allow
rules:
    - username: sensor
      topic: sensors/%u/#
      access: publish
      action: allow
    - username: '*'
      clientid: probe
      topic: '#'
      access: subscribe
      action: deny
`))
		s := sts(mc)
		Expect(s.Spec.Template.Annotations[res.AnnotationConfigHash]).To(Equal(res.ConfigHash([]byte(cm.Data[res.ConfigFile]))))
		generation, templateHash := s.Generation, s.Spec.Template.Annotations[res.AnnotationTemplateHash]

		By("changing a rule and the default: the ConfigMap changes, the pod template does not")
		updateCluster(mc, func(mc *v1alpha1.MQTTCluster) {
			mc.Spec.Auth.ACLDefault = "deny"
			mc.Spec.Auth.ACL[0].Topic = "devices/%u/#"
		})
		Eventually(func(g Gomega) {
			cm := child(&corev1.ConfigMap{}, ns, "acl-config")
			g.Expect(cm.Data[res.ACLFile]).To(HavePrefix("default: deny\n"))
			g.Expect(cm.Data[res.ACLFile]).To(ContainSubstring("topic: devices/%u/#"))
		}).Should(Succeed())
		Consistently(func(g Gomega) {
			s := sts(mc)
			g.Expect(s.Generation).To(Equal(generation))
			g.Expect(s.Spec.Template.Annotations[res.AnnotationTemplateHash]).To(Equal(templateHash))
		}).Should(Succeed())

		By("refusing a rule that is not a topic filter, as invalid input")
		updateCluster(mc, func(mc *v1alpha1.MQTTCluster) { mc.Spec.Auth.ACL[0].Topic = "a/#/b" })
		expectCondition(mc, v1alpha1.ConditionDegraded, metav1.ConditionTrue, "InvalidACL")
		Expect(condition(mc, v1alpha1.ConditionDegraded).Message).To(ContainSubstring(`spec.auth.acl: rule 1: topic "a/#/b"`))
		Expect(child(&corev1.ConfigMap{}, ns, "acl-config").Data[res.ACLFile]).To(ContainSubstring("topic: devices/%u/#"),
			"the last good ACL stays")
	})

	It("widens the client Service only once the pods run the settings the spec asks for", func() {
		ns := newNamespace()
		mc := createCluster(ns, "widen", nil) // anonymous clients allowed, ClusterIP
		setSTSStatus(mc, 3)
		oldHash := sts(mc).Spec.Template.Annotations[res.AnnotationConfigHash]
		By("turning anonymous access off and asking for a LoadBalancer in one edit")
		updateCluster(mc, func(mc *v1alpha1.MQTTCluster) {
			mc.Spec.Auth = &v1alpha1.AuthSpec{AllowAnonymous: ptr.To(false)}
			mc.Spec.Service.Type = corev1.ServiceTypeLoadBalancer
		})
		Eventually(func() string { return sts(mc).Spec.Template.Annotations[res.AnnotationConfigHash] }).
			ShouldNot(Equal(oldHash), "the new configuration rolls the pods")
		Consistently(func() corev1.ServiceType { return child(&corev1.Service{}, ns, "widen").Spec.Type }).
			Should(Equal(corev1.ServiceTypeClusterIP), "the old pods still let anonymous clients in")
		By("exposing it once every pod runs the new template")
		setSTSStatus(mc, 3)
		Eventually(func() corev1.ServiceType { return child(&corev1.Service{}, ns, "widen").Spec.Type }).
			Should(Equal(corev1.ServiceTypeLoadBalancer))
	})

	It("serves TLS listeners from their Secrets, exposes only them outside and keeps plain MQTT on the internal Service", func() {
		ns := newNamespace()
		certPEM, keyPEM := selfSigned("tls-cluster." + ns + ".svc")
		Expect(k8sClient.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "tls"},
			Type: corev1.SecretTypeTLS, Data: map[string][]byte{"tls.crt": certPEM, "tls.key": keyPEM}})).To(Succeed())
		mc := createCluster(ns, "tls-cluster", func(mc *v1alpha1.MQTTCluster) {
			mc.Spec.Service.Type = corev1.ServiceTypeLoadBalancer
			mc.Spec.Listeners = []v1alpha1.Listener{{Name: "mqtt", Port: 1883}, {Name: "mqtts", Port: 8883, TLSSecretName: "tls"},
				{Name: "wss", Port: 8084, TLSSecretName: "tls"}}
		})
		setSTSStatus(mc, 3)
		expectCondition(mc, v1alpha1.ConditionDegraded, metav1.ConditionFalse, "AsExpected")
		tmpl := sts(mc).Spec.Template.Spec
		Expect(tmpl.Volumes).To(ContainElement(And(HaveField("Name", "tls-mqtts"), HaveField("VolumeSource.Secret.SecretName", "tls"))))
		Expect(tmpl.Containers[0].VolumeMounts).To(ContainElements(
			And(HaveField("Name", "tls-mqtts"), HaveField("MountPath", "/etc/mqttd/tls/mqtts"), HaveField("SubPath", "")),
			And(HaveField("Name", "tls-wss"), HaveField("MountPath", "/etc/mqttd/tls/wss"))))
		cm := child(&corev1.ConfigMap{}, ns, "tls-cluster-config")
		Expect(cm.Data["mqttd.yaml"]).To(And(ContainSubstring(`mqtts: 0.0.0.0:8883`), ContainSubstring(`mqtts_cert_file: /etc/mqttd/tls/mqtts/tls.crt`),
			ContainSubstring(`wss: 0.0.0.0:8084`), ContainSubstring(`wss_key_file: /etc/mqttd/tls/wss/tls.key`)))
		Eventually(func(g Gomega) {
			svc := child(&corev1.Service{}, ns, "tls-cluster")
			g.Expect(svc.Spec.Type).To(Equal(corev1.ServiceTypeLoadBalancer))
			g.Expect(svc.Spec.Ports).To(ConsistOf(HaveField("Port", int32(8883)), HaveField("Port", int32(8084))), "only TLS outside")
			internal := child(&corev1.Service{}, ns, "tls-cluster-internal")
			g.Expect(internal.Spec.Type).To(Equal(corev1.ServiceTypeClusterIP))
			g.Expect(internal.Spec.Ports).To(ConsistOf(HaveField("Port", int32(1883))))
		}).Should(Succeed())

		By("refusing a Secret whose certificate and key do not load")
		Expect(k8sClient.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "broken"},
			Type: corev1.SecretTypeOpaque, Data: map[string][]byte{"tls.crt": []byte("c"), "tls.key": []byte("k")}})).To(Succeed())
		updateCluster(mc, func(mc *v1alpha1.MQTTCluster) { mc.Spec.Listeners[2].TLSSecretName = "broken" })
		expectCondition(mc, v1alpha1.ConditionDegraded, metav1.ConditionTrue, "InvalidTLSSecret")
		Expect(condition(mc, v1alpha1.ConditionDegraded).Message).To(ContainSubstring(`spec.listeners[wss].tlsSecretName: Secret "broken"`))

		By("keeping the internal Service, and every port on the client Service, when it stays inside the cluster")
		updateCluster(mc, func(mc *v1alpha1.MQTTCluster) {
			mc.Spec.Listeners[2].TLSSecretName = "tls"
			mc.Spec.Service.Type = corev1.ServiceTypeClusterIP
		})
		expectCondition(mc, v1alpha1.ConditionDegraded, metav1.ConditionFalse, "AsExpected")
		Eventually(func() []corev1.ServicePort { return child(&corev1.Service{}, ns, "tls-cluster").Spec.Ports }).Should(HaveLen(3))
		Expect(child(&corev1.Service{}, ns, "tls-cluster-internal").Spec.Ports).To(ConsistOf(HaveField("Port", int32(1883))))

		By("dropping the internal Service when no plain listener is left")
		updateCluster(mc, func(mc *v1alpha1.MQTTCluster) { mc.Spec.Listeners = mc.Spec.Listeners[1:] })
		Eventually(func() error {
			return k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "tls-cluster-internal"}, &corev1.Service{})
		}).Should(Satisfy(apierrors.IsNotFound))
	})
})
