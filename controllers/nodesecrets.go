package controllers

import (
	"bytes"
	"context"
	"crypto/hmac"
	"errors"
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

// maxPreviousTokens bounds the replaced tokens kept while rotations pile up: a
// further rotation is refused (APITokenChangeRefused) rather than dropping a token
// some node may still run.
const maxPreviousTokens = 4

// errCopyWithheld: the node Secret is missing (or holds no cookie) while pods may run,
// and the cookie Secret does not hold the cookie in force: no copy is written.
var errCopyWithheld = errors.New("node Secret withheld")

// reconcileNodeSecrets writes the node Secret from the cookie and token Secrets and
// what the node Secret holds, refusing a cookie change while pods may run. The values
// are decided inside the write, on the Secret being written (NodeSecretBuilder.Next).
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
	key, err := r.fingerprintKey(ctx, mc)
	if err != nil {
		return false, err
	}
	sts := &appsv1.StatefulSet{}
	if err := r.getChild(ctx, client.ObjectKey{Namespace: mc.Namespace, Name: resource.StatefulSetName(mc)}, sts); apierrors.IsNotFound(err) {
		sts = nil
	} else if err != nil {
		return false, err
	}
	running, err := r.podsMayRun(ctx, mc, sts)
	if err != nil {
		return false, err
	}
	in := nodeSecretsInput{cookie: cookie, token: token, podsMayRun: running, cookieVouched: cookieVouched(mc, sts, key, cookie)}
	var d nodeSecretsDecision
	b := &resource.NodeSecretBuilder{Cluster: mc, Next: func(inForce *resource.NodeSecrets) (resource.NodeSecrets, error) {
		d = nextNodeSecrets(inForce, in)
		if d.withhold {
			return resource.NodeSecrets{}, errCopyWithheld
		}
		return d.next, nil
	}}
	_, err = r.apply(ctx, mc, b)
	cookieName, cookieKey := resource.CookieSecret(mc)
	switch {
	case errors.Is(err, errCopyWithheld):
		r.report(st, refusedChange, "CookieChangeRefused", fmt.Sprintf(
			"the node Secret %q is missing or holds no cookie while pods of the cluster may run, and the cookie in Secret %q key %q is not the one recorded as in force: no copy is made, so no pod can start on a cookie its peers reject. "+
				"Put the cookie the nodes run back into that Secret, or stop the cluster (scale the StatefulSet to 0 and delete its pods) (docs/architecture.md, \"Cookie and API token\")",
			resource.NodeSecretName(mc), cookieName, cookieKey))
		return true, nil
	case errors.Is(err, resource.ErrUnreadableNodeSecret):
		r.report(st, notInForce, "NodeSecretUnreadable", fmt.Sprintf(
			"%v: the operator cannot tell which cookie and API tokens the nodes run; fix or delete that Secret", err))
		return true, nil
	case err != nil:
		return false, err
	}
	if d.cookieRefused {
		r.report(st, refusedChange, "CookieChangeRefused", fmt.Sprintf(
			"the cluster cookie in Secret %q key %q is not the one the nodes share: a node given another cookie could not talk to the others, so the pods keep the old one. "+
				"To change the cookie, scale the cluster to 0 (spec.replicas: 0), wait until no pod is left, then scale it back (docs/architecture.md, \"Cookie and API token\")",
			cookieName, cookieKey))
	}
	if d.tokenRefused {
		name, k := resource.APITokenSecret(mc)
		r.report(st, refusedChange, "APITokenChangeRefused", fmt.Sprintf(
			"the API token in Secret %q key %q is not taken: %d replaced tokens are still kept for pods that may run them, and dropping one could lock the operator out of a node. "+
				"It is taken once every pod runs the current token (the pods roll onto it)", name, k, maxPreviousTokens))
	}
	written := b.Written
	st.nodeSecrets = &written
	st.fingerprintKey = key
	return false, nil
}

// fingerprintKey returns the cluster's fingerprint key, generating its Secret the
// first time.
func (r *MQTTClusterReconciler) fingerprintKey(ctx context.Context, mc *v1alpha1.MQTTCluster) ([]byte, error) {
	obj, err := r.apply(ctx, mc, resource.FingerprintKeySecretBuilder(mc))
	if err != nil {
		return nil, err
	}
	s, ok := obj.(*corev1.Secret)
	if !ok || len(s.Data[resource.FingerprintKeyKey]) == 0 {
		return nil, fmt.Errorf("fingerprint key Secret %q has no key %q", resource.FingerprintKeySecretName(mc), resource.FingerprintKeyKey)
	}
	return s.Data[resource.FingerprintKeyKey], nil
}

// cookieVouched reports whether cookie is known to be the one the nodes run, for when
// the node Secret cannot say: the StatefulSet records its fingerprint, or (an operator
// upgraded onto a running cluster) its pod template still mounts the cookie Secret
// itself, so that is what the pods run.
func cookieVouched(mc *v1alpha1.MQTTCluster, sts *appsv1.StatefulSet, key, cookie []byte) bool {
	if sts == nil || len(cookie) == 0 {
		return false
	}
	if fp, ok := sts.Annotations[resource.AnnotationCookieFingerprint]; ok {
		return hmac.Equal([]byte(fp), []byte(resource.Fingerprint(key, cookie)))
	}
	name, _ := resource.CookieSecret(mc)
	return templateMountsSecret(&sts.Spec.Template.Spec, name)
}

// templateMountsSecret reports whether a pod spec mounts the Secret name, directly or
// in a projected volume.
func templateMountsSecret(spec *corev1.PodSpec, name string) bool {
	for _, v := range spec.Volumes {
		if v.Secret != nil && v.Secret.SecretName == name {
			return true
		}
		if v.Projected != nil {
			for _, src := range v.Projected.Sources {
				if src.Secret != nil && src.Secret.Name == name {
					return true
				}
			}
		}
	}
	return false
}

// nodeSecretsInput is what the node Secret's values are decided from, besides what it
// holds.
type nodeSecretsInput struct {
	cookie, token []byte // what the cookie and token Secrets hold now
	podsMayRun    bool   // some pod exists or may be started
	cookieVouched bool   // cookie is known to be the one the nodes run (cookieVouched)
}

// nodeSecretsDecision is what nextNodeSecrets decided.
type nodeSecretsDecision struct {
	next resource.NodeSecrets
	// withhold: write nothing (no node Secret, or one without a cookie, while pods
	// may run and the cookie Secret is not vouched for).
	withhold      bool
	cookieRefused bool // the cookie in force is kept
	tokenRefused  bool // the token in force is kept: too many rotations pending
}

// nextNodeSecrets decides the node Secret's values from what it holds (nil: it does
// not exist), the Secrets' values and whether any pod runs or may be started. A
// cookie other than the one in force is refused while pods may run; with no cookie
// in force on record (the node Secret deleted, or its cookie emptied) while pods may
// run, the cookie Secret is taken only if it is vouched for, else nothing is written.
// A new token is taken with the replaced ones kept for the operator's fallback, up to
// maxPreviousTokens; beyond, the change is refused rather than a token dropped.
func nextNodeSecrets(inForce *resource.NodeSecrets, in nodeSecretsInput) (d nodeSecretsDecision) {
	known := inForce != nil && len(inForce.Cookie) > 0
	d.next.Cookie = in.cookie
	switch {
	case known && !bytes.Equal(inForce.Cookie, in.cookie) && in.podsMayRun:
		d.next.Cookie, d.cookieRefused = inForce.Cookie, true
	case !known && in.podsMayRun && !in.cookieVouched:
		return nodeSecretsDecision{withhold: true, cookieRefused: true}
	}
	d.next.Token = in.token
	if inForce == nil || !in.podsMayRun {
		return d // no node runs any token we know of
	}
	if bytes.Equal(inForce.Token, in.token) {
		d.next.PreviousTokens = inForce.PreviousTokens
		return d
	}
	// Newest first; a token coming back is current again, not previous.
	var previous []string
	for _, t := range append([]string{string(inForce.Token)}, inForce.PreviousTokens...) {
		if t != "" && t != string(in.token) && !slices.Contains(previous, t) {
			previous = append(previous, t)
		}
	}
	if len(previous) > maxPreviousTokens {
		d.next.Token, d.next.PreviousTokens, d.tokenRefused = inForce.Token, inForce.PreviousTokens, true
		return d
	}
	d.next.PreviousTokens = previous
	return d
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
// cluster exists, or its StatefulSet (sts, nil when there is none) asks for more than
// zero. "None" lets a new cookie in and replaced tokens go, so it is never taken from
// the cache alone (a StatefulSet just scaled up, a pod just created): it is confirmed
// by the API server.
func (r *MQTTClusterReconciler) podsMayRun(ctx context.Context, mc *v1alpha1.MQTTCluster, sts *appsv1.StatefulSet) (bool, error) {
	if sts != nil && ptr.Deref(sts.Spec.Replicas, 1) > 0 {
		return true, nil
	}
	if running, err := r.podsExist(ctx, r.Client, mc); running || err != nil {
		return running, err
	}
	fresh := &appsv1.StatefulSet{}
	err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: mc.Namespace, Name: resource.StatefulSetName(mc)}, fresh)
	if err == nil && ptr.Deref(fresh.Spec.Replicas, 1) > 0 {
		return true, nil
	}
	if err != nil && !apierrors.IsNotFound(err) {
		return false, err
	}
	return r.podsExist(ctx, r.APIReader, mc)
}

// podsExist reports whether reader lists a pod of the cluster.
func (r *MQTTClusterReconciler) podsExist(ctx context.Context, reader client.Reader, mc *v1alpha1.MQTTCluster) (bool, error) {
	pods := &corev1.PodList{}
	if err := reader.List(ctx, pods, client.InNamespace(mc.Namespace), client.MatchingLabels(resource.SelectorLabels(mc))); err != nil {
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
	// Decided on the Secret being written: only the tokens the brokers were asked
	// with are retired, never a rotation that arrived since.
	b := &resource.NodeSecretBuilder{Cluster: st.cluster, Next: func(inForce *resource.NodeSecrets) (resource.NodeSecrets, error) {
		if inForce == nil || !bytes.Equal(inForce.Token, ns.Token) {
			return resource.NodeSecrets{}, errCopyWithheld
		}
		next := *inForce
		next.PreviousTokens = nil
		return next, nil
	}}
	if _, err := r.apply(ctx, st.cluster, b); errors.Is(err, errCopyWithheld) {
		return false, nil // changed since: the next reconcile looks again
	} else if err != nil {
		return false, err
	}
	written := b.Written
	st.nodeSecrets = &written
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
