package cluster

import (
	"cmp"
	"context"
	"slices"
	"sync"
	"time"

	"github.com/mqtt-operator/mqtt-operator/broker/apiv1"
)

// Manager answers the management queries of the HTTP API on this node: name is the
// query, params and the answer are JSON. A peer's API asks it through the link
// (opManage), so GET /api/v1/clients and the like answer for the whole cluster.
type Manager func(name string, params []byte) ([]byte, error)

// SetManager installs the answerer of management queries from peers.
func (n *Node) SetManager(m Manager) { n.manager.Store(&m) }

// manageTimeout bounds how long one peer may take to answer a management query.
const manageTimeout = 5 * time.Second

func (n *Node) answerManage(req *request) *response {
	m := n.manager.Load()
	if m == nil {
		return errResponse(errorf(apiv1.CodeInternal, "this node answers no management queries yet"))
	}
	out, err := (*m)(req.Name, req.Data)
	if err != nil {
		return errResponse(err)
	}
	return &response{Data: out}
}

// Answer is one peer's answer to a management query.
type Answer struct {
	Node string
	Data []byte
	Err  error // the peer answered with an error (not unreachable)
}

// AskPeers sends a management query to every other member of the cluster at once and
// returns their answers, sorted by node, and the members that could not be asked or
// did not answer in time, sorted. Without membership (a node outside any cluster)
// both are empty.
func (n *Node) AskPeers(ctx context.Context, name string, params []byte) ([]Answer, []string) {
	var (
		mu          sync.Mutex
		answers     []Answer
		unreachable []string
	)
	var wg sync.WaitGroup
	for _, peer := range n.mem.memberNames() {
		if peer == n.cfg.Name {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			wait := manageTimeout
			if d, ok := ctx.Deadline(); ok {
				wait = min(wait, time.Until(d))
			}
			resp, err := n.routes.requestLate(peer, &request{Op: opManage, Name: name, Data: params}, wait, nil)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil:
				unreachable = append(unreachable, peer)
			case resp.Code == apiv1.CodeBadRequest && resp.Message == `unknown request "manage"`:
				unreachable = append(unreachable, peer) // an older node: it cannot answer
			default:
				answers = append(answers, Answer{Node: peer, Data: resp.Data, Err: resp.err()})
			}
		}()
	}
	wg.Wait()
	slices.SortFunc(answers, func(a, b Answer) int { return cmp.Compare(a.Node, b.Node) })
	slices.Sort(unreachable)
	return answers, unreachable
}
