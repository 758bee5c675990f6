package emulatortest

import (
	"context"
	"path"
	"strings"
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
	// ReadCalls counts BatchGetDocuments calls; WriteCalls Commit and
	// BatchWrite calls; BeginCalls BeginTransaction calls.
	ReadCalls, WriteCalls, BeginCalls atomic.Int64

	byCollection sync.Map // collection id → *atomic.Int64 of documents read
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
	col := path.Base(path.Dir(name))
	n, ok := w.byCollection.Load(col)
	if !ok {
		n, _ = w.byCollection.LoadOrStore(col, new(atomic.Int64))
	}
	n.(*atomic.Int64).Add(1)
}

// CountingFirestore is Firestore with every call counted in the Wire it
// returns.
func CountingFirestore(t testing.TB, e Env) (*firestore.Client, *Wire) {
	t.Helper()
	w := &Wire{}
	c := FirestoreWith(t, e,
		grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			switch r := req.(type) {
			case *firestorepb.CommitRequest:
				w.Writes.Add(int64(len(r.Writes)))
				w.WriteCalls.Add(1)
			case *firestorepb.BatchWriteRequest:
				w.Writes.Add(int64(len(r.Writes)))
				w.WriteCalls.Add(1)
			case *firestorepb.BeginTransactionRequest:
				w.BeginCalls.Add(1)
			}
			return invoker(ctx, method, req, reply, cc, opts...)
		}),
		grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
			if strings.HasSuffix(method, "/BatchGetDocuments") {
				w.ReadCalls.Add(1)
			}
			s, err := streamer(ctx, desc, cc, method, opts...)
			if err != nil {
				return nil, err
			}
			return countingStream{ClientStream: s, w: w}, nil
		}),
	)
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
