package controllers

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
	"github.com/mqtt-operator/mqtt-operator/controllers/brokerclient"
	res "github.com/mqtt-operator/mqtt-operator/controllers/resource"
)

// TestNextNodeSecrets tables what the pods are given when the cookie or token
// Secrets change: a cookie change is refused while pods may run, also when the node
// Secret is gone (then the cookie Secret is taken only when vouched for), and a token
// change is taken at once with the replaced token kept for the operator's fallback,
// up to maxPreviousTokens (then refused, never a kept token dropped).
func TestNextNodeSecrets(t *testing.T) {
	const (
		c1, c2     = "cookie-one-0123456789", "cookie-two-0123456789"
		t1, t2, t3 = "token-one-0123456789", "token-two-0123456789", "token-three-0123456789"
		t4, t5, t6 = "token-four-0123456789", "token-five-0123456789", "token-six-0123456789"
	)
	inForce := func(cookie, token string, previous ...string) *res.NodeSecrets {
		return &res.NodeSecrets{Cookie: []byte(cookie), Token: []byte(token), PreviousTokens: previous}
	}
	const (
		none     = ""
		cookie   = "cookie"
		token    = "token"
		withhold = "withhold"
	)
	for _, tc := range []struct {
		name          string
		inForce       *res.NodeSecrets
		cookie, token string
		podsMayRun    bool
		vouched       bool
		want          *res.NodeSecrets
		wantRefused   string
	}{
		{"first time: what the Secrets hold", nil, c1, t1, false, false, inForce(c1, t1), none},
		{"nothing changed", inForce(c1, t1), c1, t1, true, false, inForce(c1, t1), none},
		{"cookie changed while pods run: kept, refused", inForce(c1, t1), c2, t1, true, false, inForce(c1, t1), cookie},
		{"cookie changed with no pod: taken", inForce(c1, t1), c2, t1, false, false, inForce(c2, t1), none},
		{"cookie back to the one in force: no refusal", inForce(c1, t1), c1, t1, true, false, inForce(c1, t1), none},
		{"token changed: taken, the old one kept", inForce(c1, t1), c1, t2, true, false, inForce(c1, t2, t1), none},
		{"token changed again mid-roll: both kept, newest first", inForce(c1, t2, t1), c1, t3, true, false, inForce(c1, t3, t2, t1), none},
		{"token back to a previous one: current, not previous", inForce(c1, t2, t1), c1, t1, true, false, inForce(c1, t1, t2), none},
		{"roll in progress, nothing new: previous kept", inForce(c1, t2, t1), c1, t2, true, false, inForce(c1, t2, t1), none},
		{"token changed with no pod: nothing to fall back on", inForce(c1, t1), c1, t2, false, false, inForce(c1, t2), none},
		{"both changed while pods run: token taken, cookie refused", inForce(c1, t1), c2, t2, true, false, inForce(c1, t2, t1), cookie},
		{"node Secret gone while pods run, cookie not vouched for: nothing written", nil, c2, t1, true, false, &res.NodeSecrets{}, withhold},
		{"node Secret gone while pods run, cookie vouched for: re-created", nil, c1, t1, true, true, inForce(c1, t1), none},
		{"node Secret's cookie emptied while pods run, not vouched for: nothing written", inForce("", t1), c2, t1, true, false, &res.NodeSecrets{}, withhold},
		{"node Secret's cookie emptied while pods run, vouched for: tokens kept", inForce("", t1, t2), c1, t1, true, true, inForce(c1, t1, t2), none},
		{"node Secret gone with no pod: what the Secrets hold", nil, c2, t1, false, false, inForce(c2, t1), none},
		{"a fifth rotation while four are kept: refused, none dropped", inForce(c1, t5, t4, t3, t2, t1), c1, t6, true, false, inForce(c1, t5, t4, t3, t2, t1), token},
		{"a fourth rotation: taken", inForce(c1, t4, t3, t2, t1), c1, t5, true, false, inForce(c1, t5, t4, t3, t2, t1), none},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := nextNodeSecrets(tc.inForce, nodeSecretsInput{cookie: []byte(tc.cookie), token: []byte(tc.token), podsMayRun: tc.podsMayRun, cookieVouched: tc.vouched})
			refused := none
			switch {
			case d.withhold:
				refused = withhold
			case d.cookieRefused:
				refused = cookie
			case d.tokenRefused:
				refused = token
			}
			if d.withhold && !d.cookieRefused {
				t.Fatalf("withheld without a cookie refusal")
			}
			got := d.next
			if refused != tc.wantRefused || fmt.Sprintf("%s %s %q", got.Cookie, got.Token, got.PreviousTokens) !=
				fmt.Sprintf("%s %s %q", tc.want.Cookie, tc.want.Token, tc.want.PreviousTokens) {
				t.Fatalf("got %s %s %q refused=%q, want %s %s %q refused=%q", got.Cookie, got.Token, got.PreviousTokens, refused,
					tc.want.Cookie, tc.want.Token, tc.want.PreviousTokens, tc.wantRefused)
			}
		})
	}
}

// TestTokensRetirable: the replaced tokens go only once every ordinal's broker, on
// the current template, answered to the current token.
func TestTokensRetirable(t *testing.T) {
	staleToken := func(b *brokerPod) { b.staleToken = true }
	obs := func(pods ...*brokerPod) *lifecycle {
		return &lifecycle{observation: &observation{updateRevision: currentRev, pods: pods}, gathered: true}
	}
	for _, tc := range []struct {
		name string
		lc   *lifecycle
		want bool
	}{
		{"every broker on the current template and token", obs(bp(0), bp(1), bp(2)), true},
		{"one on an older template", obs(bp(0), bp(1), bp(2, older)), false},
		{"one answered only to a previous token", obs(bp(0), bp(1, staleToken), bp(2)), false},
		{"one does not answer", obs(bp(0), bp(1), bp(2, unreachable)), false},
		{"one has no pod", obs(bp(0), bp(1), bp(2, noPod)), false},
		{"brokers not asked", nil, false},
		{"revision unknown", &lifecycle{observation: &observation{pods: []*brokerPod{bp(0)}}, gathered: true}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tokensRetirable(tc.lc); got != tc.want {
				t.Fatalf("tokensRetirable = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestPodsMayRunConfirmsNoneWithTheAPIServer: "no pod may run" lets a new cookie in,
// so a cache that has not seen the StatefulSet scaled up, or a pod created, is not
// trusted for it.
func TestPodsMayRunConfirmsNoneWithTheAPIServer(t *testing.T) {
	mc := &v1alpha1.MQTTCluster{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "c"}}
	atZero := &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "c"}, Spec: appsv1.StatefulSetSpec{Replicas: ptr.To[int32](0)}}
	atThree := atZero.DeepCopy()
	atThree.Spec.Replicas = ptr.To[int32](3)
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "c-0", Labels: res.SelectorLabels(mc)}}
	for _, tc := range []struct {
		name       string
		cache, api []client.Object
		want       bool
	}{
		{"the cache and the API server see nothing", []client.Object{atZero}, []client.Object{atZero}, false},
		{"the cache lags a scale-up", []client.Object{atZero}, []client.Object{atThree}, true},
		{"the cache lags a new pod", []client.Object{atZero}, []client.Object{atZero, pod}, true},
		{"the cache lags the StatefulSet's creation", nil, []client.Object{atThree}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &MQTTClusterReconciler{
				Client:    fake.NewClientBuilder().WithObjects(copies(tc.cache)...).Build(),
				APIReader: fake.NewClientBuilder().WithObjects(copies(tc.api)...).Build(),
			}
			var cached *appsv1.StatefulSet
			for _, o := range tc.cache {
				if s, ok := o.(*appsv1.StatefulSet); ok {
					cached = s
				}
			}
			got, err := r.podsMayRun(context.Background(), mc, cached)
			if err != nil || got != tc.want {
				t.Fatalf("podsMayRun = %v, %v; want %v", got, err, tc.want)
			}
		})
	}
}

func copies(objs []client.Object) []client.Object {
	out := make([]client.Object, 0, len(objs))
	for _, o := range objs {
		out = append(out, o.DeepCopyObject().(client.Object))
	}
	return out
}

// TestNodeSecretDecidedOnTheSecretWritten: a write retried on a conflict decides on
// the Secret as it is then, so two quick rotations keep both replaced tokens.
func TestNodeSecretDecidedOnTheSecretWritten(t *testing.T) {
	mc := &v1alpha1.MQTTCluster{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "c"}}
	in := nodeSecretsInput{cookie: []byte("cookie"), token: []byte("D"), podsMayRun: true}
	b := &res.NodeSecretBuilder{Cluster: mc, Next: func(inForce *res.NodeSecrets) (res.NodeSecrets, error) {
		return nextNodeSecrets(inForce, in).next, nil
	}}
	// What a first read saw ({B}) is not what is written over ({C,[B]}, written by
	// the rotation before).
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: res.NodeSecretName(mc), ResourceVersion: "2"},
		Data: map[string][]byte{res.NodeCookieKey: []byte("cookie"), res.NodeTokenKey: []byte("C"), res.NodePreviousTokensKey: []byte(`["B"]`)}}
	if err := b.Mutate(s); err != nil {
		t.Fatal(err)
	}
	if got := string(s.Data[res.NodeTokenKey]) + " " + string(s.Data[res.NodePreviousTokensKey]); got != `D ["C","B"]` {
		t.Fatalf("wrote %s, want D [\"C\",\"B\"]", got)
	}
	s.Data[res.NodePreviousTokensKey] = []byte("{not json")
	if err := b.Mutate(s); !errors.Is(err, res.ErrUnreadableNodeSecret) {
		t.Fatalf("Mutate on an unreadable Secret: %v, want ErrUnreadableNodeSecret", err)
	}
}

// TestAskTellsRejectedTokensFromDead: a broker that answers 401 to every token is
// alive (tokenRejected), not unreachable like a dead one.
func TestAskTellsRejectedTokensFromDead(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = w.Write([]byte(`{"code":"unauthorized","message":"bad token"}`))
	}))
	defer srv.Close()
	b := &brokerPod{api: &brokerclient.Client{BaseURL: srv.URL, Token: "t2", Previous: []string{"t1"}}}
	b.ask(context.Background())
	if b.reachable() || !b.tokenRejected {
		t.Fatalf("reachable %v tokenRejected %v, want an unreachable node whose tokens were rejected", b.reachable(), b.tokenRejected)
	}
	dead := &brokerPod{api: &brokerclient.Client{BaseURL: "http://127.0.0.1:1", Token: "t2"}}
	dead.ask(context.Background())
	if dead.tokenRejected {
		t.Fatal("a broker that does not answer is not one that rejects the tokens")
	}
}
