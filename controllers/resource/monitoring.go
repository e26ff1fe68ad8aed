package resource

import (
	"bytes"
	_ "embed" // the alert rules
	"fmt"
	"strconv"
	"text/template"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
)

// The Prometheus Operator's kinds. It is optional: the operator writes them as
// unstructured objects only for spec.monitoring, so it neither imports its API nor
// needs its CRDs installed otherwise.
var (
	PodMonitorGVK     = schema.GroupVersionKind{Group: "monitoring.coreos.com", Version: "v1", Kind: "PodMonitor"}
	PrometheusRuleGVK = schema.GroupVersionKind{Group: "monitoring.coreos.com", Version: "v1", Kind: "PrometheusRule"}
)

// MonitoringName is the PodMonitor's and the PrometheusRule's name.
func MonitoringName(mc *v1alpha1.MQTTCluster) string { return mc.Name + "-mqttd" }

// ClusterLabel is the label the PodMonitor gives every series: the MQTTCluster's name
// (with the namespace, it selects one cluster's series in the alerts and the Grafana
// dashboard).
const ClusterLabel = "mqttcluster"

//go:embed monitoring/rules.yaml
var rulesTemplate string

var rulesTmpl = template.Must(template.New("rules").Parse(rulesTemplate))

// RenderRules renders the alert rules of mc (the PrometheusRule's spec).
func RenderRules(mc *v1alpha1.MQTTCluster) (map[string]any, error) {
	var buf bytes.Buffer
	sel := fmt.Sprintf(`namespace=%q,%s=%q`, mc.Namespace, ClusterLabel, mc.Name)
	if err := rulesTmpl.Execute(&buf, map[string]string{"Namespace": mc.Namespace, "Name": mc.Name, "Selector": sel}); err != nil {
		return nil, err
	}
	var spec map[string]any
	if err := yaml.Unmarshal(buf.Bytes(), &spec); err != nil {
		return nil, fmt.Errorf("the alert rules do not parse: %w", err)
	}
	return spec, nil
}

func monitoringObject(mc *v1alpha1.MQTTCluster, gvk schema.GroupVersionKind) *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(gvk)
	u.SetName(MonitoringName(mc))
	u.SetNamespace(mc.Namespace)
	return u
}

// monitoringLabels are spec.monitoring.labels under the operator's own, and nothing
// else: a label removed from the spec goes (a Prometheus that selected by it stops
// selecting the objects).
func monitoringLabels(u *unstructured.Unstructured, mc *v1alpha1.MQTTCluster) {
	u.SetLabels(mergeLabels(mc.Spec.Monitoring.Labels, Labels(mc)))
}

// PodMonitorBuilder builds the PodMonitor that scrapes the brokers' /metrics on the
// API port: over HTTPS when the pods serve their API with the cluster certificate.
// The pods' certificates name each pod, which one scrape configuration cannot
// verify, so the scrape is encrypted without verifying the pod's name; the metrics
// carry no secret and need no token.
type PodMonitorBuilder struct {
	Cluster *v1alpha1.MQTTCluster
	// HTTPS: the pods serve their API over TLS.
	HTTPS bool
}

// Object implements Builder.
func (b *PodMonitorBuilder) Object() client.Object { return monitoringObject(b.Cluster, PodMonitorGVK) }

// Mutate implements Builder.
func (b *PodMonitorBuilder) Mutate(obj client.Object) error {
	u, err := as[*unstructured.Unstructured](obj, "PodMonitorBuilder")
	if err != nil {
		return err
	}
	mc := b.Cluster
	monitoringLabels(u, mc)
	interval := mc.Spec.Monitoring.Interval
	if interval == "" {
		interval = "30s"
	}
	endpoint := map[string]any{
		"port":     "api",
		"path":     "/metrics",
		"interval": interval,
		"relabelings": []any{
			// action spelled out: the CRD's default, which would otherwise differ from
			// what the operator writes on every reconcile (an update each time).
			map[string]any{"action": "replace", "sourceLabels": []any{"__meta_kubernetes_pod_label_" + sanitize(LabelInstance)}, "targetLabel": ClusterLabel},
			map[string]any{"action": "replace", "sourceLabels": []any{"__meta_kubernetes_pod_name"}, "targetLabel": "pod"},
		},
	}
	if b.HTTPS {
		endpoint["scheme"] = "https"
		endpoint["tlsConfig"] = map[string]any{"insecureSkipVerify": true}
	}
	sel := map[string]any{}
	for k, v := range SelectorLabels(mc) {
		sel[k] = v
	}
	spec := map[string]any{
		"selector":            map[string]any{"matchLabels": sel},
		"namespaceSelector":   map[string]any{"matchNames": []any{mc.Namespace}},
		"podMetricsEndpoints": []any{endpoint},
	}
	return unstructured.SetNestedMap(u.Object, spec, "spec")
}

// sanitize turns a label name into its Prometheus service-discovery form.
func sanitize(label string) string {
	out := []byte(label)
	for i, c := range out {
		if (c < 'a' || c > 'z') && (c < 'A' || c > 'Z') && (c < '0' || c > '9') {
			out[i] = '_'
		}
	}
	return string(out)
}

// PrometheusRuleBuilder builds the PrometheusRule with the cluster's alerts.
type PrometheusRuleBuilder struct {
	Cluster *v1alpha1.MQTTCluster
}

// Object implements Builder.
func (b *PrometheusRuleBuilder) Object() client.Object {
	return monitoringObject(b.Cluster, PrometheusRuleGVK)
}

// Mutate implements Builder.
func (b *PrometheusRuleBuilder) Mutate(obj client.Object) error {
	u, err := as[*unstructured.Unstructured](obj, "PrometheusRuleBuilder")
	if err != nil {
		return err
	}
	monitoringLabels(u, b.Cluster)
	spec, err := RenderRules(b.Cluster)
	if err != nil {
		return err
	}
	// unstructured holds JSON types only: round numbers come back as int64.
	m, ok := normalize(spec).(map[string]any)
	if !ok {
		return fmt.Errorf("the alert rules are not a YAML mapping")
	}
	return unstructured.SetNestedMap(u.Object, m, "spec")
}

// normalize converts what sigs.k8s.io/yaml decodes (float64 numbers) into the types
// unstructured objects may hold.
func normalize(v any) any {
	switch t := v.(type) {
	case map[string]any:
		for k, x := range t {
			t[k] = normalize(x)
		}
		return t
	case []any:
		for i, x := range t {
			t[i] = normalize(x)
		}
		return t
	case float64:
		if t == float64(int64(t)) {
			return int64(t)
		}
		return strconv.FormatFloat(t, 'f', -1, 64)
	}
	return v
}
