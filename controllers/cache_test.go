package controllers_test

import (
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	"github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
	res "github.com/mqtt-operator/mqtt-operator/controllers/resource"
)

var _ = Describe("The manager's cache", func() {
	// Each kind has one watch for every namespace, whose events come in the order the
	// API server wrote the objects: once an object created later is in the cache, an
	// earlier one that the cache would hold is there too. So "not in the cache" is
	// checked after a later labeled object arrived, with no wait for nothing.
	It("holds the operator's children, not the namespace's other Secrets, pods and claims", func() {
		ns := newNamespace()
		unrelated := []client.Object{
			&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "unrelated"},
				Data: map[string][]byte{"key": []byte("value")}},
			&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "unrelated"},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app"}}}},
			claim(ns, "unrelated", nil),
		}
		for _, obj := range unrelated {
			Expect(k8sClient.Create(ctx, obj)).To(Succeed())
		}
		// The user's cookie Secret, named by the spec: read, watched, never cached.
		cookie := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "my-cookie"},
			Data: map[string][]byte{"wrong-key": []byte("s3cret-cookie")}}
		Expect(k8sClient.Create(ctx, cookie)).To(Succeed())
		mc := createCluster(ns, "cached", func(mc *v1alpha1.MQTTCluster) {
			mc.Spec.CookieSecretRef = &v1alpha1.SecretKeySelector{Name: "my-cookie", Key: "value"}
		})
		expectCondition(mc, v1alpha1.ConditionDegraded, metav1.ConditionTrue, "SecretKeyMissing")

		// Fixing the Secret is seen through the names-only watch.
		cookie.Data = map[string][]byte{"value": []byte("s3cret-cookie")}
		Expect(k8sClient.Update(ctx, cookie)).To(Succeed())
		expectCondition(mc, v1alpha1.ConditionDegraded, metav1.ConditionFalse, "AsExpected")

		// A node's pod and claim, as the StatefulSet controller makes them.
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "cached-0", Labels: res.SelectorLabels(mc)},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "mqttd", Image: "mqttd"}}}}
		Expect(k8sClient.Create(ctx, pod)).To(Succeed())
		Expect(k8sClient.Create(ctx, claim(ns, res.DataClaimName(mc, "cached-0"), res.SelectorLabels(mc)))).To(Succeed())

		children := []client.Object{
			&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "cached-api-token"}},
			&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "cached-0"}},
			&corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: res.DataClaimName(mc, "cached-0")}},
		}
		for _, obj := range children {
			Eventually(func() error {
				return mgrCache.Get(ctx, client.ObjectKeyFromObject(obj), obj)
			}).Should(Succeed(), "%T %s is the operator's: it belongs in the cache", obj, obj.GetName())
			Expect(obj.GetManagedFields()).To(BeEmpty(), "%T %s: managedFields are dropped", obj, obj.GetName())
		}
		for _, obj := range append(unrelated, cookie) {
			err := mgrCache.Get(ctx, client.ObjectKeyFromObject(obj), obj)
			Expect(apierrors.IsNotFound(err)).To(BeTrue(), "%T %s is not the operator's: it must not be cached (err %v)", obj, obj.GetName(), err)
		}
		var secrets corev1.SecretList
		Expect(mgrCache.List(ctx, &secrets, client.InNamespace(ns))).To(Succeed())
		var names []string
		for _, s := range secrets.Items {
			names = append(names, s.Name)
		}
		Expect(names).To(ConsistOf("cached-api-token", "cached-node-secrets", "cached-fingerprint-key", "cached-cluster-ca", "cached-cluster-tls"),
			"the cached Secrets are the generated ones")
	})

	It("gives a child back its labels when they are edited away, though it left the cache", func() {
		ns := newNamespace()
		mc := createCluster(ns, "relabel", nil)
		cm := child(&corev1.ConfigMap{}, ns, "relabel-config")
		Eventually(func() error {
			return mgrCache.Get(ctx, client.ObjectKeyFromObject(cm), &corev1.ConfigMap{})
		}).Should(Succeed())

		Eventually(func() error {
			cm = child(&corev1.ConfigMap{}, ns, "relabel-config")
			cm.Labels = nil
			return k8sClient.Update(ctx, cm)
		}).Should(Succeed())
		Eventually(func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(cm), cm)).To(Succeed())
			g.Expect(cm.Labels).To(Equal(res.Labels(mc)))
		}).Should(Succeed(), "the ConfigMap gets its labels back")
	})

	It("keeps a scale-down's size when the StatefulSet's labels are edited away (decided on the API server's copy)", func() {
		ns := newNamespace()
		mc := createCluster(ns, "shrink", func(mc *v1alpha1.MQTTCluster) { mc.Spec.Replicas = ptr.To[int32](5) })
		Eventually(func() int32 { return *sts(mc).Spec.Replicas }).Should(Equal(int32(5)))
		updateCluster(mc, func(mc *v1alpha1.MQTTCluster) { mc.Spec.Replicas = ptr.To[int32](3) })
		Consistently(func() int32 { return *sts(mc).Spec.Replicas }).Should(Equal(int32(5)),
			"the lifecycle shrinks it one node at a time, after evacuating (it cannot here: no broker answers)")

		Eventually(func() error {
			s := sts(mc)
			delete(s.Labels, res.LabelName)
			return k8sClient.Update(ctx, s)
		}).Should(Succeed())
		Eventually(func() map[string]string { return sts(mc).Labels }).Should(HaveKeyWithValue(res.LabelName, "mqttd"), "its labels come back")
		Consistently(func() int32 { return *sts(mc).Spec.Replicas }).Should(Equal(int32(5)), "never shrunk without the lifecycle")
	})

	It("deletes a turned-off NetworkPolicy it owns although it is not labeled", func() {
		ns := newNamespace()
		mc := createCluster(ns, "unlabeled", func(mc *v1alpha1.MQTTCluster) { mc.Spec.NetworkPolicy.Enabled = ptr.To(false) })
		sts(mc)
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(mc), mc)).To(Succeed())
		np := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "unlabeled"},
			Spec: networkingv1.NetworkPolicySpec{PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}}}
		Expect(controllerutil.SetControllerReference(mc, np, scheme)).To(Succeed())
		Expect(k8sClient.Create(ctx, np)).To(Succeed())
		updateCluster(mc, func(mc *v1alpha1.MQTTCluster) { mc.Spec.Pod.Annotations = map[string]string{"touch": "1"} })
		Eventually(func() bool {
			return apierrors.IsNotFound(k8sClient.Get(ctx, client.ObjectKeyFromObject(np), &networkingv1.NetworkPolicy{}))
		}).Should(BeTrue(), "the cluster owns it: it is deleted though the cache does not hold it")
	})
})

// claim is a volume claim in ns.
func claim(ns, name string, labels map[string]string) *corev1.PersistentVolumeClaim {
	return &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources: corev1.VolumeResourceRequirements{
				Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")},
			},
		},
	}
}
