// Package controllers holds the MQTTCluster reconciler: Reconcile is a short pipeline
// of named steps, one file per concern; the child objects come from the builders in
// controllers/resource.
package controllers

import (
	"context"
	"errors"
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/events"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
	"github.com/mqtt-operator/mqtt-operator/controllers/resource"
)

// MQTTClusterReconciler reconciles MQTTCluster objects.
type MQTTClusterReconciler struct {
	client.Client
	Scheme   *runtime.Scheme
	Recorder events.EventRecorder
	// DefaultImage is the broker image of clusters that do not set spec.image.
	DefaultImage string
	// Pods turns a pod into its broker's addresses (default: InClusterAddresses).
	Pods PodAddresses
	// Clock is the lifecycle's clock (default: the wall clock).
	Clock clock.PassiveClock
	// Operator identifies the operator's pods, which the NetworkPolicy admits to the
	// brokers' API port.
	Operator resource.Operator
	// APIReader reads what the cache does not hold, the user's Secrets (default:
	// the manager's API reader).
	APIReader client.Reader
	// Namespaces the manager watches, as given to CacheOptions (none: all of them).
	Namespaces []string
}

// +kubebuilder:rbac:groups=broker.mqtt-operator.io,resources=mqttclusters,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=broker.mqtt-operator.io,resources=mqttclusters/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=broker.mqtt-operator.io,resources=mqttclusters/finalizers,verbs=update
// +kubebuilder:rbac:groups="",resources=secrets;configmaps;services,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=apps,resources=statefulsets,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch;delete
// +kubebuilder:rbac:groups="",resources=persistentvolumeclaims,verbs=get;list;watch;delete
// +kubebuilder:rbac:groups=policy,resources=poddisruptionbudgets,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=networking.k8s.io,resources=networkpolicies,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=cert-manager.io,resources=certificates,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=monitoring.coreos.com,resources=podmonitors;prometheusrules,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// errNameConflict: a child's name is taken by an object the cluster does not own.
var errNameConflict = errors.New("name conflict")

// state is what one reconcile learns as it goes down the pipeline.
type state struct {
	cluster *v1alpha1.MQTTCluster
	// config is the rendered mqttd.yaml.
	config []byte
	// sts is the StatefulSet as last written or read.
	sts *appsv1.StatefulSet
	// problems found in the spec; they decide the Degraded condition.
	problems []problem
	// lifecycle is what the brokers reported (nil when not asked).
	lifecycle *lifecycle
	// nodeSecrets are the cookie and API tokens the pods are given (nil until the
	// nodesecrets step wrote them).
	nodeSecrets *resource.NodeSecrets
	// fingerprintKey is the cluster's HMAC key for the cookie fingerprint and the
	// API token hash (resource.FingerprintKeySecretName).
	fingerprintKey []byte
	// requeue asks for another reconcile after this long (0: only on changes).
	requeue time.Duration
	// clusterTLS: the pods link with mutual TLS (decideClusterTLS).
	clusterTLS bool
	// renewAt is when the first node certificate is due for renewal (zero: none).
	renewAt time.Time
	// monitoring is status.monitoring as the monitoring step left it (nil: unchanged).
	monitoring *v1alpha1.MonitoringStatus
}

// step is one stage of the pipeline. A step that finds invalid input records a
// problem and returns stop: the later steps would only build on bad input.
type step struct {
	name string
	run  func(ctx context.Context, st *state) (stop bool, err error)
}

// Reconcile drives the cluster's children towards the spec, then reports status.
// The order matters: clustertls first (a pod's certificate exists before the pod,
// and renewal runs even when a later step stops); Secrets and the ConfigMap exist
// before the StatefulSet whose pods mount them (the node Secret holds what the nodes
// run, copied from the cookie and token Secrets); the Services before the pods look
// each other up; the NetworkPolicy before the pods, so that none starts unprotected;
// the PodDisruptionBudget once there is something to protect; monitoring before the
// lifecycle, whose failures end a reconcile (monitoring itself reports its problems
// and never stops or fails one, so the lifecycle never waits for it). A NodePort or LoadBalancer client Service is widened
// only once the pods run the settings the spec asks for.
// retiredtokens follows lifecycle, whose observation says whether any node still
// runs a replaced API token.
func (r *MQTTClusterReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	mc := &v1alpha1.MQTTCluster{}
	if err := r.Get(ctx, req.NamespacedName, mc); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !mc.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, nil // owner references let the garbage collector clean up
	}
	st := &state{cluster: mc}
	pipeline := []step{
		// Before anything that may stop the pipeline: certificates are renewed even
		// while the spec has a problem.
		{"clustertls", r.reconcileClusterTLS},
		{"secrets", r.reconcileSecrets},
		{"certificate", r.reconcileCertificate},
		{"nodesecrets", r.reconcileNodeSecrets},
		{"config", r.reconcileConfig},
		{"services", r.reconcileServices},
		{"networkpolicy", r.reconcileNetworkPolicy},
		{"statefulset", r.reconcileStatefulSet},
		{"pdb", r.reconcilePDB},
		{"monitoring", r.reconcileMonitoring},
		{"lifecycle", r.reconcileLifecycle},
		{"retiredtokens", r.reconcileRetiredTokens},
	}
	var forbidden error
	for _, s := range pipeline {
		stop, err := s.run(ctx, st)
		if errors.Is(err, errNameConflict) {
			r.report(st, invalidInput, "ChildNameConflict", fmt.Sprintf("%s: %v", s.name, err))
			break
		}
		if apierrors.IsInvalid(err) {
			// The API server refused a child built from a spec it accepted (say, a
			// bad affinity): retrying cannot help, the user must change the spec.
			r.report(st, invalidInput, "InvalidChild", fmt.Sprintf("%s: %v", s.name, err))
			break
		}
		if apierrors.IsForbidden(err) {
			// The operator's role lacks a permission (say, an upgrade whose RBAC was
			// not applied): what the later steps guard (the NetworkPolicy before the
			// pods) is not in force, so status says so; retried with backoff.
			r.report(st, notInForce, "Forbidden", fmt.Sprintf("%s: %v", s.name, err))
			forbidden = fmt.Errorf("%s: %w", s.name, err)
			break
		}
		if err != nil {
			// The status is not written on this path; what the monitoring step
			// recorded must be, or its objects could outlive a later "off".
			return ctrl.Result{}, errors.Join(fmt.Errorf("%s: %w", s.name, err), r.saveMonitoringStatus(ctx, st))
		}
		if stop {
			break
		}
	}
	if err := r.reconcileStatus(ctx, st); err != nil || forbidden != nil {
		return ctrl.Result{}, errors.Join(forbidden, err)
	}
	if !st.renewAt.IsZero() {
		// Renewal does not wait for an event: come back when a certificate is due.
		if d := max(time.Until(st.renewAt), time.Minute); st.requeue == 0 || d < st.requeue {
			st.requeue = d
		}
	}
	return ctrl.Result{RequeueAfter: st.requeue}, nil
}

// apply creates or updates the child described by b, owned by the cluster, retrying
// on write conflicts. It returns the object as written.
func (r *MQTTClusterReconciler) apply(ctx context.Context, mc *v1alpha1.MQTTCluster, b resource.Builder) (client.Object, error) {
	mutate := func(obj client.Object) error {
		// Never take over an object someone else made under a child's name.
		if obj.GetResourceVersion() != "" && !metav1.IsControlledBy(obj, mc) {
			return fmt.Errorf("%w: %T %q exists and is not owned by this MQTTCluster", errNameConflict, obj, obj.GetName())
		}
		if err := b.Mutate(obj); err != nil {
			return err
		}
		return controllerutil.SetControllerReference(mc, obj, r.Scheme)
	}
	var obj client.Object
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		obj = b.Object()
		op, err := controllerutil.CreateOrUpdate(ctx, r.Client, obj, func() error { return mutate(obj) })
		if apierrors.IsAlreadyExists(err) {
			// The cache holds only labeled objects (CacheOptions): this one lacks
			// the children's label, someone else's under a child's name or ours
			// with its labels edited away. Decide on the API server's copy.
			obj = b.Object()
			op, err = r.updateUncached(ctx, obj, mutate)
		}
		if err == nil && op != controllerutil.OperationResultNone {
			log.FromContext(ctx).Info("applied child", "kind", fmt.Sprintf("%T", obj), "name", obj.GetName(), "operation", op)
		}
		return err
	})
	return obj, err
}

// updateUncached reads obj (name and namespace set) from the API server, mutates it
// and writes it back.
func (r *MQTTClusterReconciler) updateUncached(ctx context.Context, obj client.Object, mutate func(client.Object) error) (controllerutil.OperationResult, error) {
	if err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(obj), obj); err != nil {
		return controllerutil.OperationResultNone, err
	}
	if err := mutate(obj); err != nil {
		return controllerutil.OperationResultNone, err
	}
	return controllerutil.OperationResultUpdated, r.Update(ctx, obj)
}

// deleteIfOwned deletes obj (name and namespace set) when it exists and this cluster
// owns it.
func (r *MQTTClusterReconciler) deleteIfOwned(ctx context.Context, mc *v1alpha1.MQTTCluster, obj client.Object) error {
	if err := r.getChild(ctx, client.ObjectKeyFromObject(obj), obj); err != nil {
		return client.IgnoreNotFound(err)
	}
	if owner := metav1.GetControllerOf(obj); owner == nil || owner.UID != mc.UID {
		return nil
	}
	if err := r.Delete(ctx, obj); err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	return nil
}

// SetupWithManager registers the controller: it watches MQTTClusters, the children
// they own, their pods, and the Secrets a cluster refers to (so fixing a missing
// Secret takes effect). The manager's cache must be CacheOptions' (cache.go).
func (r *MQTTClusterReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.APIReader == nil {
		r.APIReader = mgr.GetAPIReader()
	}
	referencedSecrets, err := r.referencedSecretsSource(mgr)
	if err != nil {
		return err
	}
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1alpha1.MQTTCluster{}).
		Owns(&corev1.Secret{}).
		Owns(&corev1.ConfigMap{}).
		Owns(&corev1.Service{}).
		Owns(&appsv1.StatefulSet{}).
		Owns(&policyv1.PodDisruptionBudget{}).
		Owns(&networkingv1.NetworkPolicy{}).
		Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(clusterOfPod)).
		WatchesRawSource(referencedSecrets).
		Named("mqttcluster").
		Complete(r)
}
