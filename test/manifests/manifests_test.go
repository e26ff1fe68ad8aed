// Package manifests_test applies the operator's install manifests to a real
// kube-apiserver and etcd (envtest) and fails on any object the API server rejects:
// dist/install.yaml (make build-installer), the Helm chart as `helm template` renders
// it, and every file of config/samples. CRDs are created for real, as are the
// Namespaces the other objects live in; everything else goes through a server-side
// apply dry run, which runs defaulting, OpenAPI and CEL validation and admission
// without storing anything. So no test depends on another's objects.
//
// Run it with `make test`, or:
//
//	export KUBEBUILDER_ASSETS=$(hack/envtest-binaries.sh)
//	go test -race -count=1 ./test/manifests/
package manifests_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

const (
	// fieldOwner is the server-side apply field manager of every request.
	fieldOwner = client.FieldOwner("manifests-test")
	// crdTimeout bounds the wait for a new CRD to be served.
	crdTimeout = 30 * time.Second
	// chartDir is the Helm chart, relative to the repository root.
	chartDir = "charts/mqtt-operator"
)

var (
	// cfg reaches the envtest API server as an administrator.
	cfg *rest.Config
	// repoRoot is the repository's root directory (where go.mod is).
	repoRoot string
)

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

// runTests starts the API server, runs the tests and stops it; it returns the exit code.
func runTests(m *testing.M) int {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		fmt.Fprintln(os.Stderr, "FAIL: KUBEBUILDER_ASSETS must name the directory with kube-apiserver and etcd: "+
			"run the tests with `make test`, or export KUBEBUILDER_ASSETS=$(hack/envtest-binaries.sh)")
		return 1
	}
	var err error
	if repoRoot, err = findRepoRoot(); err != nil {
		fmt.Fprintln(os.Stderr, "FAIL:", err)
		return 1
	}
	env := &envtest.Environment{}
	if cfg, err = env.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "FAIL: starting envtest:", err)
		return 1
	}
	code := m.Run()
	if err := env.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "stopping envtest:", err)
	}
	return code
}

// TestInstallYAML applies dist/install.yaml, the kustomize-rendered installer.
func TestInstallYAML(t *testing.T) {
	objs := decodeFile(t, filepath.Join(repoRoot, "dist", "install.yaml"))
	requireKinds(t, objs, "CustomResourceDefinition", "Namespace", "ServiceAccount", "ClusterRole",
		"ClusterRoleBinding", "Role", "RoleBinding", "Service", "Deployment")
	deploy := findOne(t, objs, "Deployment")
	image := containerImage(t, deploy, "manager")
	if image == "" || strings.HasPrefix(image, "controller:") {
		t.Errorf("manager image %q: the kustomize placeholder was not replaced; run `make build-installer`", image)
	}
	requireNoErr(t, applyAll(t.Context(), objs, ""))
}

// TestHelmChart renders the chart with several sets of values and applies the result.
func TestHelmChart(t *testing.T) {
	helm := filepath.Join(repoRoot, "bin", "helm")
	if _, err := os.Stat(helm); err != nil {
		t.Fatalf("%s is missing: run `make helm` (make test does it)", helm)
	}
	generatedRules := rulesOf(t, findOne(t, decodeFile(t, filepath.Join(repoRoot, "config", "rbac", "role.yaml")), "ClusterRole"))

	cases := []struct {
		name        string
		release     string
		namespace   string
		set         []string
		wantCluster bool
		anonymous   bool // spec.auth.allowAnonymous of the cluster
		// watched are the namespaces of a namespaced install (watchNamespaces);
		// none: every namespace, with a ClusterRole.
		watched []string
	}{
		{name: "defaults", release: "mqtt-operator", namespace: "chart-defaults"},
		{
			name: "with an MQTTCluster", release: "mqtt", namespace: "chart-cluster",
			set: []string{"cluster.enabled=true"}, wantCluster: true,
		},
		{
			name: "with a customized MQTTCluster", release: "brokers", namespace: "chart-cluster-spec",
			set: []string{
				"cluster.enabled=true", "cluster.name=iot",
				"cluster.spec.replicas=5", "cluster.spec.auth.allowAnonymous=true",
			},
			wantCluster: true, anonymous: true,
		},
		{
			name: "optional objects off", release: "minimal", namespace: "chart-minimal",
			set: []string{
				"metrics.enabled=false", "leaderElection.enabled=false",
				"rbac.aggregateToDefaultRoles=false", "serviceAccount.name=operator",
			},
		},
		{
			name: "namespaced", release: "scoped", namespace: "chart-scoped",
			set:     []string{"watchNamespaces={chart-scoped-a,chart-scoped-b}"},
			watched: []string{"chart-scoped-a", "chart-scoped-b"},
		},
		{
			name: "namespaced with an MQTTCluster", release: "scoped-cluster", namespace: "chart-scoped-cluster",
			set:         []string{"watchNamespaces={chart-scoped-cluster,chart-scoped-other}", "cluster.enabled=true"},
			watched:     []string{"chart-scoped-cluster", "chart-scoped-other"},
			wantCluster: true,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			args := []string{"template", tc.release, filepath.Join(repoRoot, chartDir),
				"--namespace", tc.namespace, "--include-crds"}
			for _, s := range tc.set {
				args = append(args, "--set", s)
			}
			objs := decode(t, "helm "+strings.Join(args, " "), runHelm(t, helm, args...))
			requireKinds(t, objs, "CustomResourceDefinition", "ServiceAccount", "ClusterRole",
				"ClusterRoleBinding", "Deployment")
			requireManagerRBAC(t, objs, tc.release, tc.namespace, tc.watched, generatedRules)

			ctx := t.Context()
			for _, ns := range append([]string{tc.namespace}, tc.watched...) {
				requireNoErr(t, applyAll(ctx, []*unstructured.Unstructured{namespace(ns)}, ""))
			}
			requireNoErr(t, applyAll(ctx, objs, ""))

			clusters := ofKind(objs, "MQTTCluster")
			if !tc.wantCluster {
				if len(clusters) != 0 {
					t.Errorf("rendered %d MQTTClusters, want none", len(clusters))
				}
				return
			}
			if len(clusters) != 1 {
				t.Fatalf("rendered %d MQTTClusters, want 1", len(clusters))
			}
			// applyAll left the API server's answer in the object: defaults are filled in.
			mc := clusters[0]
			if replicas, _, _ := unstructured.NestedInt64(mc.Object, "spec", "replicas"); replicas < 1 {
				t.Errorf("MQTTCluster %s: spec.replicas %d after defaulting", mc.GetName(), replicas)
			}
			if image, _, _ := unstructured.NestedString(mc.Object, "spec", "image"); !strings.HasPrefix(image, "mqttd:") {
				t.Errorf("MQTTCluster %s: spec.image %q, want the chart's mqttd image", mc.GetName(), image)
			}
			requireAnonymous(t, mc, tc.anonymous)
		})
	}
}

// TestSamples applies every file of config/samples.
func TestSamples(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(repoRoot, "config", "samples", "*.yaml"))
	requireNoErr(t, err)
	files = slices.DeleteFunc(files, func(f string) bool { return filepath.Base(f) == "kustomization.yaml" })
	if len(files) < 3 {
		t.Fatalf("found %d samples in config/samples, want at least 3 (plain, TLS, users and ACL)", len(files))
	}
	ctx := t.Context()
	const ns = "samples"
	requireNoErr(t, applyAll(ctx, append(decodeDir(t, filepath.Join(repoRoot, "config", "crd", "bases")), namespace(ns)), ""))
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			objs := decodeFile(t, file)
			requireKinds(t, objs, "MQTTCluster")
			requireNoErr(t, applyAll(ctx, objs, ns))
			// The 3-node sample the demo uses refuses anonymous clients (issue 11).
			for _, mc := range ofKind(objs, "MQTTCluster") {
				if mc.GetName() == "mqttcluster-sample" {
					requireAnonymous(t, mc, false)
				}
			}
		})
	}
}

// requireAnonymous checks spec.auth.allowAnonymous of an MQTTCluster as the API server
// returned it (defaults filled in).
func requireAnonymous(t *testing.T, mc *unstructured.Unstructured, want bool) {
	t.Helper()
	got, found, err := unstructured.NestedBool(mc.Object, "spec", "auth", "allowAnonymous")
	if err != nil || !found || got != want {
		t.Errorf("MQTTCluster %s: spec.auth.allowAnonymous %v (set: %v, %v), want %v", mc.GetName(), got, found, err, want)
	}
}

// TestApplyRejectsInvalid shows that applyAll would catch a bad manifest: an unknown
// field and a CEL rule violation are both refused.
func TestApplyRejectsInvalid(t *testing.T) {
	ctx := t.Context()
	const ns = "invalid"
	requireNoErr(t, applyAll(ctx, append(decodeDir(t, filepath.Join(repoRoot, "config", "crd", "bases")), namespace(ns)), ""))
	cases := map[string]string{
		"unknown field": `
apiVersion: broker.mqtt-operator.io/v1alpha1
kind: MQTTCluster
metadata: {name: typo}
spec: {replica: 3}
`,
		"CEL rule": `
apiVersion: broker.mqtt-operator.io/v1alpha1
kind: MQTTCluster
metadata: {name: tls-without-secret}
spec:
  listeners: [{name: mqtts, port: 8883}]
`,
		"unknown field in a built-in kind": `
apiVersion: v1
kind: ConfigMap
metadata: {name: typo}
dataa: {a: b}
`,
	}
	for name, doc := range cases {
		t.Run(name, func(t *testing.T) {
			if err := applyAll(ctx, decode(t, name, []byte(doc)), ns); err == nil {
				t.Errorf("applying an invalid manifest (%s) succeeded", name)
			} else {
				t.Logf("rejected as expected: %v", err)
			}
		})
	}
}

// applyAll sends objs to the API server: CRDs first, for real, waiting until they are
// served; then Namespaces, for real; then everything else as a server-side apply dry
// run. Objects without a namespace get defaultNamespace when their kind is namespaced.
// It returns every rejection, not just the first.
func applyAll(ctx context.Context, objs []*unstructured.Unstructured, defaultNamespace string) error {
	var crds, namespaces, rest []*unstructured.Unstructured
	for _, o := range objs {
		switch o.GroupVersionKind().GroupKind() {
		case schema.GroupKind{Group: "apiextensions.k8s.io", Kind: "CustomResourceDefinition"}:
			crds = append(crds, o)
		case schema.GroupKind{Kind: "Namespace"}:
			namespaces = append(namespaces, o)
		default:
			rest = append(rest, o)
		}
	}
	c, err := client.New(cfg, client.Options{})
	if err != nil {
		return err
	}
	var errs []error
	for _, o := range slices.Concat(crds, namespaces) {
		if err := c.Apply(ctx, client.ApplyConfigurationFromUnstructured(o), fieldOwner, client.ForceOwnership); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", describe(o), err))
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	if len(crds) > 0 {
		if err := waitForCRDs(ctx, crds); err != nil {
			return err
		}
		// A new client, so that its REST mapper learns the new kinds.
		if c, err = client.New(cfg, client.Options{}); err != nil {
			return err
		}
	}
	for _, o := range rest {
		if o.GetNamespace() == "" && defaultNamespace != "" {
			namespaced, err := c.IsObjectNamespaced(o)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", describe(o), err))
				continue
			}
			if namespaced {
				o.SetNamespace(defaultNamespace)
			}
		}
		if err := c.Apply(ctx, client.ApplyConfigurationFromUnstructured(o), fieldOwner, client.ForceOwnership, client.DryRunAll); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", describe(o), err))
		}
	}
	return errors.Join(errs...)
}

// waitForCRDs waits until the API server serves every kind that crds define.
func waitForCRDs(ctx context.Context, crds []*unstructured.Unstructured) error {
	var kinds []schema.GroupVersionKind
	for _, crd := range crds {
		group, _, _ := unstructured.NestedString(crd.Object, "spec", "group")
		kind, _, _ := unstructured.NestedString(crd.Object, "spec", "names", "kind")
		versions, _, _ := unstructured.NestedSlice(crd.Object, "spec", "versions")
		for _, v := range versions {
			version, _ := v.(map[string]any)
			if served, _ := version["served"].(bool); served {
				name, _ := version["name"].(string)
				kinds = append(kinds, schema.GroupVersionKind{Group: group, Version: name, Kind: kind})
			}
		}
	}
	httpClient, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return err
	}
	var lastErr error
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, crdTimeout, true, func(context.Context) (bool, error) {
		// A fresh mapper each time: a mapper caches what it has discovered.
		mapper, err := apiutil.NewDynamicRESTMapper(cfg, httpClient)
		if err != nil {
			return false, err
		}
		for _, gvk := range kinds {
			if _, lastErr = mapper.RESTMapping(gvk.GroupKind(), gvk.Version); lastErr != nil {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("CRDs not served within %s: %w", crdTimeout, errors.Join(err, lastErr))
	}
	return nil
}

// runHelm runs helm with args at the repository root and returns its standard output.
func runHelm(t *testing.T, helm string, args ...string) []byte {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), helm, args...)
	cmd.Dir = repoRoot
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return out
}

// decodeFile reads the objects of a multi-document YAML file.
func decodeFile(t *testing.T, path string) []*unstructured.Unstructured {
	t.Helper()
	data, err := os.ReadFile(path)
	requireNoErr(t, err)
	return decode(t, path, data)
}

// decodeDir reads the objects of every .yaml file in dir.
func decodeDir(t *testing.T, dir string) []*unstructured.Unstructured {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	requireNoErr(t, err)
	if len(files) == 0 {
		t.Fatalf("no .yaml files in %s", dir)
	}
	var objs []*unstructured.Unstructured
	for _, f := range files {
		objs = append(objs, decodeFile(t, f)...)
	}
	return objs
}

// decode splits multi-document YAML into objects, skipping empty documents. source
// names the input in failure messages.
func decode(t *testing.T, source string, data []byte) []*unstructured.Unstructured {
	t.Helper()
	reader := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var objs []*unstructured.Unstructured
	for i := 0; ; i++ {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: document %d: %v", source, i, err)
		}
		js, err := utilyaml.ToJSON(doc)
		if err != nil {
			t.Fatalf("%s: document %d: %v", source, i, err)
		}
		if js = bytes.TrimSpace(js); len(js) == 0 || string(js) == "null" {
			continue // only comments, or nothing
		}
		obj := &unstructured.Unstructured{}
		if err := obj.UnmarshalJSON(js); err != nil {
			t.Fatalf("%s: document %d: %v", source, i, err)
		}
		objs = append(objs, obj)
	}
	if len(objs) == 0 {
		t.Fatalf("%s: no objects", source)
	}
	return objs
}

// namespace returns a Namespace object.
func namespace(name string) *unstructured.Unstructured {
	ns := &unstructured.Unstructured{}
	ns.SetAPIVersion("v1")
	ns.SetKind("Namespace")
	ns.SetName(name)
	return ns
}

// ofKind returns the objects of one kind.
func ofKind(objs []*unstructured.Unstructured, kind string) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, o := range objs {
		if o.GetKind() == kind {
			out = append(out, o)
		}
	}
	return out
}

// findOne returns the only object of kind, failing the test unless there is one.
func findOne(t *testing.T, objs []*unstructured.Unstructured, kind string) *unstructured.Unstructured {
	t.Helper()
	found := ofKind(objs, kind)
	if len(found) != 1 {
		t.Fatalf("found %d objects of kind %s, want 1", len(found), kind)
	}
	return found[0]
}

// requireKinds fails the test unless objs hold at least one object of each kind.
func requireKinds(t *testing.T, objs []*unstructured.Unstructured, kinds ...string) {
	t.Helper()
	for _, k := range kinds {
		if len(ofKind(objs, k)) == 0 {
			t.Errorf("no %s among the objects", k)
		}
	}
}

// rulesOf returns the rules of a Role or ClusterRole.
func rulesOf(t *testing.T, role *unstructured.Unstructured) []any {
	t.Helper()
	rules, found, err := unstructured.NestedSlice(role.Object, "rules")
	if err != nil || !found || len(rules) == 0 {
		t.Fatalf("%s has no rules (err %v)", describe(role), err)
	}
	return rules
}

// containerImage returns the image of the named container of a Deployment.
func containerImage(t *testing.T, deploy *unstructured.Unstructured, container string) string {
	t.Helper()
	containers, _, err := unstructured.NestedSlice(deploy.Object, "spec", "template", "spec", "containers")
	requireNoErr(t, err)
	for _, c := range containers {
		m, _ := c.(map[string]any)
		if m["name"] == container {
			image, _ := m["image"].(string)
			return image
		}
	}
	t.Fatalf("%s has no container %q", describe(deploy), container)
	return ""
}

// describe names an object in messages: Kind namespace/name.
func describe(o *unstructured.Unstructured) string {
	if o.GetNamespace() == "" {
		return o.GetKind() + " " + o.GetName()
	}
	return o.GetKind() + " " + o.GetNamespace() + "/" + o.GetName()
}

// requireNoErr fails the test at once on an error.
func requireNoErr(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// findRepoRoot walks up from the working directory to the directory with go.mod.
func findRepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory: cannot find the repository root")
		}
		dir = parent
	}
}
