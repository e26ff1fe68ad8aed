package controllers

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
	"github.com/mqtt-operator/mqtt-operator/controllers/resource"
)

// What the operator keeps in memory (docs/architecture.md, "Cache"):
//
//   - MQTTClusters, all of them in the watched namespaces.
//   - Of every other kind, only the objects labeled resource.ChildrenLabels: the
//     children the operator makes (Secrets, ConfigMap, Services, StatefulSet, PDB) and
//     the pods and volume claims the StatefulSet makes from its templates. A kind the
//     operator starts to own later is covered without a change here. The user's
//     Secrets, pods and claims never enter the cache, whatever their number.
//   - The user's Secrets the spec names are read from the API server when needed
//     (getSecret), and watched through a second cache that holds only their names
//     (referencedSecretsCache), so that creating or fixing one takes effect at once.
//
// managedFields are dropped from every cached object: the operator never reads them
// (an update with none leaves the server's untouched), and they are often the
// largest part of an object's metadata.

// CacheOptions is the manager's cache: the watched namespaces (none: all of them)
// and the label selection above. main.go and the envtest suite both use it, so the
// tests run the cache the operator runs.
func CacheOptions(namespaces []string) cache.Options {
	return cache.Options{
		DefaultNamespaces:    namespaceConfigs(namespaces),
		DefaultLabelSelector: labels.SelectorFromSet(resource.ChildrenLabels()),
		DefaultTransform:     cache.TransformStripManagedFields(),
		ByObject: map[client.Object]cache.ByObject{
			&v1alpha1.MQTTCluster{}: {Label: labels.Everything()},
		},
	}
}

// namespaceConfigs is cache.Options.DefaultNamespaces for a list of namespaces (nil:
// every namespace).
func namespaceConfigs(namespaces []string) map[string]cache.Config {
	if len(namespaces) == 0 {
		return nil
	}
	m := make(map[string]cache.Config, len(namespaces))
	for _, ns := range namespaces {
		m[ns] = cache.Config{}
	}
	return m
}

// secretMetadata is the type of the referenced-Secrets watch: metadata only.
func secretMetadata() *metav1.PartialObjectMetadata {
	m := &metav1.PartialObjectMetadata{}
	m.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Secret"))
	return m
}

// referencedSecretsSource watches the Secrets of the watched namespaces, names only,
// and maps each to the clusters whose spec names it. It has its own cache, added to
// the manager: the manager's cache selects Secrets by label (one cache cannot hold
// a kind both label-selected and not), and the user's Secrets carry none of ours.
// The watch asks the API server for metadata only, and the cache keeps the name,
// namespace, UID and resourceVersion of each (keyOnly): a few hundred bytes per
// Secret, and none of the Secret's data or annotations (kubectl's last-applied
// annotation holds the whole Secret). Started as the controllers are, so a manager
// that is not the leader holds none of it.
func (r *MQTTClusterReconciler) referencedSecretsSource(mgr ctrl.Manager) (source.Source, error) {
	c, err := cache.New(mgr.GetConfig(), cache.Options{
		HTTPClient:        mgr.GetHTTPClient(),
		Scheme:            mgr.GetScheme(),
		Mapper:            mgr.GetRESTMapper(),
		DefaultNamespaces: namespaceConfigs(r.Namespaces),
		DefaultTransform:  keyOnly,
	})
	if err != nil {
		return nil, fmt.Errorf("referenced Secrets cache: %w", err)
	}
	if err := mgr.Add(c); err != nil {
		return nil, fmt.Errorf("referenced Secrets cache: %w", err)
	}
	var obj client.Object = secretMetadata()
	return source.Kind(c, obj, handler.EnqueueRequestsFromMapFunc(r.clustersReferringTo)), nil
}

// keyOnly keeps what identifies an object's version and drops the rest of its
// metadata (labels, annotations, owners, managedFields).
func keyOnly(in any) (any, error) {
	m, ok := in.(*metav1.PartialObjectMetadata)
	if !ok {
		return in, nil
	}
	return &metav1.PartialObjectMetadata{
		TypeMeta: m.TypeMeta,
		ObjectMeta: metav1.ObjectMeta{
			Name:            m.Name,
			Namespace:       m.Namespace,
			UID:             m.UID,
			ResourceVersion: m.ResourceVersion,
		},
	}, nil
}

// getSecret reads a Secret: from the cache when the operator made it, else (the
// user's Secrets are not cached) from the API server.
func (r *MQTTClusterReconciler) getSecret(ctx context.Context, key client.ObjectKey, s *corev1.Secret) error {
	return r.getChild(ctx, key, s)
}

// getChild reads an object from the cache and, when the cache does not hold it, from
// the API server: the cache holds only labeled objects, so a child whose labels were
// edited away (or someone else's object under a child's name) is NotFound there
// although it exists. Every Get whose answer drives a decision goes through here; a
// NotFound from getChild means the object does not exist.
//
// Lists need no such fallback: every List that drives a decision selects by
// resource.SelectorLabels, which include the label the cache selects on, so the API
// server would return no object the cache leaves out (only a fresher copy of them;
// where freshness matters, podsMayRun asks the API server itself).
func (r *MQTTClusterReconciler) getChild(ctx context.Context, key client.ObjectKey, obj client.Object) error {
	if err := r.Get(ctx, key, obj); !apierrors.IsNotFound(err) {
		return err
	}
	return r.APIReader.Get(ctx, key, obj)
}
