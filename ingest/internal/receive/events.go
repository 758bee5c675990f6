package receive

import (
	"context"
	"encoding/json"
	"errors"
	"hash/maphash"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/startdeliver/segment-destination/ingest/internal/explain"
	"github.com/startdeliver/segment-destination/shared/account"
	"github.com/startdeliver/segment-destination/shared/accountstore"
	"github.com/startdeliver/segment-destination/shared/journey"
	"github.com/startdeliver/segment-destination/shared/segment"
)

// This file serves "where is my event" and explain (docs/api.md § Probes and the event console): GET
// /v1/events/{messageId}, GET /v1/events and POST /v1/explain, each
// authenticated like the Tracking API, so that an account sees only its own
// events. None of them writes anything.

// records reads the event records deliver writes (journey.Reader): Get
// answers journey.ErrNotFound for no record (or another account's), List the
// account's records newest first. Any other error means it cannot tell.
// Safe for concurrent use.
type records interface {
	Get(ctx context.Context, accountID, messageID string) (*journey.Record, error)
	List(ctx context.Context, accountID string, f journey.Filter) ([]*journey.Record, error)
}

// configs returns an account's configuration (accountstore.Store.Get), for
// explain. Safe for concurrent use.
type configs interface {
	Get(ctx context.Context, id string) (*accountstore.Entry, error)
}

// notFoundMessage is the one answer for an event with no record, whoever
// asks: an unknown messageId and another account's look the same.
const notFoundMessage = "no record of this event for this account: it may still be queued (deliver records an event once it is processed), or the messageId is not one of this account's events of the last 8 days"

// eventView is a record as the API shows it.
type eventView struct {
	*journey.Record
	// Payload is the event's properties and traits, when the operator
	// keeps them.
	Payload json.RawMessage `json:"payload,omitempty"`
	// TraceURL links to the event's trace in Cloud Trace; TraceCommand is
	// the local command that prints it.
	TraceURL     string `json:"traceUrl,omitempty"`
	TraceCommand string `json:"traceCommand,omitempty"`
}

func (h *Handler) view(rec *journey.Record) eventView {
	r := *rec
	if r.Calls == nil {
		r.Calls = []journey.Call{}
	}
	if r.Dropped == nil {
		r.Dropped = []journey.Dropped{}
	}
	v := eventView{Record: &r}
	if r.Payload != "" && json.Valid([]byte(r.Payload)) {
		v.Payload = json.RawMessage(r.Payload)
	}
	if r.TraceID != "" {
		if h.opts.TraceURL != nil {
			v.TraceURL = h.opts.TraceURL(r.TraceID)
		} else {
			v.TraceCommand = "bin/tracetree -message " + strconv.Quote(r.MessageID)
		}
	}
	return v
}

// eventsAccount authenticates a request to the events and explain
// endpoints: the key of the Basic Authorization header, as for the
// Tracking API (these requests have no body to carry a writeKey).
func (h *Handler) eventsAccount(r *http.Request) (key, accountID string, herr *httpError) {
	key, accountID, present, herr := h.headerAccount(r.Context(), r)
	if herr == nil && !present {
		herr = fail(http.StatusUnauthorized, "missing Authorization: Basic base64(<api key>:)")
	}
	return key, accountID, herr
}

// event serves GET /v1/events/{messageId}.
func (h *Handler) event(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	_, accountID, herr := h.eventsAccount(r)
	if herr != nil {
		h.answer(ctx, w, herr)
		return
	}
	if h.opts.Records == nil {
		h.answer(ctx, w, fail(http.StatusNotFound, "event records are not served here"))
		return
	}
	id := r.PathValue("messageId")
	if id == "" || len(id) > segment.MaxMessageIDLen {
		h.answer(ctx, w, fail(http.StatusBadRequest, "messageId must be 1 to %d characters", segment.MaxMessageIDLen))
		return
	}
	rec, err := h.opts.Records.Get(ctx, accountID, id)
	switch {
	case errors.Is(err, journey.ErrNotFound):
		if at, ok := h.recent.published(accountID, id); ok {
			writeJSON(w, http.StatusOK, h.view(&journey.Record{MessageID: id, Status: journey.StatusPending, ReceivedAt: at}))
			return
		}
		h.answer(ctx, w, fail(http.StatusNotFound, notFoundMessage).about(accountID, ""))
		return
	case err != nil:
		h.answer(ctx, w, (&httpError{status: http.StatusServiceUnavailable, msg: "cannot read event records right now; retry", err: err}).about(accountID, ""))
		return
	}
	writeJSON(w, http.StatusOK, h.view(rec))
}

// events serves GET /v1/events?limit=&userId=&type=&status=.
func (h *Handler) events(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	_, accountID, herr := h.eventsAccount(r)
	if herr != nil {
		h.answer(ctx, w, herr)
		return
	}
	if h.opts.Records == nil {
		h.answer(ctx, w, fail(http.StatusNotFound, "event records are not served here"))
		return
	}
	q := r.URL.Query()
	f := journey.Filter{UserID: q.Get("userId"), Type: q.Get("type"), Status: q.Get("status")}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > journey.MaxLimit {
			h.answer(ctx, w, fail(http.StatusBadRequest, "limit must be a number from 1 to %d", journey.MaxLimit))
			return
		}
		f.Limit = n
	}
	if len(f.UserID) > 1024 {
		h.answer(ctx, w, fail(http.StatusBadRequest, "userId longer than 1024 bytes"))
		return
	}
	if f.Type != "" && !segment.Type(f.Type).Known() {
		h.answer(ctx, w, fail(http.StatusBadRequest, "type must be one of identify, track, page, screen, group, alias"))
		return
	}
	switch f.Status {
	case "", journey.StatusPending, journey.StatusDelivered, journey.StatusDuplicate, journey.StatusSkipped, journey.StatusDeadLettered, journey.StatusRetrying:
	default:
		h.answer(ctx, w, fail(http.StatusBadRequest, "status must be one of pending, delivered, duplicate, skipped, dead_lettered, retrying"))
		return
	}
	recs, err := h.opts.Records.List(ctx, accountID, f)
	if err != nil {
		h.answer(ctx, w, (&httpError{status: http.StatusServiceUnavailable, msg: "cannot read event records right now; retry", err: err}).about(accountID, ""))
		return
	}
	out := make([]eventView, 0, len(recs))
	for _, rec := range recs {
		out = append(out, h.view(rec))
	}
	writeJSON(w, http.StatusOK, map[string]any{"events": out})
}

// explain serves POST /v1/explain[?lookup=true]: the plan the account's
// current configuration gives one event, without a write anywhere.
func (h *Handler) explain(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	// As the event endpoints: the key from the header before the body is
	// read, and the body through the pre-pass.
	b := &budget{h: h}
	defer b.release()
	req, sc, herr := h.intake(ctx, r, segment.MaxEventBytes, false, b)
	if herr != nil {
		h.answer(ctx, w, herr)
		return
	}
	key, accountID := req.key, req.accountID
	if h.opts.Configs == nil || h.opts.Explainer == nil {
		h.answer(ctx, w, fail(http.StatusNotFound, "explain is not served here"))
		return
	}
	var header account.SettingsOverride
	if v := r.Header.Get("X-Segment-Settings"); v != "" {
		// The same checks as POST /: a header deliver could not apply is
		// refused here too.
		o, err := account.ParseSettingsHeader(v)
		if err == nil {
			err = o.Validate()
		}
		if err != nil {
			h.answer(ctx, w, fail(http.StatusBadRequest, "%v", err).about(accountID, ""))
			return
		}
		header = o
	}
	lookup := false
	if v := r.URL.Query().Get("lookup"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			h.answer(ctx, w, fail(http.StatusBadRequest, "lookup must be true or false"))
			return
		}
		lookup = b
	}
	ev, err := segment.DecodeScanned(req.body, sc)
	if err != nil {
		h.answer(ctx, w, fail(http.StatusBadRequest, "%v", err))
		return
	}
	// As prepare does, without counting the event as received.
	ev.DropWriteKey()
	if ev.MessageID == "" {
		ev.SetMessageID(h.opts.NewID())
	}
	if ev.ReceivedAt.IsZero() {
		ev.SetReceivedAt(h.opts.Now())
	}
	if err := ev.Validate(); err != nil {
		h.answer(ctx, w, fail(http.StatusBadRequest, "invalid event: %v", err))
		return
	}
	entry, err := h.opts.Configs.Get(ctx, accountID)
	if err != nil {
		h.answer(ctx, w, (&httpError{status: http.StatusServiceUnavailable, msg: "cannot load the account's configuration right now; retry", err: err}).about(accountID, ev.MessageID))
		return
	}
	res := h.opts.Explainer.Explain(ctx, explain.Input{Event: ev, Entry: entry, Header: header, APIKey: key, Lookup: lookup})
	writeJSON(w, http.StatusOK, res)
}

// recentLimit bounds the publications remembered for "pending".
const recentLimit = 50_000

// recentTTL is how long a publication without a record answers "pending":
// past it, the event is as likely lost to a misconfiguration as queued, and
// the 404 says "may still be queued".
const recentTTL = time.Hour

// recent remembers the events this instance published lately, so that GET
// /v1/events/{messageId} can answer "pending" for one deliver has not
// recorded yet without a write per event. It knows only this instance's
// publications: another instance's answer 404 ("may still be queued").
// Safe for concurrent use.
//
// It holds no strings: a publication is two 64-bit hashes of its account
// and messageId under two random seeds, one indexing it and both checked on
// a lookup. Adding one hashes its key twice instead of building it, and
// allocates nothing; the collector has no pointers to scan among the
// 50,000 slots, and no copy of each messageId is kept. Two publications
// whose index hashes collide (about one in 2^64 per pair) share a slot,
// the older forgotten: its lookup answers 404 ("may still be queued")
// instead of "pending".
type recent struct {
	mu    sync.Mutex
	ring  []recentEntry    // limit slots, the oldest overwritten first
	next  int              // the slot written next
	index map[uint64]int32 // hash under seeds[0] -> slot
	seeds [2]maphash.Seed
	limit int
	now   func() time.Time
}

// recentEntry is one slot; used is false in a slot that holds nothing.
type recentEntry struct {
	h    [2]uint64
	at   int64 // Unix nanoseconds
	used bool
}

func newRecent(now func() time.Time) *recent {
	return newRecentLimit(now, recentLimit)
}

func newRecentLimit(now func() time.Time, limit int) *recent {
	return &recent{index: map[uint64]int32{}, seeds: [2]maphash.Seed{maphash.MakeSeed(), maphash.MakeSeed()}, limit: limit, now: now}
}

// hashes returns the publication's two hashes.
func (c *recent) hashes(accountID, messageID string) [2]uint64 {
	var h [2]uint64
	for i, seed := range c.seeds {
		var d maphash.Hash
		d.SetSeed(seed)
		d.WriteString(accountID)
		d.WriteByte(0)
		d.WriteString(messageID)
		h[i] = d.Sum64()
	}
	return h
}

// add remembers a publication. A messageId published again moves to the
// newest slot, as in a list kept in order of use.
func (c *recent) add(accountID, messageID string) {
	h := c.hashes(accountID, messageID)
	at := c.now().UnixNano()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ring == nil {
		c.ring = make([]recentEntry, c.limit)
	}
	if slot, ok := c.index[h[0]]; ok {
		c.ring[slot] = recentEntry{}
	}
	if old := c.ring[c.next]; old.used {
		delete(c.index, old.h[0])
	}
	c.ring[c.next] = recentEntry{h: h, at: at, used: true}
	c.index[h[0]] = int32(c.next)
	c.next = (c.next + 1) % len(c.ring)
}

func (c *recent) published(accountID, messageID string) (time.Time, bool) {
	h := c.hashes(accountID, messageID)
	c.mu.Lock()
	defer c.mu.Unlock()
	slot, ok := c.index[h[0]]
	if !ok || !c.ring[slot].used || c.ring[slot].h != h {
		return time.Time{}, false
	}
	at := time.Unix(0, c.ring[slot].at).UTC()
	return at, c.now().Sub(at) < recentTTL
}
