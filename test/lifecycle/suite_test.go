// Package lifecycle_test is the acceptance suite of the operator's cluster lifecycle
// (issue 6): the real reconciler, in a controller-runtime manager of the suite's own,
// against a real kube-apiserver and etcd (envtest), driving real mqttd processes on
// 127.0.0.1 through their HTTP API.
//
// Kubernetes' StatefulSet controller, kubelet and PVC protection do not exist in
// envtest, so a simulator per MQTTCluster plays them (simulator_test.go): it creates
// the Pods and PVCs the StatefulSet asks for, runs one mqttd per Pod, reports /readyz
// as the Pod's Ready condition, and stops the process when the Pod is deleted. The
// operator reaches the brokers through its pod-address seam (controllers.PodAddresses),
// which the suite's registry answers with each process's address (brokers_test.go).
//
// Each spec runs in its own namespace with its own manager, watching only that
// namespace, so a spec can stop the operator and start a new one. Nothing waits with a
// sleep; every port is random except each pod's cluster port, which is fixed for the
// pod's life (raft remembers member addresses). A failed spec prints the tail of every
// node's log, the operator's API calls and the namespace's events.
package lifecycle_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
	"github.com/mqtt-operator/mqtt-operator/controllers"
	"github.com/mqtt-operator/mqtt-operator/test/mqttdproc"
)

// Bounds of the waits. The machines that run the suite have few cores, shared with
// other work: cluster changes get generous (but bounded) time.
const (
	formTimeout   = 2 * time.Minute // a cluster forms, grows or shrinks by a few nodes
	changeTimeout = 4 * time.Minute // a rolling upgrade or a resumed scale-down
	pollInterval  = 100 * time.Millisecond
)

var (
	cfg       *rest.Config
	k8sClient client.Client
	testEnv   *envtest.Environment
	scheme    = runtime.NewScheme()
	// clusterPorts are the pods' cluster ports (test/cluster uses the range below).
	clusterPorts = mqttdproc.NewPorts(21000, 32000)

	// mqttdBin is the broker binary under test, built once.
	mqttdBin string
	// workDir holds the binary and every spec's data directories.
	workDir string
	// addresses maps pods to their processes for every operator of the suite.
	addresses = newRegistry()
)

func TestLifecycle(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "Lifecycle Suite")
}

var _ = BeforeSuite(func() {
	logf.SetLogger(zap.New(zap.WriteTo(GinkgoWriter), zap.UseDevMode(true)))
	Expect(os.Getenv("KUBEBUILDER_ASSETS")).NotTo(BeEmpty(),
		"KUBEBUILDER_ASSETS must name kube-apiserver and etcd: run the tests with `make test`, or export KUBEBUILDER_ASSETS=$(hack/envtest-binaries.sh)")
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(v1alpha1.AddToScheme(scheme))

	var err error
	workDir, err = os.MkdirTemp("", "mqtt-lifecycle-test")
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(os.RemoveAll, workDir)
	mqttdBin, err = mqttdproc.Build(workDir)
	Expect(err).NotTo(HaveOccurred())

	testEnv = &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join("..", "..", "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
	}
	cfg, err = testEnv.Start()
	Expect(err).NotTo(HaveOccurred())
	k8sClient, err = client.New(cfg, client.Options{Scheme: scheme})
	Expect(err).NotTo(HaveOccurred())

	SetDefaultEventuallyTimeout(formTimeout)
	SetDefaultEventuallyPollingInterval(pollInterval)
})

var _ = AfterSuite(func() {
	if testEnv != nil {
		Expect(testEnv.Stop()).To(Succeed())
	}
})

// operator is one run of the operator: a manager with the real reconciler.
type operator struct {
	cancel context.CancelFunc
	done   chan struct{}
}

// startOperator starts a manager that reconciles the MQTTClusters of namespace ns and
// reaches their pods through the suite's registry.
func startOperator(ns string) *operator {
	GinkgoHelper()
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:  scheme,
		Metrics: metricsserver.Options{BindAddress: "0"},
		Cache:   controllers.CacheOptions([]string{ns}), // the operator's own cache, label-filtered
		// Every run registers a controller with the same name in this process.
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
	})
	Expect(err).NotTo(HaveOccurred())
	Expect((&controllers.MQTTClusterReconciler{
		Client:       mgr.GetClient(),
		Scheme:       mgr.GetScheme(),
		Recorder:     mgr.GetEventRecorder("mqtt-operator"),
		DefaultImage: "mqttd:lifecycle-default",
		Pods:         addresses,
	}).SetupWithManager(mgr)).To(Succeed())
	ctx, cancel := context.WithCancel(context.Background())
	op := &operator{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer GinkgoRecover()
		defer close(op.done)
		Expect(mgr.Start(ctx)).To(Succeed())
	}()
	return op
}

// stop stops the manager and waits until it has returned, as a terminated operator pod.
func (o *operator) stop() {
	GinkgoHelper()
	o.cancel()
	Eventually(o.done).WithTimeout(time.Minute).Should(BeClosed(), "the manager did not stop")
}

// newNamespace creates a namespace of the spec's own.
func newNamespace(ctx context.Context) string {
	GinkgoHelper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "lifecycle-"}}
	Expect(k8sClient.Create(ctx, ns)).To(Succeed())
	return ns.Name
}

// must fails the spec on err with what was being done.
func must(err error, what string, args ...any) {
	GinkgoHelper()
	Expect(err).NotTo(HaveOccurred(), fmt.Sprintf(what, args...))
}
