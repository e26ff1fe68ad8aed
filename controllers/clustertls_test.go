package controllers

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
	"github.com/mqtt-operator/mqtt-operator/controllers/brokerclient"
	"github.com/mqtt-operator/mqtt-operator/controllers/resource"
)

// TestDecideClusterTLS: what the spec asks is taken only while no pod may run; a
// running cluster keeps what its pods run (one from before cluster TLS runs none), an
// explicit wish for the other mode is refused, never rolled into a split cluster, and
// an unset mode refuses nothing (an operator upgrade leaves running clusters Ready).
func TestDecideClusterTLS(t *testing.T) {
	const (
		unset    = v1alpha1.ClusterTLSMode("")
		enabled  = v1alpha1.ClusterTLSEnabled
		disabled = v1alpha1.ClusterTLSDisabled
	)
	for _, tc := range []struct {
		name          string
		want          v1alpha1.ClusterTLSMode
		running, have bool
		on, refuse    bool
	}{
		{"new cluster, unset: TLS", unset, false, false, true, false},
		{"new cluster, enabled", enabled, false, false, true, false},
		{"new cluster, disabled for debugging", disabled, false, false, false, false},
		{"running with TLS, unset", unset, true, true, true, false},
		{"running with TLS, enabled", enabled, true, true, true, false},
		{"running without, disabled", disabled, true, false, false, false},
		{"made before cluster TLS, unset: kept off, nothing refused", unset, true, false, false, false},
		{"made before cluster TLS, enabled: kept off, refused", enabled, true, false, false, true},
		{"running with TLS, disabled: kept on, refused", disabled, true, true, true, true},
		{"scaled to zero, enabled: taken", enabled, false, false, true, false},
		{"scaled to zero, disabled: taken", disabled, false, true, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := decideClusterTLS(tc.want, tc.running, tc.have)
			if d.on != tc.on || d.refused != tc.refuse {
				t.Fatalf("on %v refused %v, want on %v refused %v", d.on, d.refused, tc.on, tc.refuse)
			}
		})
	}
}

// TestAPIScheme: a pod whose mqttd is given MQTTD_API_TLS_CERT_FILE serves its API
// over HTTPS, so the operator calls it with https://; the cluster TLS volume alone
// (a pod of an earlier template) does not make it so.
func TestAPIScheme(t *testing.T) {
	pod := &corev1.Pod{Status: corev1.PodStatus{PodIP: "10.0.0.7"}}
	pod.Spec.Containers = []corev1.Container{{Name: resource.ContainerName}}
	pod.Spec.Volumes = []corev1.Volume{{Name: resource.ClusterTLSVolume}}
	if got := (InClusterAddresses{}).API(nil, pod); got != "http://10.0.0.7:8080" {
		t.Fatalf("without the API TLS variable: %q", got)
	}
	pod.Spec.Containers[0].Env = []corev1.EnvVar{{Name: "MQTTD_API_TLS_CERT_FILE", Value: resource.ClusterTLSDir + "/$(POD_NAME).crt"}}
	if got := (InClusterAddresses{}).API(nil, pod); got != "https://10.0.0.7:8080" {
		t.Fatalf("with it: %q", got)
	}
	if got := (InClusterAddresses{}).API(nil, &corev1.Pod{}); got != "" {
		t.Fatalf("without an IP: %q", got)
	}
}

// TestCertRejectedIsAlive: a broker whose API certificate the operator does not trust
// (here: not from the CA it trusts) is marked certRejected, not merely unreachable, so
// a scale-down never force-leaves it; no request reaches it.
func TestCertRejectedIsAlive(t *testing.T) {
	var requests atomic.Int32
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { requests.Add(1) }))
	defer srv.Close()
	b := &brokerPod{name: "mq-0", api: &brokerclient.Client{BaseURL: srv.URL, Token: "t", HTTP: &http.Client{
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: x509.NewCertPool(), ServerName: "mq-0"}}}}}
	b.ask(context.Background())
	if !b.certRejected || b.reachable() || b.tokenRejected || requests.Load() != 0 {
		t.Fatalf("certRejected %v reachable %v tokenRejected %v requests %d (%v)", b.certRejected, b.reachable(), b.tokenRejected, requests.Load(), b.err)
	}
	dead := &brokerPod{name: "mq-1", api: &brokerclient.Client{BaseURL: "https://127.0.0.1:1", Token: "t"}}
	dead.ask(context.Background())
	if dead.certRejected {
		t.Fatal("a broker that does not answer is not certRejected")
	}
}
