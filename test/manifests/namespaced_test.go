package manifests_test

import (
	"context"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	kruntime "k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
	"github.com/mqtt-operator/mqtt-operator/controllers"
)

// TestNamespacedInstallRuns runs the operator's controller with the rights of a
// namespaced install and nothing more: the chart's RBAC objects (watchNamespaces set)
// are created for real, and the manager talks to the API server as the chart's
// ServiceAccount. Its cache must sync and its reconciles succeed with Roles alone (a
// list or watch across all namespaces would be refused), and a cluster in a namespace
// it does not watch is left alone.
func TestNamespacedInstallRuns(t *testing.T) {
	const (
		release   = "scoped-run"
		releaseNS = "scoped-run-ops"
		watched   = "scoped-run-watched"
		unwatched = "scoped-run-other"
	)
	helm := filepath.Join(repoRoot, "bin", "helm")
	objs := decode(t, "helm template", runHelm(t, helm, "template", release, filepath.Join(repoRoot, chartDir),
		"--namespace", releaseNS, "--include-crds", "--set", "watchNamespaces={"+watched+"}"))
	ctx := t.Context()
	setup := append(ofKind(objs, "CustomResourceDefinition"), namespace(releaseNS), namespace(watched), namespace(unwatched))
	requireNoErr(t, applyAll(ctx, setup, ""))
	admin, err := client.New(cfg, client.Options{Scheme: testScheme()})
	requireNoErr(t, err)
	var rbac []*unstructured.Unstructured
	for _, kind := range []string{"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"} {
		rbac = append(rbac, ofKind(objs, kind)...)
	}
	for _, o := range rbac {
		requireNoErr(t, admin.Apply(ctx, client.ApplyConfigurationFromUnstructured(o), fieldOwner, client.ForceOwnership))
	}

	// The manager as the chart's ServiceAccount, configured as --watch-namespaces does.
	sa := findOne(t, objs, "ServiceAccount")
	operatorCfg := rest.CopyConfig(cfg)
	operatorCfg.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:" + releaseNS + ":" + sa.GetName()}
	namespaces := []string{watched}
	mgr, err := ctrl.NewManager(operatorCfg, ctrl.Options{
		Scheme:  testScheme(),
		Cache:   controllers.CacheOptions(namespaces),
		Metrics: metricsserver.Options{BindAddress: "0"},
	})
	requireNoErr(t, err)
	requireNoErr(t, (&controllers.MQTTClusterReconciler{
		Client:       mgr.GetClient(),
		Scheme:       mgr.GetScheme(),
		Recorder:     mgr.GetEventRecorder("mqtt-operator"),
		DefaultImage: "mqttd:namespaced",
		Namespaces:   namespaces,
	}).SetupWithManager(mgr))
	mgrCtx, stop := context.WithCancel(ctx)
	stopped := make(chan error, 1)
	go func() { stopped <- mgr.Start(mgrCtx) }()
	t.Cleanup(func() {
		stop()
		if err := <-stopped; err != nil {
			t.Errorf("manager: %v", err)
		}
	})

	// A cluster with the user's own cookie Secret: read and watched with the Role's
	// rights too.
	requireNoErr(t, admin.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: watched, Name: "user-cookie"},
		Data: map[string][]byte{"cookie": []byte("a-cookie-of-sixteen-bytes-or-more")}}))
	clusters := map[string]*v1alpha1.MQTTCluster{}
	for _, ns := range []string{unwatched, watched} {
		mc := &v1alpha1.MQTTCluster{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "mqtt"}}
		mc.Spec.CookieSecretRef = &v1alpha1.SecretKeySelector{Name: "user-cookie", Key: "cookie"}
		requireNoErr(t, admin.Create(ctx, mc))
		clusters[ns] = mc
	}
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		if err := admin.Get(ctx, client.ObjectKey{Namespace: watched, Name: "mqtt"}, &appsv1.StatefulSet{}); err != nil {
			return false, client.IgnoreNotFound(err)
		}
		mc := &v1alpha1.MQTTCluster{}
		if err := admin.Get(ctx, client.ObjectKeyFromObject(clusters[watched]), mc); err != nil {
			return false, err
		}
		c := meta.FindStatusCondition(mc.Status.Conditions, v1alpha1.ConditionDegraded)
		return c != nil && c.Reason == "AsExpected", nil
	})
	if err != nil {
		t.Fatalf("the cluster in the watched namespace %s got no StatefulSet and no Degraded AsExpected within a minute (%v): "+
			"the namespaced install's Roles do not let the operator work", watched, err)
	}

	// The cluster in the other namespace is not in the manager's cache at all.
	var list v1alpha1.MQTTClusterList
	if err := mgr.GetCache().List(ctx, &list); err != nil {
		t.Fatalf("listing the cached MQTTClusters: %v", err)
	}
	var cached []string
	for _, mc := range list.Items {
		cached = append(cached, mc.Namespace+"/"+mc.Name)
	}
	if !slices.Equal(cached, []string{watched + "/mqtt"}) {
		t.Errorf("cached MQTTClusters %v, want only %s/mqtt", cached, watched)
	}
	err = admin.Get(ctx, client.ObjectKey{Namespace: unwatched, Name: "mqtt"}, &appsv1.StatefulSet{})
	if !apierrors.IsNotFound(err) {
		t.Errorf("the cluster in the unwatched namespace %s got a StatefulSet (err %v)", unwatched, err)
	}
}

// requireManagerRBAC checks where the chart puts the manager's rights: one
// ClusterRole, or with watched namespaces a Role and RoleBinding in each of them and
// no ClusterRole (and a --watch-namespaces flag naming them). Either way the rules are
// the generated ones. Nothing else leaves the release namespace.
func requireManagerRBAC(t *testing.T, objs []*unstructured.Unstructured, release, releaseNS string, watched []string, generatedRules []any) {
	t.Helper()
	prefix := release + "-mqtt-operator" // the chart's fullname
	if strings.Contains(release, "mqtt-operator") {
		prefix = release
	}
	roleName := prefix + "-manager-role"
	var roles []*unstructured.Unstructured
	for _, kind := range []string{"ClusterRole", "Role"} {
		for _, o := range ofKind(objs, kind) {
			if o.GetName() == roleName {
				roles = append(roles, o)
			}
		}
	}
	var roleNamespaces []string
	for _, r := range roles {
		// The chart takes its manager rules from the generated role: they must match.
		if got := rulesOf(t, r); !reflect.DeepEqual(got, generatedRules) {
			t.Errorf("chart %s rules differ from config/rbac/role.yaml; run `make manifests`\n got: %v\nwant: %v", describe(r), got, generatedRules)
		}
		if r.GetKind() == "ClusterRole" && len(watched) > 0 {
			t.Errorf("%s: a namespaced install must not grant the manager's rules cluster-wide", describe(r))
		}
		roleNamespaces = append(roleNamespaces, r.GetNamespace())
	}
	want := watched
	if len(watched) == 0 {
		want = []string{""} // the ClusterRole
	}
	if !slices.Equal(roleNamespaces, want) {
		t.Errorf("manager roles in namespaces %q, want %q", roleNamespaces, want)
	}
	for _, b := range ofKind(objs, "RoleBinding") {
		if b.GetName() == prefix+"-manager-rolebinding" && !slices.Contains(watched, b.GetNamespace()) {
			t.Errorf("%s: not in a watched namespace %q", describe(b), watched)
		}
	}
	if n := len(ofKind(objs, "RoleBinding")) - len(ofKind(objs, "Role")); n != 0 {
		t.Errorf("%d more RoleBindings than Roles", n)
	}
	for _, o := range objs {
		ns := o.GetNamespace()
		managerRBAC := (o.GetKind() == "Role" || o.GetKind() == "RoleBinding") && slices.Contains(watched, ns)
		if ns != "" && ns != releaseNS && !managerRBAC {
			t.Errorf("%s: namespace %q, want the release namespace %q", describe(o), ns, releaseNS)
		}
	}
	args := strings.Join(containerArgs(t, findOne(t, objs, "Deployment"), "manager"), " ")
	if flag := "--watch-namespaces=" + strings.Join(watched, ","); len(watched) > 0 && !strings.Contains(args, flag) {
		t.Errorf("manager args %q, want %s", args, flag)
	} else if len(watched) == 0 && strings.Contains(args, "--watch-namespaces") {
		t.Errorf("manager args %q: a cluster-wide install watches every namespace", args)
	}
}

// TestHelmChartRefusesUnwatchedCluster: an MQTTCluster the chart creates in a
// namespace the operator does not watch would never be reconciled.
func TestHelmChartRefusesUnwatchedCluster(t *testing.T) {
	helm := filepath.Join(repoRoot, "bin", "helm")
	cmd := exec.CommandContext(t.Context(), helm, "template", "r", filepath.Join(repoRoot, chartDir),
		"--namespace", "ops", "--set", "cluster.enabled=true", "--set", "watchNamespaces={team-a}")
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), `release namespace "ops"`) {
		t.Errorf("helm template with the release namespace left out of watchNamespaces: err %v, output:\n%s", err, out)
	}
}

// containerArgs returns the args of a container of a Deployment.
func containerArgs(t *testing.T, deploy *unstructured.Unstructured, container string) []string {
	t.Helper()
	containers, _, err := unstructured.NestedSlice(deploy.Object, "spec", "template", "spec", "containers")
	requireNoErr(t, err)
	for _, c := range containers {
		m, _ := c.(map[string]any)
		if m["name"] == container {
			args, _, err := unstructured.NestedStringSlice(m, "args")
			requireNoErr(t, err)
			return args
		}
	}
	t.Fatalf("%s has no container %q", describe(deploy), container)
	return nil
}

// testScheme knows the built-in kinds and MQTTCluster.
func testScheme() *kruntime.Scheme {
	s := kruntime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(v1alpha1.AddToScheme(s))
	return s
}
