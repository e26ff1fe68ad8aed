package controllers_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
)

var nsCounter atomic.Int64

// newNamespace creates a namespace for one spec; every spec has its own.
func newNamespace() string {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("test-%d", nsCounter.Add(1))}}
	Expect(k8sClient.Create(context.Background(), ns)).To(Succeed())
	return ns.Name
}

// createCluster creates an MQTTCluster named name in ns after edit.
func createCluster(ns, name string, edit func(*v1alpha1.MQTTCluster)) *v1alpha1.MQTTCluster {
	mc := &v1alpha1.MQTTCluster{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	if edit != nil {
		edit(mc)
	}
	Expect(k8sClient.Create(context.Background(), mc)).To(Succeed())
	return mc
}

// updateCluster re-reads the cluster, applies edit and writes it, retrying conflicts
// with the controller's status writes.
func updateCluster(mc *v1alpha1.MQTTCluster, edit func(*v1alpha1.MQTTCluster)) {
	Eventually(func() error {
		if err := k8sClient.Get(context.Background(), client.ObjectKeyFromObject(mc), mc); err != nil {
			return err
		}
		edit(mc)
		return k8sClient.Update(context.Background(), mc)
	}).Should(Succeed())
}

// child waits for the object ns/name to exist and returns it.
func child[T client.Object](obj T, ns, name string) T {
	Eventually(func() error {
		return k8sClient.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, obj)
	}).Should(Succeed(), "%T %s/%s should exist", obj, ns, name)
	return obj
}

// sts returns the cluster's StatefulSet once it exists.
func sts(mc *v1alpha1.MQTTCluster) *appsv1.StatefulSet {
	return child(&appsv1.StatefulSet{}, mc.Namespace, mc.Name)
}

// setSTSStatus plays the StatefulSet controller for 3 pods, ready of them ready.
func setSTSStatus(mc *v1alpha1.MQTTCluster, ready int32) {
	const replicas = 3
	Eventually(func() error {
		s := sts(mc)
		s.Status.ObservedGeneration = s.Generation
		s.Status.Replicas = replicas
		s.Status.ReadyReplicas = ready
		s.Status.CurrentReplicas = replicas
		s.Status.UpdatedReplicas = replicas
		s.Status.AvailableReplicas = ready
		return k8sClient.Status().Update(context.Background(), s)
	}).Should(Succeed())
}

// condition returns the cluster's condition of type t as it is now (nil if absent).
func condition(mc *v1alpha1.MQTTCluster, t string) *metav1.Condition {
	cur := &v1alpha1.MQTTCluster{}
	if err := k8sClient.Get(context.Background(), client.ObjectKeyFromObject(mc), cur); err != nil {
		return nil
	}
	return meta.FindStatusCondition(cur.Status.Conditions, t)
}

// expectCondition waits until condition t has status s and reason reason.
func expectCondition(mc *v1alpha1.MQTTCluster, t string, s metav1.ConditionStatus, reason string) {
	GinkgoHelper()
	Eventually(func(g Gomega) {
		c := condition(mc, t)
		g.Expect(c).NotTo(BeNil())
		g.Expect(c.Status).To(Equal(s), "condition %s: %s", t, c.Message)
		g.Expect(c.Reason).To(Equal(reason), "condition %s: %s", t, c.Message)
	}).Should(Succeed())
}

// warningEvents lists the Warning events about the cluster with reason.
func warningEvents(mc *v1alpha1.MQTTCluster, reason string) []eventsv1.Event {
	var list eventsv1.EventList
	Expect(k8sClient.List(context.Background(), &list, client.InNamespace(mc.Namespace))).To(Succeed())
	var out []eventsv1.Event
	for _, e := range list.Items {
		if e.Regarding.Name == mc.Name && e.Type == corev1.EventTypeWarning && e.Reason == reason {
			out = append(out, e)
		}
	}
	return out
}

// watchCounter counts watch events on one kind of object in a namespace.
type watchCounter struct {
	w      watch.Interface
	events atomic.Int64
	done   chan struct{}
}

// countWatchEvents starts counting changes to objects of list's kind in ns.
func countWatchEvents(ns string, list client.ObjectList) *watchCounter {
	wc, err := client.NewWithWatch(cfg, client.Options{Scheme: scheme})
	Expect(err).NotTo(HaveOccurred())
	Expect(wc.List(context.Background(), list, client.InNamespace(ns))).To(Succeed())
	w, err := wc.Watch(context.Background(), list, client.InNamespace(ns),
		&client.ListOptions{Raw: &metav1.ListOptions{ResourceVersion: list.(metav1.ListInterface).GetResourceVersion()}})
	Expect(err).NotTo(HaveOccurred())
	c := &watchCounter{w: w, done: make(chan struct{})}
	go func() {
		defer close(c.done)
		for range w.ResultChan() {
			c.events.Add(1)
		}
	}()
	DeferCleanup(func() {
		w.Stop()
		<-c.done
	})
	return c
}

// selfSigned returns a self-signed certificate for host and its key, PEM-encoded, as
// a kubernetes.io/tls Secret holds them.
func selfSigned(host string) (certPEM, keyPEM []byte) {
	GinkgoHelper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	Expect(err).NotTo(HaveOccurred())
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: host}, DNSNames: []string{host},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	Expect(err).NotTo(HaveOccurred())
	keyDER, err := x509.MarshalECPrivateKey(key)
	Expect(err).NotTo(HaveOccurred())
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
}
