package emulatortest

import (
	"context"
	"path"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"cloud.google.com/go/firestore"
	"cloud.google.com/go/firestore/apiv1/firestorepb"
	"google.golang.org/grpc"
)

// Wire counts a Firestore client's document reads and writes as they cross
// the wire, and its calls, whichever store makes them: tests observe what
// a store costs here, not through counters in the store itself.
type Wire struct {
	// Reads counts documents read: BatchGetDocuments results (found or
	// missing) and query results. Writes counts the writes of Commit and
	// BatchWrite calls.
	Reads, Writes atomic.Int64

	byCollection sync.Map // collection id → *atomic.Int64 of documents read
	byMethod     sync.Map // method name ("Commit") → *atomic.Int64 of calls
}

// Calls is how many calls of the named Firestore methods were made
// ("BatchGetDocuments", "Commit", "BatchWrite", "BeginTransaction", ...),
// counted as they leave, failed ones included; with no name, of every
// method.
func (w *Wire) Calls(methods ...string) int64 {
	var n int64
	w.byMethod.Range(func(k, v any) bool {
		if len(methods) == 0 || slices.Contains(methods, k.(string)) {
			n += v.(*atomic.Int64).Load()
		}
		return true
	})
	return n
}

// call counts one call of the gRPC method (its full name).
func (w *Wire) call(method string) {
	counter(&w.byMethod, path.Base(method)).Add(1)
}

// ReadsOf is how many of Reads were documents of the collection col (its
// id, the last path segment before the document's).
func (w *Wire) ReadsOf(col string) int64 {
	if n, ok := w.byCollection.Load(col); ok {
		return n.(*atomic.Int64).Load()
	}
	return 0
}

// read counts one document read, by its resource name.
func (w *Wire) read(name string) {
	w.Reads.Add(1)
	counter(&w.byCollection, path.Base(path.Dir(name))).Add(1)
}

// counter is m's counter for key, made on first use.
func counter(m *sync.Map, key string) *atomic.Int64 {
	n, ok := m.Load(key)
	if !ok {
		n, _ = m.LoadOrStore(key, new(atomic.Int64))
	}
	return n.(*atomic.Int64)
}

// CountingFirestore is Firestore with every call counted in the Wire it
// returns. opts are dialled as well; their interceptors run after the
// counting ones, nearer the wire (a test's interceptor that holds or fails
// calls sees them counted first).
func CountingFirestore(t testing.TB, e Env, opts ...grpc.DialOption) (*firestore.Client, *Wire) {
	t.Helper()
	w := &Wire{}
	counting := []grpc.DialOption{
		grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			w.call(method)
			switch r := req.(type) {
			case *firestorepb.CommitRequest:
				w.Writes.Add(int64(len(r.Writes)))
			case *firestorepb.BatchWriteRequest:
				w.Writes.Add(int64(len(r.Writes)))
			}
			return invoker(ctx, method, req, reply, cc, opts...)
		}),
		grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
			w.call(method)
			s, err := streamer(ctx, desc, cc, method, opts...)
			if err != nil {
				return nil, err
			}
			return countingStream{ClientStream: s, w: w}, nil
		}),
	}
	c := FirestoreWith(t, e, append(counting, opts...)...)
	return c, w
}

type countingStream struct {
	grpc.ClientStream
	w *Wire
}

func (s countingStream) RecvMsg(m any) error {
	if err := s.ClientStream.RecvMsg(m); err != nil {
		return err
	}
	switch r := m.(type) {
	case *firestorepb.BatchGetDocumentsResponse:
		if f := r.GetFound(); f != nil {
			s.w.read(f.GetName())
		} else if m := r.GetMissing(); m != "" {
			s.w.read(m)
		}
	case *firestorepb.RunQueryResponse:
		if d := r.GetDocument(); d != nil {
			s.w.read(d.GetName())
		}
	}
	return nil
}
