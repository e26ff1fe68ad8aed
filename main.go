// Command manager is the mqtt-operator: it runs the MQTTCluster controller.
package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"os"
	"slices"
	"strings"

	// Auth plugins for out-of-cluster use (`make run` against a cloud cluster).
	_ "k8s.io/client-go/plugin/pkg/client/auth"

	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
	"github.com/mqtt-operator/mqtt-operator/controllers"
	"github.com/mqtt-operator/mqtt-operator/controllers/resource"
)

// version is stamped at build time (-ldflags "-X main.version=...").
var version = "dev"

func main() {
	var (
		metricsAddr   string
		probeAddr     string
		leaderElect   bool
		secureMetrics bool
		enableHTTP2   bool
		mqttdImage    string
		operatorNS    string
		operatorPods  string
		watchNS       string
		leaderElectNS string
	)
	flag.StringVar(&metricsAddr, "metrics-bind-address", "0", "address the metrics endpoint binds to: :8443 for HTTPS, :8080 for HTTP, 0 to disable")
	flag.StringVar(&probeAddr, "health-probe-bind-address", ":8081", "address the health probe endpoint binds to")
	flag.BoolVar(&leaderElect, "leader-elect", false, "enable leader election, so that only one manager is active at a time")
	flag.BoolVar(&secureMetrics, "metrics-secure", true, "serve metrics over HTTPS with authentication and authorization (false: plain HTTP)")
	flag.StringVar(&mqttdImage, "mqttd-image", "mqttd:dev", "broker image of MQTTClusters that do not set spec.image")
	flag.StringVar(&operatorNS, "operator-namespace", ownNamespace(), "namespace of the operator's pods, which the brokers' NetworkPolicy admits to their API port (default: $POD_NAMESPACE, else the service account's namespace; empty: unknown, and no operator pod is admitted)")
	flag.StringVar(&operatorPods, "operator-pod-labels", "control-plane=controller-manager,app.kubernetes.io/name=mqtt-operator", "labels of the operator's pods (k=v,...), which the brokers' NetworkPolicy admits to their API port")
	flag.StringVar(&watchNS, "watch-namespaces", "", "comma-separated namespaces whose MQTTClusters the operator manages and whose objects it caches (empty: every namespace; the chart's watchNamespaces)")
	flag.StringVar(&leaderElectNS, "leader-election-namespace", "", "namespace of the leader election Lease (empty: the operator's own namespace, which in a pod is the service account's)")
	flag.BoolVar(&enableHTTP2, "enable-http2", false, "enable HTTP/2 for the metrics server (off: HTTP/2 stream attacks, CVE-2023-44487)")
	opts := zap.Options{}
	opts.BindFlags(flag.CommandLine)
	flag.Parse()
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&opts)))
	log := ctrl.Log.WithName("setup")
	podLabels, err := operatorPodLabels(operatorPods)
	if err != nil {
		log.Error(err, "invalid --operator-pod-labels")
		os.Exit(1)
	}
	if operatorNS == "" {
		log.Info("the operator's namespace is unknown: the brokers' NetworkPolicies admit no operator pod to the API port (set --operator-namespace)")
	}

	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(v1alpha1.AddToScheme(scheme))

	var tlsOpts []func(*tls.Config)
	if !enableHTTP2 {
		tlsOpts = append(tlsOpts, func(c *tls.Config) { c.NextProtos = []string{"http/1.1"} })
	}
	metricsOpts := metricsserver.Options{BindAddress: metricsAddr, SecureServing: secureMetrics, TLSOpts: tlsOpts}
	if secureMetrics {
		metricsOpts.FilterProvider = filters.WithAuthenticationAndAuthorization
	}

	namespaces := splitNamespaces(watchNS)
	if len(namespaces) > 0 {
		log.Info("watching namespaces", "namespaces", namespaces)
	}
	mgr, err := ctrl.NewManager(ctrl.GetConfigOrDie(), ctrl.Options{
		Scheme:                 scheme,
		Cache:                  controllers.CacheOptions(namespaces),
		Metrics:                metricsOpts,
		HealthProbeBindAddress: probeAddr,
		LeaderElection:         leaderElect,
		LeaderElectionID:       "mqtt-operator.broker.mqtt-operator.io",
		// The Lease lives with the operator, not in a watched namespace: the chart
		// grants leases in the release namespace only.
		LeaderElectionNamespace: leaderElectNS,
		// The manager stops its controllers before releasing the lease, so a new
		// leader never overlaps with this one.
		LeaderElectionReleaseOnCancel: true,
	})
	if err != nil {
		log.Error(err, "unable to create manager")
		os.Exit(1)
	}
	if err := (&controllers.MQTTClusterReconciler{
		Client:       mgr.GetClient(),
		Scheme:       mgr.GetScheme(),
		Recorder:     mgr.GetEventRecorder("mqtt-operator"),
		DefaultImage: mqttdImage,
		Operator:     resource.Operator{Namespace: operatorNS, PodLabels: podLabels},
		Namespaces:   namespaces,
	}).SetupWithManager(mgr); err != nil {
		log.Error(err, "unable to create controller", "controller", "MQTTCluster")
		os.Exit(1)
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		log.Error(err, "unable to set up health check")
		os.Exit(1)
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		log.Error(err, "unable to set up ready check")
		os.Exit(1)
	}
	log.Info("starting manager", "version", version)
	if err := mgr.Start(ctrl.SetupSignalHandler()); err != nil {
		log.Error(err, "manager stopped with an error")
		os.Exit(1)
	}
}

// ownNamespace is the namespace the operator runs in: $POD_NAMESPACE (the chart and
// config/manager set it from the pod), else the namespace of the mounted service
// account; empty out of the cluster.
func ownNamespace() string {
	if ns := os.Getenv("POD_NAMESPACE"); ns != "" {
		return ns
	}
	b, err := os.ReadFile("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// operatorPodLabels parses --operator-pod-labels. Empty is refused: a NetworkPolicy
// peer with no labels selects every pod of the namespace.
func operatorPodLabels(flagValue string) (map[string]string, error) {
	m, err := labels.ConvertSelectorToLabelsMap(flagValue)
	if err != nil {
		return nil, err
	}
	if len(m) == 0 {
		return nil, fmt.Errorf("no labels: the brokers' NetworkPolicies would admit every pod of the operator's namespace to their API port")
	}
	return m, nil
}

// splitNamespaces turns --watch-namespaces into a list without blanks or repeats
// (nil: every namespace).
func splitNamespaces(flagValue string) []string {
	var out []string
	for _, ns := range strings.Split(flagValue, ",") {
		if ns = strings.TrimSpace(ns); ns != "" && !slices.Contains(out, ns) {
			out = append(out, ns)
		}
	}
	return out
}
