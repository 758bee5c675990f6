package journey

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/firestore/apiv1/firestorepb"
	"google.golang.org/grpc"

	"github.com/startdeliver/segment-destination/shared/emulatortest"
)

// firestoreCounter counts Firestore RPCs by method and the documents they
// return, as Firestore bills reads.
type firestoreCounter struct {
	mu    sync.Mutex
	calls map[string]int
	docs  int
}

func (c *firestoreCounter) unary(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, inv grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	c.add(method, 0)
	return inv(ctx, method, req, reply, cc, opts...)
}

func (c *firestoreCounter) stream(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, s grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	c.add(method, 0)
	cs, err := s(ctx, desc, cc, method, opts...)
	return &countingStream{ClientStream: cs, c: c}, err
}

type countingStream struct {
	grpc.ClientStream
	c *firestoreCounter
}

func (s *countingStream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if err == nil {
		switch r := m.(type) {
		case *firestorepb.RunQueryResponse:
			if r.Document != nil {
				s.c.add("", 1)
			}
		case *firestorepb.BatchGetDocumentsResponse:
			if r.GetFound() != nil {
				s.c.add("", 1)
			}
		}
	}
	return err
}

func (c *firestoreCounter) add(method string, docs int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if method != "" {
		c.calls[method[strings.LastIndex(method, "/")+1:]]++
	}
	c.docs += docs
}

func (c *firestoreCounter) take() (map[string]int, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	calls, docs := c.calls, c.docs
	c.calls, c.docs = map[string]int{}, 0
	return calls, docs
}

// TestConsoleReadCost counts what the console costs in Firestore: a page
// view lists the account's recent events (one query, one document read per
// event shown) and opening an event is one document read. The figures are
// in docs/benchmarks.md.
func TestConsoleReadCost(t *testing.T) {
	env := emulatortest.Require(t)
	cnt := &firestoreCounter{calls: map[string]int{}}
	fs := emulatortest.FirestoreWith(t, env, grpc.WithUnaryInterceptor(cnt.unary), grpc.WithStreamInterceptor(cnt.stream))
	col := emulatortest.Name(t, "deliveries")
	ctx := context.Background()
	now := time.Now()
	for i := range 60 {
		rec := &Record{AccountID: "acct", MessageID: fmt.Sprint("m", i), Status: StatusDelivered, Type: "track",
			CompletedAt: now.Add(time.Duration(i) * time.Second), ExpireAt: now.Add(time.Hour)}
		if _, err := fs.Collection(col).Doc(DocumentID("acct", rec.MessageID)).Set(ctx, rec); err != nil {
			t.Fatal(err)
		}
	}
	r := NewReader(fs, col)
	cnt.take()

	recs, err := r.List(ctx, "acct", Filter{})
	if err != nil || len(recs) != DefaultLimit {
		t.Fatalf("List = %d records, %v", len(recs), err)
	}
	calls, docs := cnt.take()
	t.Logf("page view (default listing of %d): calls %v, documents read %d", DefaultLimit, calls, docs)
	if calls["RunQuery"] != 1 || len(calls) != 1 || docs != DefaultLimit {
		t.Errorf("a page view cost calls %v and %d documents; want one query reading %d", calls, docs, DefaultLimit)
	}
	if _, err := r.Get(ctx, "acct", "m7"); err != nil {
		t.Fatal(err)
	}
	calls, docs = cnt.take()
	t.Logf("opening one event: calls %v, documents read %d", calls, docs)
	if calls["BatchGetDocuments"] != 1 || len(calls) != 1 || docs != 1 {
		t.Errorf("opening an event cost calls %v and %d documents; want one read of one document", calls, docs)
	}
	if _, err := r.Get(ctx, "acct", "none"); err == nil {
		t.Fatal("Get of no record succeeded")
	}
	calls, docs = cnt.take()
	if calls["BatchGetDocuments"] != 1 || docs != 0 {
		t.Errorf("an unknown messageId cost calls %v and %d documents; want one read call finding nothing", calls, docs)
	}
}
