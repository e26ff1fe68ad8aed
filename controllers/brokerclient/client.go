// Package brokerclient is the operator's side of mqttd's HTTP API (/api/v1, bearer
// token): the node and cluster verbs the lifecycle steps drive. The request and answer
// bodies and the error codes come from broker/apiv1, the dependency-free contract the
// broker serves.
package brokerclient

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/mqtt-operator/mqtt-operator/broker/apiv1"
)

// The bodies of the API, from the contract package.
type (
	// Node is GET /api/v1/node.
	Node = apiv1.Node
	// Member is one node in GET /api/v1/cluster.
	Member = apiv1.Member
	// Cluster is GET /api/v1/cluster.
	Cluster = apiv1.Cluster
	// Evacuation is GET /api/v1/node/evacuation.
	Evacuation = apiv1.Evacuation
)

// Error is an API error with its stable code (or a transport error: Code
// "unreachable").
type Error struct {
	Status  int
	Code    string `json:"code"`
	Message string `json:"message"`
	// Cause is the transport error of an "unreachable" one (such as a TLS
	// certificate that did not verify).
	Cause error `json:"-"`
}

func (e *Error) Error() string { return fmt.Sprintf("%s: %s", e.Code, e.Message) }

// Unwrap returns the transport error, if any.
func (e *Error) Unwrap() error { return e.Cause }

// CodeOf returns the stable code of err, or "".
func CodeOf(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}

// Client talks to one node.
type Client struct {
	// BaseURL is the node's API, e.g. http://10.0.0.5:8080.
	BaseURL string
	// Token is the bearer token.
	Token string
	// Previous are tokens the node may still run while a new one rolls out (mqttd
	// reads its token file only at start): a request refused as unauthorized is sent
	// again with each, and the one the node takes becomes Token for the client's
	// later requests.
	Previous []string
	// HTTP is the client to use (default: one with Timeout).
	HTTP *http.Client
	// Timeout bounds each request (default 10 s).
	Timeout time.Duration

	usesPrevious bool
}

// Node returns the node's state.
func (c *Client) Node(ctx context.Context) (*Node, error) {
	var n Node
	return &n, c.do(ctx, http.MethodGet, "/api/v1/node", nil, &n)
}

// Cluster returns the members as this node sees them.
func (c *Client) Cluster(ctx context.Context) (*Cluster, error) {
	var v Cluster
	return &v, c.do(ctx, http.MethodGet, "/api/v1/cluster", nil, &v)
}

// Bootstrap creates a new cluster with this node.
func (c *Client) Bootstrap(ctx context.Context) (*Node, error) {
	var n Node
	return &n, c.do(ctx, http.MethodPost, "/api/v1/cluster/bootstrap", nil, &n)
}

// Join makes this node join the cluster of the member at seed (its cluster address).
func (c *Client) Join(ctx context.Context, seed string) (*Node, error) {
	var n Node
	return &n, c.do(ctx, http.MethodPost, "/api/v1/cluster/join", apiv1.JoinRequest{Seed: seed}, &n)
}

// Leave makes this node leave the cluster.
func (c *Client) Leave(ctx context.Context) error {
	return c.do(ctx, http.MethodPost, "/api/v1/cluster/leave", nil, nil)
}

// ForceLeave removes node from the cluster through this member.
func (c *Client) ForceLeave(ctx context.Context, node string) error {
	return c.do(ctx, http.MethodPost, "/api/v1/cluster/force-leave", apiv1.ForceLeaveRequest{Node: node}, nil)
}

// Evacuate starts (or continues) moving this node's clients away.
func (c *Client) Evacuate(ctx context.Context) (*Evacuation, error) {
	var e Evacuation
	return &e, c.do(ctx, http.MethodPost, "/api/v1/node/evacuate", nil, &e)
}

// Evacuation returns the progress of an evacuation.
func (c *Client) Evacuation(ctx context.Context) (*Evacuation, error) {
	var e Evacuation
	return &e, c.do(ctx, http.MethodGet, "/api/v1/node/evacuation", nil, &e)
}

// Reset wipes the node's store.
func (c *Client) Reset(ctx context.Context) (*Node, error) {
	var n Node
	return &n, c.do(ctx, http.MethodPost, "/api/v1/node/reset", nil, &n)
}

// UsesPrevious reports whether the node took one of the Previous tokens and not the
// current one: it runs a token the operator has been asked to replace.
func (c *Client) UsesPrevious() bool { return c.usesPrevious }

func (c *Client) do(ctx context.Context, method, path string, body, out any) error {
	err := c.doWith(ctx, c.Token, method, path, body, out)
	for len(c.Previous) > 0 && unauthorized(err) {
		token := c.Previous[0]
		c.Previous = c.Previous[1:]
		err = c.doWith(ctx, token, method, path, body, out)
		if !answered(err) {
			return err
		}
		if !unauthorized(err) {
			// Only an answer past the node's authentication shows that it runs
			// this token; after a transport error nothing is known, so it is kept
			// as it was and no further token is sent.
			c.Token, c.usesPrevious = token, true
		}
	}
	return err
}

// answered reports whether the node answered the request over HTTP (nil, or an API
// error with a status), as opposed to a transport failure.
func answered(err error) bool {
	var e *Error
	return err == nil || (errors.As(err, &e) && e.Status != 0)
}

// Unauthorized reports whether err is the node refusing the bearer token (after
// every previous token, from a Client's requests): the node answers, but to none of
// the tokens the operator holds.
func Unauthorized(err error) bool { return unauthorized(err) }

// unauthorized reports whether the node refused the bearer token.
func unauthorized(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Status == http.StatusUnauthorized
}

func (c *Client) doWith(ctx context.Context, token, method, path string, body, out any) error {
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(c.BaseURL, "/")+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return &Error{Code: apiv1.CodeUnreachable, Message: err.Error(), Cause: err}
	}
	defer func() { _ = resp.Body.Close() }()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return &Error{Code: apiv1.CodeUnreachable, Message: err.Error()}
	}
	if resp.StatusCode >= 300 {
		e := &Error{Status: resp.StatusCode}
		if json.Unmarshal(raw, e) != nil || e.Code == "" {
			e.Code, e.Message = "http_"+fmt.Sprint(resp.StatusCode), strings.TrimSpace(string(raw))
		}
		return e
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("decoding %s %s: %w", method, path, err)
	}
	return nil
}
