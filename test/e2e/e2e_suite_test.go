//go:build e2e

// Package e2e tests the product the way users run it: a real Kubernetes cluster with
// real pods, the operator installed with Helm, MQTTCluster resources applied with
// kubectl, real MQTT clients talking to the brokers. It needs only a kubeconfig; the
// cluster and the images come from `make test-e2e` (see docs/local-cluster.md).
package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

// Settings from the environment (all have defaults that match `make test-e2e`).
var (
	kubectlBin    = env("E2E_KUBECTL", "kubectl")
	helmBin       = env("E2E_HELM", filepath.Join(repoRoot(), "bin", "helm"))
	operatorImage = env("E2E_OPERATOR_IMAGE", "mqtt-operator:dev")
	mqttdImage    = env("E2E_MQTTD_IMAGE", "mqttd:dev")
	// prevMQTTDImage is the previous release's broker (hack/e2e.sh builds it), for the upgrade spec.
	prevMQTTDImage = env("E2E_MQTTD_PREV_IMAGE", "")
	// prevMQTTDVersion is the version that image reports ("mqttd started").
	prevMQTTDVersion = env("E2E_MQTTD_PREV_VERSION", "")
	// operatorNamespace is where the chart is installed.
	operatorNamespace = env("E2E_OPERATOR_NAMESPACE", "mqtt-operator-system")
)

func env(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// repoRoot is two levels up from this package.
func repoRoot() string {
	wd, err := os.Getwd()
	if err != nil {
		panic(err)
	}
	return filepath.Join(wd, "..", "..")
}

func TestE2E(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "e2e")
}

var _ = BeforeSuite(func() {
	Expect(os.Getenv("KUBECONFIG")).NotTo(BeEmpty(), "KUBECONFIG must point at the test cluster (make test-e2e sets it)")
	for _, bin := range []string{kubectlBin, helmBin} {
		_, err := exec.LookPath(bin)
		Expect(err).NotTo(HaveOccurred(), "%s not found", bin)
	}
	SetDefaultEventuallyTimeout(3 * time.Minute)
	SetDefaultEventuallyPollingInterval(time.Second)

	By("installing the operator with Helm")
	run(helmBin, "upgrade", "--install", "mqtt-operator", filepath.Join(repoRoot(), "charts", "mqtt-operator"),
		"--namespace", operatorNamespace, "--create-namespace", "--wait", "--timeout", "3m",
		"--set", "image.repository="+imageRepo(operatorImage), "--set", "image.tag="+imageTag(operatorImage),
		"--set", "image.pullPolicy=IfNotPresent")
})

var _ = AfterSuite(func() {
	if os.Getenv("E2E_KEEP") != "" {
		return
	}
	By("uninstalling the operator")
	_, _ = tryRun(helmBin, "uninstall", "mqtt-operator", "--namespace", operatorNamespace, "--wait")
})

// Collect what happened in the cluster when a spec fails.
var _ = ReportAfterEach(func(report SpecReport) {
	if !report.Failed() {
		return
	}
	dumps := [][]string{
		{"get", "mqc,sts,pods,svc,pvc", "-A", "-o", "wide"},
		{"get", "events", "-A", "--sort-by=.lastTimestamp"},
		{"logs", "-n", operatorNamespace, "-l", "app.kubernetes.io/name=mqtt-operator", "--tail=400"},
	}
	// kubectl logs has no -A: the brokers' logs namespace by namespace.
	pods, _ := tryRun(kubectlBin, "get", "pods", "-A", "-l", "app.kubernetes.io/name=mqttd",
		"-o", `jsonpath={range .items[*]}{.metadata.namespace}{"\n"}{end}`)
	seen := map[string]bool{}
	for _, ns := range strings.Fields(pods) {
		if !seen[ns] {
			seen[ns] = true
			dumps = append(dumps, []string{"logs", "-n", ns, "-l", "app.kubernetes.io/name=mqttd", "--tail=100", "--prefix"})
		}
	}
	for _, args := range dumps {
		out, _ := tryRun(kubectlBin, args...)
		AddReportEntry("kubectl "+strings.Join(args, " "), out)
	}
})
