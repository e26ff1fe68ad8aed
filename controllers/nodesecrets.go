package controllers

import (
	"bytes"
	"context"
	"fmt"
	"slices"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
	"github.com/mqtt-operator/mqtt-operator/controllers/resource"
)

// The pods never mount the cookie and API token Secrets themselves: they mount the
// node Secret (resource.NodeSecretName), the operator's copy of what the nodes run.
//
//   - Cookie: every node of a cluster must hold the same one (a node with another
//     cannot link to the rest), and mqttd reads it only at start, so there is no
//     rolling from one cookie to another. A changed cookie is refused while any pod
//     runs or may be started: the copy keeps the cookie the cluster has, so neither a
//     roll, a container restart nor a rescheduled pod ever starts on the new one;
//     Degraded and Ready say CookieChangeRefused with the procedure. With the
//     StatefulSet at zero and no pod left, the copy takes the new cookie and the
//     cluster comes back on it (scale to 0, change, scale back).
//   - API token: mqttd reads it only at start too, so a new token rolls the pods
//     (its hash is on the pod template), and until every node answers to it the
//     operator also tries the tokens it replaced, kept in the copy and dropped once
//     no node runs them (reconcileRetiredTokens).

// maxPreviousTokens bounds the replaced tokens kept while rotations pile up.
const maxPreviousTokens = 4

// reconcileNodeSecrets writes the node Secret from the cookie and token Secrets and
// what the node Secret held, refusing a cookie change while pods may run.
func (r *MQTTClusterReconciler) reconcileNodeSecrets(ctx context.Context, st *state) (bool, error) {
	mc := st.cluster
	cookie, err := r.secretValue(ctx, mc, resource.CookieSecret)
	if err != nil {
		return false, err
	}
	token, err := r.secretValue(ctx, mc, resource.APITokenSecret)
	if err != nil {
		return false, err
	}
	var inForce *resource.NodeSecrets
	current := &corev1.Secret{}
	err = r.Get(ctx, client.ObjectKey{Namespace: mc.Namespace, Name: resource.NodeSecretName(mc)}, current)
	switch {
	case err == nil:
		v, err := resource.ReadNodeSecrets(current)
		if err != nil {
			return false, fmt.Errorf("reading Secret %q: %w", current.Name, err)
		}
		inForce = &v
	case !apierrors.IsNotFound(err):
		return false, err
	}
	running, err := r.podsMayRun(ctx, mc)
	if err != nil {
		return false, err
	}
	next, refused := nextNodeSecrets(inForce, cookie, token, running)
	if refused {
		name, key := resource.CookieSecret(mc)
		r.report(st, refusedChange, "CookieChangeRefused", fmt.Sprintf(
			"the cluster cookie in Secret %q key %q is not the one the nodes share: a node given another cookie could not talk to the others, so the pods keep the old one. "+
				"To change the cookie, scale the cluster to 0 (spec.replicas: 0), wait until no pod is left, then scale it back (docs/architecture.md, \"Cookie and API token\")",
			name, key))
	}
	if _, err := r.apply(ctx, mc, &resource.NodeSecretBuilder{Cluster: mc, Values: next}); err != nil {
		return false, err
	}
	st.nodeSecrets = &next
	return false, nil
}

// nextNodeSecrets decides the node Secret's values from what it holds (nil: it does
// not exist yet), the cookie and token the spec's Secrets hold now, and whether any
// pod runs or may be started. refused is true when the cookie changed while pods
// may run: the cookie in force is kept.
func nextNodeSecrets(inForce *resource.NodeSecrets, cookie, token []byte, podsMayRun bool) (next resource.NodeSecrets, refused bool) {
	if inForce == nil || len(inForce.Cookie) == 0 {
		return resource.NodeSecrets{Cookie: cookie, Token: token}, false
	}
	next.Cookie = cookie
	if !bytes.Equal(inForce.Cookie, cookie) && podsMayRun {
		next.Cookie, refused = inForce.Cookie, true
	}
	next.Token = token
	switch {
	case !podsMayRun:
		// No node runs any token.
	case bytes.Equal(inForce.Token, token):
		next.PreviousTokens = inForce.PreviousTokens
	default:
		// Newest first; a token coming back is current again, not previous.
		for _, t := range append([]string{string(inForce.Token)}, inForce.PreviousTokens...) {
			if t != "" && t != string(token) && !slices.Contains(next.PreviousTokens, t) && len(next.PreviousTokens) < maxPreviousTokens {
				next.PreviousTokens = append(next.PreviousTokens, t)
			}
		}
	}
	return next, refused
}

// secretValue reads the value of the Secret key that which names (CookieSecret or
// APITokenSecret); the secrets step checked that it exists.
func (r *MQTTClusterReconciler) secretValue(ctx context.Context, mc *v1alpha1.MQTTCluster, which func(*v1alpha1.MQTTCluster) (string, string)) ([]byte, error) {
	name, key := which(mc)
	s := &corev1.Secret{}
	if err := r.getSecret(ctx, client.ObjectKey{Namespace: mc.Namespace, Name: name}, s); err != nil {
		return nil, fmt.Errorf("reading Secret %q: %w", name, err)
	}
	return s.Data[key], nil
}

// podsMayRun reports whether a broker pod exists or may be started: some pod of the
// cluster exists, or its StatefulSet asks for more than zero.
func (r *MQTTClusterReconciler) podsMayRun(ctx context.Context, mc *v1alpha1.MQTTCluster) (bool, error) {
	sts := &appsv1.StatefulSet{}
	err := r.Get(ctx, client.ObjectKey{Namespace: mc.Namespace, Name: resource.StatefulSetName(mc)}, sts)
	if err == nil && ptr.Deref(sts.Spec.Replicas, 1) > 0 {
		return true, nil
	}
	if err != nil && !apierrors.IsNotFound(err) {
		return false, err
	}
	pods := &corev1.PodList{}
	if err := r.List(ctx, pods, client.InNamespace(mc.Namespace), client.MatchingLabels(resource.SelectorLabels(mc))); err != nil {
		return false, err
	}
	return len(pods.Items) > 0, nil
}

// reconcileRetiredTokens drops the replaced API tokens from the node Secret once every
// node answers to the current one: no pod is left on an older template, and every
// ordinal's broker answered without a previous token.
func (r *MQTTClusterReconciler) reconcileRetiredTokens(ctx context.Context, st *state) (bool, error) {
	ns := st.nodeSecrets
	if ns == nil || len(ns.PreviousTokens) == 0 || !tokensRetirable(st.lifecycle) {
		return false, nil
	}
	next := *ns
	next.PreviousTokens = nil
	if _, err := r.apply(ctx, st.cluster, &resource.NodeSecretBuilder{Cluster: st.cluster, Values: next}); err != nil {
		return false, err
	}
	st.nodeSecrets = &next
	return false, nil
}

// tokensRetirable is the check that no node may still run a replaced token: the
// brokers were asked, the StatefulSet's revision is known, and every ordinal has a
// pod on the current template whose broker answered to the current token.
func tokensRetirable(lc *lifecycle) bool {
	if lc == nil || !lc.gathered || lc.updateRevision == "" || len(lc.pods) == 0 {
		return false
	}
	for _, b := range lc.pods {
		if b.pod == nil || outdated(lc.updateRevision, b.pod) || !b.reachable() || b.staleToken {
			return false
		}
	}
	return true
}
