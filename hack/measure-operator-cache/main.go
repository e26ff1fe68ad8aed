// Command measure-operator-cache measures the operator's heap before and after 5,000
// Secrets that are none of its business appear in the namespaces it watches, once with
// the operator's cache (controllers.CacheOptions: label-selected, the user's Secrets
// watched by name only) and once with an unfiltered cache (every object of every kind
// the controller watches, as main.go had before). docs/benchmarks.md has the figures.
//
// Run it with `make measure-operator-cache`, or:
//
//	KUBEBUILDER_ASSETS=$(hack/envtest-binaries.sh) go run ./hack/measure-operator-cache
//
// Each cache runs in a process of its own (the program runs itself with -cache), with
// its own envtest API server and etcd, so neither run's memory or objects reach the
// other's figures. The heap is runtime.MemStats.HeapInuse after two garbage
// collections: the live objects, the caches' among them.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kruntime "k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
	"github.com/mqtt-operator/mqtt-operator/controllers"
	"github.com/mqtt-operator/mqtt-operator/controllers/resource"
)

// The caches compared.
var caches = map[string]func() cache.Options{
	"operator":   func() cache.Options { return controllers.CacheOptions(nil) },
	"unfiltered": func() cache.Options { return cache.Options{} },
}

func main() {
	var (
		mode       = flag.String("cache", "", "run one measurement with this cache (operator or unfiltered); empty: both, each in a process of its own")
		secrets    = flag.Int("secrets", 5000, "number of unrelated Secrets")
		size       = flag.Int("secret-size", 4096, "bytes of data in each unrelated Secret")
		namespaces = flag.Int("namespaces", 5, "namespaces the unrelated Secrets are spread over (the MQTTCluster's among them)")
	)
	flag.Parse()
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		fail(errors.New("KUBEBUILDER_ASSETS must name kube-apiserver and etcd: run `make measure-operator-cache`"))
	}
	if *mode == "" {
		fmt.Printf("%d unrelated Secrets of %d bytes in %d namespaces; heap = HeapInuse after GC, MiB\n\n", *secrets, *size, *namespaces)
		fmt.Printf("%-10s %8s %8s %8s %16s\n", "cache", "before", "after", "growth", "Secrets cached")
		for _, m := range []string{"operator", "unfiltered"} {
			cmd := exec.Command(os.Args[0], append([]string{"-cache", m}, os.Args[1:]...)...)
			cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
			if err := cmd.Run(); err != nil {
				fail(fmt.Errorf("measuring the %s cache: %w", m, err))
			}
		}
		return
	}
	opts, ok := caches[*mode]
	if !ok {
		fail(fmt.Errorf("unknown -cache %q", *mode))
	}
	m, err := measure(opts(), *secrets, *size, *namespaces)
	if err != nil {
		fail(fmt.Errorf("%s cache: %w", *mode, err))
	}
	fmt.Printf("%-10s %8.1f %8.1f %8.1f %16d\n", *mode, mib(m.before), mib(m.after), mib(m.after)-mib(m.before), m.cachedSecrets)
}

// result is one measurement.
type result struct {
	before, after uint64 // heap in use, bytes
	cachedSecrets int    // Secrets in the manager's cache at the end
}

// measure runs envtest and the operator's manager with opts, creates an MQTTCluster
// that refers to a Secret of the user's, and measures the heap before and after the
// unrelated Secrets are created.
func measure(opts cache.Options, secrets, size, namespaces int) (result, error) {
	log.SetLogger(zap.New(zap.WriteTo(discard{})))
	env := &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join(repoRoot(), "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
	}
	cfg, err := env.Start()
	if err != nil {
		return result{}, fmt.Errorf("starting envtest: %w", err)
	}
	defer func() { _ = env.Stop() }()

	scheme := kruntime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(v1alpha1.AddToScheme(scheme))
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return result{}, err
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{Scheme: scheme, Cache: opts, Metrics: metricsserver.Options{BindAddress: "0"}})
	if err != nil {
		return result{}, err
	}
	if err := (&controllers.MQTTClusterReconciler{
		Client:       mgr.GetClient(),
		Scheme:       mgr.GetScheme(),
		DefaultImage: "mqttd:measure",
	}).SetupWithManager(mgr); err != nil {
		return result{}, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = mgr.Start(ctx) }()

	var nsNames []string
	for i := range namespaces {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("measure-%d", i)}}
		if err := c.Create(ctx, ns); err != nil {
			return result{}, err
		}
		nsNames = append(nsNames, ns.Name)
	}
	mc := &v1alpha1.MQTTCluster{ObjectMeta: metav1.ObjectMeta{Namespace: nsNames[0], Name: "mqtt"}}
	mc.Spec.CookieSecretRef = &v1alpha1.SecretKeySelector{Name: "user-cookie", Key: "cookie"}
	if err := c.Create(ctx, mc); err != nil {
		return result{}, err
	}
	// Settled: the cluster waits for its Secret, reported.
	if err := waitForDegraded(ctx, c, mc, "SecretNotFound"); err != nil {
		return result{}, err
	}
	var r result
	r.before = heapInUse()

	data := map[string][]byte{"data": make([]byte, size)}
	if err := parallel(16, secrets, func(i int) error {
		return c.Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: nsNames[i%namespaces], Name: fmt.Sprintf("unrelated-%d", i)},
			Data:       data,
		})
	}); err != nil {
		return result{}, fmt.Errorf("creating the Secrets: %w", err)
	}
	// Each cache has seen every unrelated Secret once it has seen the Secrets created
	// after them (one watch per kind, in the API server's order): the user's cookie
	// Secret through the names-only watch (the cluster's condition clears) and a
	// labeled Secret through the manager's cache.
	if err := c.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: nsNames[0], Name: "user-cookie"},
		Data: map[string][]byte{"cookie": []byte("a-cookie-of-sixteen-bytes-or-more")}}); err != nil {
		return result{}, err
	}
	marker := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: nsNames[0], Name: "marker", Labels: resource.ChildrenLabels()}}
	if err := c.Create(ctx, marker); err != nil {
		return result{}, err
	}
	if err := waitForDegraded(ctx, c, mc, "AsExpected"); err != nil {
		return result{}, err
	}
	if err := poll(ctx, func() (bool, error) {
		err := mgr.GetCache().Get(ctx, client.ObjectKeyFromObject(marker), &corev1.Secret{})
		return err == nil, client.IgnoreNotFound(err)
	}); err != nil {
		return result{}, fmt.Errorf("waiting for the marker Secret in the cache: %w", err)
	}
	r.after = heapInUse()
	var cached corev1.SecretList
	if err := mgr.GetCache().List(ctx, &cached); err != nil {
		return result{}, err
	}
	r.cachedSecrets = len(cached.Items)
	return r, nil
}

// waitForDegraded waits until the cluster's Degraded condition has reason.
func waitForDegraded(ctx context.Context, c client.Client, mc *v1alpha1.MQTTCluster, reason string) error {
	err := poll(ctx, func() (bool, error) {
		cur := &v1alpha1.MQTTCluster{}
		if err := c.Get(ctx, client.ObjectKeyFromObject(mc), cur); err != nil {
			return false, err
		}
		cond := meta.FindStatusCondition(cur.Status.Conditions, v1alpha1.ConditionDegraded)
		return cond != nil && cond.Reason == reason, nil
	})
	if err != nil {
		return fmt.Errorf("waiting for Degraded %s: %w", reason, err)
	}
	return nil
}

// poll calls done every 100 ms until it returns true, for at most two minutes.
func poll(ctx context.Context, done func() (bool, error)) error {
	return wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 2*time.Minute, true,
		func(context.Context) (bool, error) { return done() })
}

// parallel runs do(0..n-1) on workers goroutines and returns the first error.
func parallel(workers, n int, do func(i int) error) error {
	next := make(chan int)
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := range next {
				if err := do(i); err != nil && !apierrors.IsAlreadyExists(err) {
					errs <- err
					return
				}
			}
		})
	}
	var err error
feed:
	for i := range n {
		select {
		case next <- i:
		case err = <-errs:
			break feed
		}
	}
	close(next)
	wg.Wait()
	if err == nil && len(errs) > 0 {
		err = <-errs
	}
	return err
}

// heapInUse is the heap's live size after garbage collection.
func heapInUse() uint64 {
	runtime.GC()
	debug.FreeOSMemory() // a second, full collection, scavenging too
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }

// repoRoot is the repository's root (where go.mod is), from the working directory up.
func repoRoot() string {
	dir, err := os.Getwd()
	if err != nil {
		fail(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			fail(errors.New("go.mod not found above the working directory"))
		}
		dir = parent
	}
}

// discard drops the manager's logs: the table is the output.
type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

func fail(err error) {
	fmt.Fprintln(os.Stderr, "measure-operator-cache:", strings.TrimSpace(err.Error()))
	os.Exit(1)
}
