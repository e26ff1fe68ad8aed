package controllers

import (
	"fmt"
	"testing"

	res "github.com/mqtt-operator/mqtt-operator/controllers/resource"
)

// TestNextNodeSecrets tables what the pods are given when the cookie or token
// Secrets change: a cookie change is refused while pods may run, a token change is
// taken at once with the replaced token kept for the operator's fallback.
func TestNextNodeSecrets(t *testing.T) {
	const (
		c1, c2     = "cookie-one-0123456789", "cookie-two-0123456789"
		t1, t2, t3 = "token-one-0123456789", "token-two-0123456789", "token-three-0123456789"
	)
	inForce := func(cookie, token string, previous ...string) *res.NodeSecrets {
		return &res.NodeSecrets{Cookie: []byte(cookie), Token: []byte(token), PreviousTokens: previous}
	}
	for _, tc := range []struct {
		name          string
		inForce       *res.NodeSecrets
		cookie, token string
		podsMayRun    bool
		want          *res.NodeSecrets
		wantRefused   bool
	}{
		{"first time: what the Secrets hold", nil, c1, t1, true, inForce(c1, t1), false},
		{"nothing changed", inForce(c1, t1), c1, t1, true, inForce(c1, t1), false},
		{"cookie changed while pods run: kept, refused", inForce(c1, t1), c2, t1, true, inForce(c1, t1), true},
		{"cookie changed with no pod: taken", inForce(c1, t1), c2, t1, false, inForce(c2, t1), false},
		{"cookie back to the one in force: no refusal", inForce(c1, t1), c1, t1, true, inForce(c1, t1), false},
		{"token changed: taken, the old one kept", inForce(c1, t1), c1, t2, true, inForce(c1, t2, t1), false},
		{"token changed again mid-roll: both kept, newest first", inForce(c1, t2, t1), c1, t3, true, inForce(c1, t3, t2, t1), false},
		{"token back to a previous one: current, not previous", inForce(c1, t2, t1), c1, t1, true, inForce(c1, t1, t2), false},
		{"roll in progress, nothing new: previous kept", inForce(c1, t2, t1), c1, t2, true, inForce(c1, t2, t1), false},
		{"token changed with no pod: nothing to fall back on", inForce(c1, t1), c1, t2, false, inForce(c1, t2), false},
		{"both changed while pods run: token taken, cookie refused", inForce(c1, t1), c2, t2, true, inForce(c1, t2, t1), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, refused := nextNodeSecrets(tc.inForce, []byte(tc.cookie), []byte(tc.token), tc.podsMayRun)
			if refused != tc.wantRefused || fmt.Sprintf("%s %s %q", got.Cookie, got.Token, got.PreviousTokens) !=
				fmt.Sprintf("%s %s %q", tc.want.Cookie, tc.want.Token, tc.want.PreviousTokens) {
				t.Fatalf("got %s %s %q refused=%v, want %s %s %q refused=%v", got.Cookie, got.Token, got.PreviousTokens, refused,
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
