package dedupe

import (
	"container/list"
	"context"
	"testing"
	"time"

	"github.com/startdeliver/segment-destination/shared/emulatortest"
)

func TestDoneAfterCompleteAcrossInstances(t *testing.T) {
	env := emulatortest.Require(t)
	fs, wire := emulatortest.CountingFirestore(t, env)
	col := emulatortest.Name(t, "deliveries")
	ctx := context.Background()
	a := New(fs, Options{Collection: col})
	if done, err := a.Done(ctx, "acct", "m-1"); err != nil || done {
		t.Fatalf("Done before Complete = %v, %v; want false", done, err)
	}
	if err := a.Complete(ctx, &Record{AccountID: "acct", MessageID: "m-1", Status: "delivered"}); err != nil {
		t.Fatal(err)
	}
	reads := wire.Reads.Load()
	if done, _ := a.Done(ctx, "acct", "m-1"); !done {
		t.Errorf("Done after Complete = false, want true")
	}
	if wire.Reads.Load() != reads {
		t.Errorf("the same instance read Firestore for a completion it made")
	}
	b := New(fs, Options{Collection: col}) // another instance, cold cache
	if done, err := b.Done(ctx, "acct", "m-1"); err != nil || !done {
		t.Errorf("another instance: Done = %v, %v; want true", done, err)
	}
	if done, _ := b.Done(ctx, "other-acct", "m-1"); done {
		t.Errorf("the same messageId of another account counts as done")
	}
	snap, err := fs.Collection(col).Doc(Key("acct", "m-1")).Get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	exp, _ := snap.Data()["expireAt"].(time.Time)
	if time.Until(exp) < 7*24*time.Hour {
		t.Errorf("expireAt = %v, want at least 7 days ahead", exp)
	}
}

func TestExpiredCompletionIsNotDone(t *testing.T) {
	env := emulatortest.Require(t)
	fs := emulatortest.Firestore(t, env)
	col := emulatortest.Name(t, "deliveries")
	past := func() time.Time { return time.Now().Add(-9 * 24 * time.Hour) }
	ctx := context.Background()
	if err := New(fs, Options{Collection: col, Now: past}).Complete(ctx, &Record{AccountID: "a", MessageID: "old", Status: "delivered"}); err != nil {
		t.Fatal(err)
	}
	if done, _ := New(fs, Options{Collection: col}).Done(ctx, "a", "old"); done {
		t.Errorf("a completion past its expiry still counts (the TTL sweep may lag)")
	}
}

func TestCacheIsBounded(t *testing.T) {
	s := &Store{size: 3, index: map[string]*list.Element{}}
	s.lru = list.New()
	for _, k := range []string{"a", "b", "c", "d"} {
		s.remember(k)
	}
	if s.cached("a") || !s.cached("d") || s.lru.Len() != 3 {
		t.Errorf("cache holds %d entries (a cached: %v), want the 3 most recent", s.lru.Len(), s.cached("a"))
	}
}
