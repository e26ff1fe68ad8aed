package controllers

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
	"github.com/mqtt-operator/mqtt-operator/broker/auth"
	"github.com/mqtt-operator/mqtt-operator/controllers/resource"
)

// secretRef is a Secret the spec points at and the keys it must hold.
type secretRef struct {
	field string // where in the spec, for messages
	name  string
	keys  []string
}

// issuedField names spec.tls.issuerRef's Secret among the referenced ones.
const issuedField = "spec.tls.issuerRef"

// referencedSecrets lists the user's Secrets the cluster needs (and the one
// cert-manager writes for spec.tls.issuerRef).
func referencedSecrets(mc *v1alpha1.MQTTCluster) []secretRef {
	var refs []secretRef
	if r := mc.Spec.CookieSecretRef; r != nil {
		refs = append(refs, secretRef{"spec.cookieSecretRef", r.Name, []string{r.Key}})
	}
	if r := mc.Spec.APITokenSecretRef; r != nil {
		refs = append(refs, secretRef{"spec.apiTokenSecretRef", r.Name, []string{r.Key}})
	}
	for _, l := range mc.Spec.Listeners {
		if l.TLSSecretName != "" {
			refs = append(refs, secretRef{fmt.Sprintf("spec.listeners[%s].tlsSecretName", l.Name), l.TLSSecretName,
				[]string{corev1.TLSCertKey, corev1.TLSPrivateKeyKey}})
		}
	}
	if resource.UsesIssuedCertificate(mc) {
		// cert-manager writes it: watched like the user's, but its absence is a wait
		// (reconcileCertificate), not invalid input.
		refs = append(refs, secretRef{issuedField, resource.CertificateName(mc), []string{corev1.TLSCertKey, corev1.TLSPrivateKeyKey}})
	}
	if a := mc.Spec.Auth; a != nil && a.UsersSecretRef != nil {
		refs = append(refs, secretRef{usersField, a.UsersSecretRef.Name, []string{resource.UsersKey}})
	}
	if d := mc.Spec.Dashboard; d.Enabled && d.AdminSecretRef != nil {
		refs = append(refs, secretRef{"spec.dashboard.adminSecretRef", d.AdminSecretRef.Name, []string{"username", "password"}})
	}
	return refs
}

// reconcileSecrets checks the user's Secrets and creates the generated cookie and API
// token Secrets when the spec brings none, and the users Secret when anonymous clients
// are refused and the spec names no users Secret. A generated value is never
// regenerated.
func (r *MQTTClusterReconciler) reconcileSecrets(ctx context.Context, st *state) (bool, error) {
	mc := st.cluster
	for _, ref := range referencedSecrets(mc) {
		if ref.field == issuedField {
			continue // reconcileCertificate's
		}
		s := &corev1.Secret{}
		err := r.getSecret(ctx, client.ObjectKey{Namespace: mc.Namespace, Name: ref.name}, s)
		if apierrors.IsNotFound(err) {
			r.report(st, invalidInput, "SecretNotFound", fmt.Sprintf("%s: Secret %q not found", ref.field, ref.name))
			continue
		}
		if err != nil {
			return false, err
		}
		for _, k := range ref.keys {
			if len(s.Data[k]) == 0 {
				r.report(st, invalidInput, "SecretKeyMissing", fmt.Sprintf("%s: Secret %q has no key %q", ref.field, ref.name, k))
			}
		}
		if ref.field == usersField && len(s.Data[resource.UsersKey]) > 0 {
			r.checkUsersFile(st, ref.name, s.Data[resource.UsersKey])
		}
		if strings.HasSuffix(ref.field, ".tlsSecretName") && len(s.Data[corev1.TLSCertKey]) > 0 && len(s.Data[corev1.TLSPrivateKeyKey]) > 0 {
			r.checkTLSSecret(st, ref, s)
		}
	}
	if hasInvalidInput(st.problems) {
		return true, nil
	}
	if mc.Spec.CookieSecretRef == nil {
		if _, err := r.apply(ctx, mc, resource.CookieSecretBuilder(mc)); err != nil {
			return false, err
		}
	}
	if mc.Spec.APITokenSecretRef == nil {
		if _, err := r.apply(ctx, mc, resource.APITokenSecretBuilder(mc)); err != nil {
			return false, err
		}
	}
	if resource.GeneratesUsersSecret(mc) {
		obj, err := r.apply(ctx, mc, resource.UsersSecretBuilder(mc))
		if err != nil {
			return false, err
		}
		if s, ok := obj.(*corev1.Secret); ok { // users may be added to it by hand
			if _, present := s.Data[resource.UsersKey]; !present {
				// The pods mount that key: without it a new pod cannot start.
				r.report(st, invalidInput, "SecretKeyMissing", fmt.Sprintf("Secret %q has no key %q", s.Name, resource.UsersKey))
			} else {
				r.checkUsersFile(st, s.Name, s.Data[resource.UsersKey])
			}
		}
	}
	return hasInvalidInput(st.problems), nil
}

// usersField is where the spec names the users Secret.
const usersField = "spec.auth.usersSecretRef"

// checkUsersFile parses a users file as mqttd does. mqttd keeps its old rules when a
// mounted file does not parse, but a pod that restarts on it cannot start: so a bad
// file is invalid input that stops the pipeline before any pod is touched. The
// message names the line and user, never a hash.
func (r *MQTTClusterReconciler) checkUsersFile(st *state, secret string, data []byte) {
	users, err := auth.CheckUsers(bytes.NewReader(data))
	switch {
	case err != nil:
		r.report(st, invalidInput, "InvalidUsersFile", fmt.Sprintf("Secret %q key %q: %v", secret, resource.UsersKey, err))
	case users == 0 && !resource.AllowAnonymous(st.cluster):
		// Valid, and maybe meant (everyone locked out), but worth saying.
		r.report(st, unsupportedChange, "NoUsers", fmt.Sprintf("Secret %q key %q lists no user and anonymous clients are refused: no client can connect", secret, resource.UsersKey))
	}
}

// clustersReferringTo maps a Secret to the clusters in its namespace whose spec names
// it, so that creating or fixing the Secret triggers a reconcile.
func (r *MQTTClusterReconciler) clustersReferringTo(ctx context.Context, obj client.Object) []reconcile.Request {
	var list v1alpha1.MQTTClusterList
	if err := r.List(ctx, &list, client.InNamespace(obj.GetNamespace())); err != nil {
		return nil
	}
	var reqs []reconcile.Request
	for i := range list.Items {
		for _, ref := range referencedSecrets(&list.Items[i]) {
			if ref.name == obj.GetName() {
				reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&list.Items[i])})
				break
			}
		}
	}
	return reqs
}

// checkTLSSecret checks a listener's certificate Secret. A pair that does not load
// (mqttd would not start on it; running nodes keep the pair they loaded) or a
// certificate outside its validity is not in force: Ready False, Degraded says why.
// The pipeline goes on: such a Secret is usually a renewal gone wrong outside the
// spec, and the lifecycle (scale-downs, leaves) must not stop for it.
func (r *MQTTClusterReconciler) checkTLSSecret(st *state, ref secretRef, s *corev1.Secret) {
	pair, err := tls.X509KeyPair(s.Data[corev1.TLSCertKey], s.Data[corev1.TLSPrivateKeyKey])
	if err != nil {
		r.report(st, notInForce, "InvalidTLSSecret", fmt.Sprintf("%s: Secret %q: %v", ref.field, ref.name, err))
		return
	}
	now := time.Now()
	switch leaf := pair.Leaf; {
	case leaf == nil:
	case now.After(leaf.NotAfter):
		r.report(st, notInForce, "TLSCertificateExpired", fmt.Sprintf("%s: Secret %q: the certificate expired at %s: clients refuse it",
			ref.field, ref.name, leaf.NotAfter.UTC().Format(time.RFC3339)))
	case now.Before(leaf.NotBefore):
		r.report(st, notInForce, "TLSCertificateNotYetValid", fmt.Sprintf("%s: Secret %q: the certificate is valid only from %s",
			ref.field, ref.name, leaf.NotBefore.UTC().Format(time.RFC3339)))
	}
}
