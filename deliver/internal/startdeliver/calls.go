package startdeliver

import (
	"context"
	"net/http"
	"sync"
)

// Call is one HTTP request made to Startdeliver, as an event's record shows
// it: the method, the route template ("/user/{id}", never ids or query
// values) and the answer's status (0 when none came).
type Call struct {
	Method string `json:"method"`
	Route  string `json:"route"`
	Status int    `json:"status"`
}

// Calls collects the requests made under a context (WithCalls), retries
// included. Safe for concurrent use.
type Calls struct {
	mu   sync.Mutex
	list []Call
}

type callsKey struct{}

// WithCalls returns a context under which every request the client makes
// is added to calls.
func WithCalls(ctx context.Context, calls *Calls) context.Context {
	return context.WithValue(ctx, callsKey{}, calls)
}

// List returns the calls so far, in the order they were answered.
func (c *Calls) List() []Call {
	if c == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Call(nil), c.list...)
}

func record(ctx context.Context, cl call, resp *http.Response) {
	calls, _ := ctx.Value(callsKey{}).(*Calls)
	if calls == nil {
		return
	}
	status := 0
	if resp != nil {
		status = resp.StatusCode
	}
	calls.mu.Lock()
	calls.list = append(calls.list, Call{Method: cl.method, Route: cl.route, Status: status})
	calls.mu.Unlock()
}
