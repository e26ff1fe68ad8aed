package controllers

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
	"github.com/mqtt-operator/mqtt-operator/broker/apiv1"
	"github.com/mqtt-operator/mqtt-operator/controllers/brokerclient"
	"github.com/mqtt-operator/mqtt-operator/controllers/resource"
)

// observation is everything one reconcile knows about the broker cluster before it
// decides anything: what the spec wants, the StatefulSet's size and revision, every
// ordinal's pod and what its broker said, and the data volumes. decide reads nothing
// else; observe is the only code that asks the brokers for it.
type observation struct {
	desired             int                  // nodes the spec asks for
	size                int                  // the StatefulSet's spec.replicas: the record of scale-down progress
	updateRevision      string               // the StatefulSet's current template revision ("": not known yet)
	manualUpdate        bool                 // spec.updateStrategy.type Manual: pods are not replaced
	evacuationTimeout   time.Duration        // spec.updateStrategy.podReadyTimeout
	deleteScaledVolumes bool                 // spec.storage.retention.whenScaled Delete
	clusterID           string               // the cluster recorded in status (bootstrap may set it)
	lastReset           *v1alpha1.StoreReset // the operator's last store reset or volume wipe (status)
	pods                []*brokerPod         // one per ordinal, 0 up to the larger of size and the highest pod
	claims              []dataClaim          // the data volume claims of this cluster's ordinals (selected by its labels)
}

// brokerPod is what one reconcile learns about one ordinal.
type brokerPod struct {
	ordinal int
	name    string
	pod     *corev1.Pod          // nil when there is no pod
	api     *brokerclient.Client // the executor's handle; nil without an address. decide never uses it.
	node    *brokerclient.Node   // nil when the broker did not answer
	err     error
	// view is the cluster as this broker sees it (asked of every broker that answered).
	view    *brokerclient.Cluster
	viewErr error
	// evac is the broker's evacuation (asked only while it reports evacuating).
	evac    *brokerclient.Evacuation
	evacErr error
	// staleToken: the broker answered only to an API token the operator was asked
	// to replace (it started before the new one).
	staleToken bool
	// tokenRejected: the broker answered, refusing every token the operator holds.
	// node is nil, but the pod is alive: never taken for dead.
	tokenRejected bool
	// certRejected: the broker answered the TLS handshake with a certificate the
	// operator does not trust (not from the cluster CA, or not naming the pod): no
	// token was sent, node is nil, but the pod is alive: never taken for dead.
	certRejected bool
}

// dataClaim is one data volume claim of an ordinal of the cluster.
type dataClaim struct {
	name     string
	ordinal  int
	deleting bool
	created  time.Time
}

func (b *brokerPod) reachable() bool { return b.node != nil }

// readyMember reports whether the broker is a ready member of the cluster clusterID.
func (b *brokerPod) readyMember(clusterID string) bool { return b.joined(clusterID) && b.node.Ready }

// joined reports whether the broker is a member of the cluster clusterID.
func (b *brokerPod) joined(clusterID string) bool {
	return b.node != nil && b.node.StoreState == apiv1.StoreMember && clusterID != "" && b.node.ClusterID == clusterID
}

// observe lists the pods and claims and asks every broker for its node, its cluster
// view and (while it evacuates) its evacuation, all brokers in parallel.
func (r *MQTTClusterReconciler) observe(ctx context.Context, mc *v1alpha1.MQTTCluster, sts *appsv1.StatefulSet, tokens resource.NodeSecrets) (*observation, error) {
	pods := &corev1.PodList{}
	if err := r.List(ctx, pods, client.InNamespace(mc.Namespace), client.MatchingLabels(resource.SelectorLabels(mc))); err != nil {
		return nil, err
	}
	o := &observation{
		desired:             desired(mc),
		size:                int(ptr.Deref(sts.Spec.Replicas, 0)),
		updateRevision:      sts.Status.UpdateRevision,
		manualUpdate:        mc.Spec.UpdateStrategy.Type == v1alpha1.Manual,
		evacuationTimeout:   10 * time.Minute,
		deleteScaledVolumes: mc.Spec.Storage.Retention.WhenScaled == v1alpha1.Delete,
		clusterID:           mc.Status.ClusterID,
		lastReset:           mc.Status.LastStoreReset,
	}
	if t := mc.Spec.UpdateStrategy.PodReadyTimeout; t != nil {
		o.evacuationTimeout = t.Duration
	}
	// Claims are the cluster's by its labels and an ordinal by name, never by a name
	// pattern alone.
	claims := &corev1.PersistentVolumeClaimList{}
	if err := r.List(ctx, claims, client.InNamespace(mc.Namespace), client.MatchingLabels(resource.SelectorLabels(mc))); err != nil {
		return nil, err
	}
	claimPrefix := resource.DataClaimName(mc, resource.StatefulSetName(mc)) + "-"
	for i := range claims.Items {
		c := &claims.Items[i]
		if k := ordinalAfter(claimPrefix, c.Name); k >= 0 {
			o.claims = append(o.claims, dataClaim{name: c.Name, ordinal: k, deleting: !c.DeletionTimestamp.IsZero(), created: c.CreationTimestamp.Time})
		}
	}
	n := o.size
	byOrdinal := map[int]*corev1.Pod{}
	for i := range pods.Items {
		p := &pods.Items[i]
		if k := podOrdinal(mc, p); k >= 0 {
			byOrdinal[k] = p
			n = max(n, k+1)
		}
	}
	var wg sync.WaitGroup
	var cas *x509.CertPool // the cluster CA, read once when a pod serves its API over TLS
	for k := range n {
		b := &brokerPod{ordinal: k, name: resource.PodName(mc, k), pod: byOrdinal[k]}
		o.pods = append(o.pods, b)
		if b.pod == nil || !b.pod.DeletionTimestamp.IsZero() {
			continue
		}
		url := r.pods().API(mc, b.pod)
		if url == "" {
			continue
		}
		b.api = &brokerclient.Client{BaseURL: url, Token: string(tokens.Token), Previous: tokens.PreviousTokens, Timeout: 5 * time.Second}
		if strings.HasPrefix(url, "https://") {
			// The pod's certificate, from the cluster's CA, must name the pod: the
			// token goes only to the broker of this very pod.
			if cas == nil {
				var err error
				if cas, err = r.clusterCAPool(ctx, mc); err != nil {
					return nil, err
				}
			}
			// A transport per observation: no keep-alive, or each reconcile would
			// leave an idle connection open to every broker.
			b.api.HTTP = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true,
				TLSClientConfig: &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: cas, ServerName: b.name}}}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			b.ask(ctx)
		}()
	}
	wg.Wait()
	return o, nil
}

// ask fills what the broker reports about itself.
func (b *brokerPod) ask(ctx context.Context) {
	b.node, b.err = b.api.Node(ctx)
	b.staleToken = b.api.UsesPrevious()
	if b.err != nil {
		b.node = nil
		b.tokenRejected = brokerclient.Unauthorized(b.err)
		var verify *tls.CertificateVerificationError
		b.certRejected = errors.As(b.err, &verify)
		return
	}
	if b.view, b.viewErr = b.api.Cluster(ctx); b.viewErr != nil {
		b.view = nil
	}
	if b.node.Evacuating {
		if b.evac, b.evacErr = b.api.Evacuation(ctx); b.evacErr != nil {
			b.evac = nil
		}
	}
}

// ordinalAfter returns the ordinal that follows prefix in name ("<prefix><n>"), or -1.
func ordinalAfter(prefix, name string) int {
	rest, ok := strings.CutPrefix(name, prefix)
	if !ok || rest == "" {
		return -1
	}
	n, err := strconv.Atoi(rest)
	if err != nil || n < 0 || fmt.Sprint(n) != rest {
		return -1
	}
	return n
}

// podOrdinal returns the StatefulSet ordinal of a pod of mc, or -1.
func podOrdinal(mc *v1alpha1.MQTTCluster, pod *corev1.Pod) int {
	return ordinalAfter(resource.StatefulSetName(mc)+"-", pod.Name)
}

func (r *MQTTClusterReconciler) pods() PodAddresses {
	if r.Pods != nil {
		return r.Pods
	}
	return InClusterAddresses{}
}

// clusterCAPool is the CA the pods' API certificates chain to: the ca.crt of the node
// certificates Secret (the CA the nodes trust).
func (r *MQTTClusterReconciler) clusterCAPool(ctx context.Context, mc *v1alpha1.MQTTCluster) (*x509.CertPool, error) {
	s := &corev1.Secret{}
	if err := r.getChild(ctx, client.ObjectKey{Namespace: mc.Namespace, Name: resource.ClusterTLSSecretName(mc)}, s); err != nil {
		return nil, fmt.Errorf("the cluster CA for the brokers' API: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(s.Data[resource.CACertKey]) {
		return nil, fmt.Errorf("the cluster CA for the brokers' API: Secret %q has no certificate in %q", s.Name, resource.CACertKey)
	}
	return pool, nil
}
