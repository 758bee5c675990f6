// Package receive is ingest's HTTP API: Segment's destination endpoint and
// the Segment HTTP Tracking API. It authenticates, validates and publishes
// each event, and answers 2xx only once every accepted event is confirmed
// published (docs/api.md §1).
package receive

import (
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/startdeliver/segment-destination/ingest/internal/explain"
	"github.com/startdeliver/segment-destination/shared/account"
	"github.com/startdeliver/segment-destination/shared/accountstore"
	"github.com/startdeliver/segment-destination/shared/envelope"
	"github.com/startdeliver/segment-destination/shared/segment"
	"github.com/startdeliver/segment-destination/shared/telemetry"
)

// publisher publishes one message and blocks until Pub/Sub confirms it, ctx
// ends, or publishing fails. It is called from many goroutines at once.
type publisher interface {
	Publish(ctx context.Context, msg *envelope.Encoded) (id string, err error)
}

// accounts says whether an account may send events. Check returns nil for an
// enabled account, an error matching accountstore.ErrUnknown or
// accountstore.ErrDisabled, or any other error when it cannot tell (the caller
// answers 503). Safe for concurrent use.
type accounts interface {
	Check(ctx context.Context, accountID string) error
}

// readiness reports whether the service can do its work now.
type readiness interface {
	Ready(ctx context.Context) error
}

// Options configure a Handler. Publisher and Accounts are required.
type Options struct {
	Publisher publisher
	Accounts  accounts
	Ready     readiness
	// Topic names the Pub/Sub topic in spans.
	Topic  string
	Logger *slog.Logger
	// Now and NewID are replaced in tests.
	Now   func() time.Time
	NewID func() string
	// Records, Configs and Explainer serve the events and explain
	// endpoints (events.go); nil ones answer 404. TraceURL links a trace
	// id to its trace (Cloud Trace); nil shows the local tracetree command.
	Records   records
	Configs   configs
	Explainer *explain.Explainer
	TraceURL  func(traceID string) string
}

// Handler serves ingest's HTTP API.
type Handler struct {
	opts    Options
	mux     *http.ServeMux
	tracer  trace.Tracer
	log     *slog.Logger
	metrics *metrics
	recent  *recent // publications for "pending" (events.go)
}

// New returns the ingest handler.
func New(opts Options) *Handler {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.NewID == nil {
		opts.NewID = uuid.NewString
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	h := &Handler{
		opts:    opts,
		mux:     http.NewServeMux(),
		tracer:  otel.Tracer("github.com/startdeliver/segment-destination/ingest/receive"),
		log:     opts.Logger,
		metrics: newMetrics(otel.Meter("github.com/startdeliver/segment-destination/ingest/receive")),
		recent:  newRecent(opts.Now),
	}
	h.mux.HandleFunc("POST /{$}", h.destination)
	h.mux.HandleFunc("POST /v1/batch", h.batch)
	h.mux.HandleFunc("POST /v1/{type}", h.tracking)
	h.mux.HandleFunc("POST /v1/import", h.batch)
	h.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	h.mux.HandleFunc("GET /readyz", h.readyz)
	h.mux.HandleFunc("GET /v1/events/{messageId}", h.event)
	h.mux.HandleFunc("GET /v1/events", h.events)
	h.mux.HandleFunc("POST /v1/explain", h.explain)
	h.mux.Handle("GET /console/", consoleHandler())
	h.mux.Handle("GET /console", http.RedirectHandler("/console/", http.StatusMovedPermanently))
	return h
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mux.ServeHTTP(w, r)
}

// httpError is an answer other than 200, with a message safe to show.
type httpError struct {
	status int
	msg    string
	err    error // the cause, for logs; never shown to the caller
	// account (the key's hash) and messageID, when known, for the log
	// line and the server span.
	account, messageID string
}

// about records the account and event an error concerns, and returns it.
func (e *httpError) about(accountID, messageID string) *httpError {
	if e != nil {
		e.account, e.messageID = accountID, messageID
	}
	return e
}

// reason is a short, bounded label for metrics.
func (e *httpError) reason() string {
	switch e.status {
	case http.StatusBadRequest:
		return "invalid"
	case http.StatusUnauthorized:
		return "unauthenticated"
	case http.StatusForbidden:
		return "disabled"
	case http.StatusRequestEntityTooLarge:
		return "too_large"
	case http.StatusUnsupportedMediaType:
		return "unsupported_media"
	case http.StatusNotFound:
		return "not_found"
	case http.StatusServiceUnavailable:
		return "unavailable"
	}
	return "error"
}

func (e *httpError) Error() string { return fmt.Sprintf("%d %s", e.status, e.msg) }

func fail(status int, format string, args ...any) *httpError {
	return &httpError{status: status, msg: fmt.Sprintf(format, args...)}
}

func (h *Handler) readyz(w http.ResponseWriter, r *http.Request) {
	if h.opts.Ready != nil {
		ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
		defer cancel()
		if err := h.opts.Ready.Ready(ctx); err != nil {
			h.log.WarnContext(ctx, "not ready", "error", err)
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"message": "not ready: cannot reach Pub/Sub"})
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

// request is what every endpoint learns before it handles events.
type request struct {
	key       string
	accountID string
	settings  json.RawMessage
	body      []byte
}

// readBody checks the content type and encoding and reads the body within
// limit bytes after decompression.
func readBody(r *http.Request, limit int64) ([]byte, *httpError) {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || !(mt == "application/json" || mt == "text/plain" || strings.HasSuffix(mt, "+json")) {
			return nil, fail(http.StatusUnsupportedMediaType, "unsupported Content-Type %q: send application/json", truncate(ct, 60))
		}
	}
	if r.ContentLength > limit && r.Header.Get("Content-Encoding") == "" {
		return nil, fail(http.StatusRequestEntityTooLarge, "request body larger than %d bytes", limit)
	}
	var src io.Reader = r.Body
	switch enc := strings.ToLower(strings.TrimSpace(r.Header.Get("Content-Encoding"))); enc {
	case "", "identity":
	case "gzip", "x-gzip":
		zr, err := gzip.NewReader(io.LimitReader(r.Body, limit+1))
		if err != nil {
			return nil, fail(http.StatusBadRequest, "body is not valid gzip: %v", err)
		}
		defer zr.Close()
		src = zr
	default:
		return nil, fail(http.StatusUnsupportedMediaType, "unsupported Content-Encoding %q: send gzip or none", truncate(enc, 30))
	}
	body, err := io.ReadAll(io.LimitReader(src, limit+1))
	if err != nil {
		var maxErr *http.MaxBytesError
		if errors.As(err, &maxErr) {
			return nil, fail(http.StatusRequestEntityTooLarge, "request body larger than %d bytes", limit)
		}
		if errors.Is(err, gzip.ErrChecksum) || errors.Is(err, gzip.ErrHeader) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, fail(http.StatusBadRequest, "body is not valid gzip: %v", err)
		}
		return nil, &httpError{status: http.StatusBadRequest, msg: "could not read the request body", err: err}
	}
	if int64(len(body)) > limit {
		return nil, fail(http.StatusRequestEntityTooLarge, "request body larger than %d bytes", limit)
	}
	return body, nil
}

// headerKey returns the API key of a Basic Authorization header: the
// username, the password being empty. ok is false when the header is absent.
func headerKey(r *http.Request) (key string, present bool, herr *httpError) {
	if r.Header.Get("Authorization") == "" {
		return "", false, nil
	}
	user, pass, ok := r.BasicAuth()
	if !ok {
		return "", true, fail(http.StatusUnauthorized, "Authorization must be Basic with the API key as username")
	}
	if user == "" {
		user = pass // some clients put the key in the password
	}
	if user == "" {
		return "", true, fail(http.StatusUnauthorized, "no API key in the Authorization header")
	}
	return user, true, nil
}

// authorize resolves the account of key.
func (h *Handler) authorize(ctx context.Context, key string) (string, *httpError) {
	id := envelope.AccountID(key)
	err := h.opts.Accounts.Check(ctx, id)
	switch {
	case err == nil:
		return id, nil
	case errors.Is(err, accountstore.ErrUnknown):
		return "", fail(http.StatusUnauthorized, "unknown API key").about(id, "")
	case errors.Is(err, accountstore.ErrDisabled):
		return "", fail(http.StatusForbidden, "account is disabled").about(id, "")
	default:
		return "", (&httpError{status: http.StatusServiceUnavailable, msg: "cannot check the API key right now; retry", err: err}).about(id, "")
	}
}

// headerAccount authorizes the key of the Authorization header, when there
// is one (present reports it).
func (h *Handler) headerAccount(ctx context.Context, r *http.Request) (key, accountID string, present bool, herr *httpError) {
	if key, present, herr = headerKey(r); herr != nil || !present {
		return key, "", present, herr
	}
	accountID, herr = h.authorize(ctx, key)
	return key, accountID, true, herr
}

// writeKeyAccount authorizes a body's writeKey, the Tracking API's other
// place for the key.
func (h *Handler) writeKeyAccount(ctx context.Context, writeKey string) (string, *httpError) {
	if writeKey == "" {
		return "", fail(http.StatusUnauthorized, "missing API key: send it as the Basic auth username or as writeKey")
	}
	return h.authorize(ctx, writeKey)
}

// destination serves POST /: one event as Segment delivers it to a partner
// destination.
func (h *Handler) destination(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	body, herr := readBody(r, segment.MaxEventBytes)
	if herr != nil {
		h.answer(ctx, w, herr)
		return
	}
	key, present, herr := headerKey(r)
	if herr == nil && !present {
		herr = fail(http.StatusUnauthorized, "missing Authorization: Basic base64(<api key>:)")
	}
	if herr != nil {
		h.answer(ctx, w, herr)
		return
	}
	accountID, herr := h.authorize(ctx, key)
	if herr != nil {
		h.answer(ctx, w, herr)
		return
	}
	var settings json.RawMessage
	if v := r.Header.Get("X-Segment-Settings"); v != "" {
		o, err := account.ParseSettingsHeader(v)
		if err != nil {
			h.answer(ctx, w, fail(http.StatusBadRequest, "X-Segment-Settings: %v", err))
			return
		}
		if settings, err = json.Marshal(o); err != nil {
			h.answer(ctx, w, &httpError{status: http.StatusInternalServerError, msg: "could not encode settings", err: err})
			return
		}
	}
	ev, herr := h.decodeEvent(body, "")
	if herr != nil {
		h.answer(ctx, w, herr.about(accountID, ""))
		return
	}
	req := &request{key: key, accountID: accountID, settings: settings}
	if herr := h.publish(ctx, req, ev); herr != nil {
		h.answer(ctx, w, herr)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"success": true, "messageId": ev.MessageID})
}

// tracking serves POST /v1/{type} of the Segment HTTP Tracking API.
func (h *Handler) tracking(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	typ := segment.Type(r.PathValue("type"))
	if !typ.Known() {
		h.answer(ctx, w, fail(http.StatusNotFound, "unknown endpoint /v1/%s", truncate(string(typ), 30)))
		return
	}
	body, herr := readBody(r, segment.MaxEventBytes)
	if herr != nil {
		h.answer(ctx, w, herr)
		return
	}
	key, accountID, present, herr := h.headerAccount(ctx, r)
	if herr != nil {
		h.answer(ctx, w, herr)
		return
	}
	ev, err := segment.Decode(body)
	if err != nil {
		h.answer(ctx, w, fail(http.StatusBadRequest, "%v", err))
		return
	}
	if !present {
		key = ev.WriteKey
		if accountID, herr = h.writeKeyAccount(ctx, key); herr != nil {
			h.answer(ctx, w, herr)
			return
		}
	}
	if herr := h.prepare(ev, typ); herr != nil {
		h.answer(ctx, w, herr.about(accountID, ev.MessageID))
		return
	}
	if herr := h.publish(ctx, &request{key: key, accountID: accountID}, ev); herr != nil {
		h.answer(ctx, w, herr)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"success": true, "messageId": ev.MessageID})
}

// decodeEvent decodes and prepares one event of a request body.
func (h *Handler) decodeEvent(body []byte, typ segment.Type) (*segment.Event, *httpError) {
	ev, err := segment.Decode(body)
	if err != nil {
		return nil, fail(http.StatusBadRequest, "%v", err)
	}
	if herr := h.prepare(ev, typ); herr != nil {
		return nil, herr
	}
	return ev, nil
}

// prepare sets the type an endpoint implies, drops the write key, fills in
// messageId and receivedAt, and validates.
func (h *Handler) prepare(ev *segment.Event, typ segment.Type) *httpError {
	if typ != "" {
		ev.Type = typ
		ev.Raw["type"] = string(typ)
	}
	ev.DropWriteKey()
	if ev.MessageID == "" {
		ev.SetMessageID(h.opts.NewID())
	}
	if ev.ReceivedAt.IsZero() {
		ev.SetReceivedAt(h.opts.Now())
	}
	h.metrics.received.Add(context.Background(), 1, metric.WithAttributes(attribute.String("type", typeLabel(ev.Type))))
	if err := ev.Validate(); err != nil {
		return fail(http.StatusBadRequest, "invalid event: %v", err)
	}
	return nil
}

// batchResult is the body of a /v1/batch answer.
type batchResult struct {
	Success  bool            `json:"success"`
	Accepted []acceptedEvent `json:"accepted"`
	Rejected []rejectedEvent `json:"rejected"`
}

type acceptedEvent struct {
	Index     int    `json:"index"`
	MessageID string `json:"messageId"`
}

type rejectedEvent struct {
	Index     int    `json:"index"`
	MessageID string `json:"messageId,omitempty"`
	Message   string `json:"message"`
}

// batch serves POST /v1/batch: each valid event is published, each invalid
// one is listed as rejected, and the answer is 200 only when every valid
// event was published.
func (h *Handler) batch(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	body, herr := readBody(r, segment.MaxRequestBytes)
	if herr != nil {
		h.answer(ctx, w, herr)
		return
	}
	key, accountID, present, herr := h.headerAccount(ctx, r)
	if herr != nil {
		h.answer(ctx, w, herr)
		return
	}
	b, err := segment.DecodeBatch(body)
	if err != nil {
		h.answer(ctx, w, fail(http.StatusBadRequest, "%v", err))
		return
	}
	if !present {
		key = b.WriteKey
		if accountID, herr = h.writeKeyAccount(ctx, key); herr != nil {
			h.answer(ctx, w, herr)
			return
		}
	}
	if len(b.Items) > segment.MaxBatchEvents {
		h.answer(ctx, w, fail(http.StatusRequestEntityTooLarge, "batch of %d events; at most %d", len(b.Items), segment.MaxBatchEvents))
		return
	}
	res := batchResult{Success: true, Accepted: []acceptedEvent{}, Rejected: []rejectedEvent{}}
	valid := make([]*segment.Event, 0, len(b.Items))
	index := make([]int, 0, len(b.Items))
	for i, raw := range b.Items {
		if len(raw) > segment.MaxEventBytes {
			h.metrics.reject(ctx, http.StatusRequestEntityTooLarge, "invalid_batch_event")
			res.Rejected = append(res.Rejected, rejectedEvent{Index: i, Message: fmt.Sprintf("event larger than %d bytes", segment.MaxEventBytes)})
			continue
		}
		ev, err := segment.Decode(raw)
		if err != nil {
			h.metrics.reject(ctx, http.StatusBadRequest, "invalid_batch_event")
			res.Rejected = append(res.Rejected, rejectedEvent{Index: i, Message: err.Error()})
			continue
		}
		b.Merge(ev)
		if herr := h.prepare(ev, ""); herr != nil {
			h.metrics.reject(ctx, herr.status, "invalid_batch_event")
			res.Rejected = append(res.Rejected, rejectedEvent{Index: i, MessageID: ev.MessageID, Message: herr.msg})
			continue
		}
		valid = append(valid, ev)
		index = append(index, i)
	}
	req := &request{key: key, accountID: accountID}
	// Each event is encoded here, one after the other, and only the wait
	// for its confirmation runs in a goroutine of its own: encoding in
	// short-lived goroutines would grow a fresh stack for each event.
	errs := make([]*httpError, len(valid))
	var wg sync.WaitGroup
	for i, ev := range valid {
		pub, herr := h.encode(ctx, req, ev)
		if herr != nil {
			errs[i] = herr
			continue
		}
		wg.Go(func() { errs[i] = pub.send() })
	}
	wg.Wait()
	for i, herr := range errs {
		if herr != nil {
			h.answer(ctx, w, herr)
			return
		}
		res.Accepted = append(res.Accepted, acceptedEvent{Index: index[i], MessageID: valid[i].MessageID})
	}
	if len(res.Rejected) > 0 {
		h.log.InfoContext(ctx, "batch events rejected", "account", accountID, "rejected", len(res.Rejected), "accepted", len(res.Accepted))
	}
	writeJSON(w, http.StatusOK, res)
}

// publish encodes and publishes one event, waiting for Pub/Sub's
// confirmation.
func (h *Handler) publish(ctx context.Context, req *request, ev *segment.Event) *httpError {
	pub, herr := h.encode(ctx, req, ev)
	if herr != nil {
		return herr
	}
	return pub.send()
}

// pending is one encoded event on its way to Pub/Sub, with its span.
type pending struct {
	h    *Handler
	ctx  context.Context
	span trace.Span
	req  *request
	ev   *segment.Event
	msg  *envelope.Encoded
}

// encode starts the event's publish span and builds its message.
func (h *Handler) encode(ctx context.Context, req *request, ev *segment.Event) (*pending, *httpError) {
	ctx, span := h.tracer.Start(ctx, "publish "+h.opts.Topic,
		trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(
			attribute.String("messaging.system", "gcp_pubsub"),
			attribute.String("messaging.operation.type", "send"),
			attribute.String("messaging.destination.name", h.opts.Topic),
			attribute.String("segment.message_id", ev.MessageID),
			attribute.String("segment.type", string(ev.Type)),
			attribute.String("account.id", req.accountID),
		))
	msg, err := envelope.Encode(&envelope.Message{
		AccountID:  req.accountID,
		APIKey:     req.key,
		Settings:   req.settings,
		ReceivedAt: ev.ReceivedAt,
		Trace:      telemetry.Inject(ctx),
		Event:      ev,
	})
	if err != nil {
		span.SetStatus(codes.Error, "encode")
		span.End()
		return nil, (&httpError{status: http.StatusInternalServerError, msg: "could not encode the event", err: err}).about(req.accountID, ev.MessageID)
	}
	return &pending{h: h, ctx: ctx, span: span, req: req, ev: ev, msg: msg}, nil
}

// send publishes the message, waits for the confirmation and ends the span.
func (p *pending) send() *httpError {
	h, ctx, span, ev := p.h, p.ctx, p.span, p.ev
	defer span.End()
	start := time.Now()
	id, err := h.opts.Publisher.Publish(ctx, p.msg)
	if err != nil {
		span.SetStatus(codes.Error, "publish failed")
		span.RecordError(err)
		return (&httpError{status: http.StatusServiceUnavailable, msg: "could not publish the event; retry", err: err}).about(p.req.accountID, ev.MessageID)
	}
	span.SetAttributes(attribute.String("messaging.message.id", id))
	h.recent.add(p.req.accountID, ev.MessageID)
	h.metrics.publish.Record(ctx, time.Since(start).Seconds())
	h.metrics.published.Add(ctx, 1, metric.WithAttributes(attribute.String("type", string(ev.Type)), attribute.String("account", p.req.accountID)))
	return nil
}

// answer writes an error answer and logs its cause.
func (h *Handler) answer(ctx context.Context, w http.ResponseWriter, e *httpError) {
	level := slog.LevelInfo
	if e.status >= 500 {
		level = slog.LevelError
		w.Header().Set("Retry-After", "1")
	}
	attrs := []any{"status", e.status, "reason", e.msg}
	if e.err != nil {
		attrs = append(attrs, "error", e.err.Error())
	}
	span := trace.SpanFromContext(ctx)
	span.SetAttributes(attribute.String("ingest.reject_reason", e.reason()))
	if e.account != "" {
		attrs = append(attrs, "account", e.account)
		span.SetAttributes(attribute.String("account.id", e.account))
	}
	if e.messageID != "" {
		attrs = append(attrs, "messageId", e.messageID)
		span.SetAttributes(attribute.String("segment.message_id", e.messageID))
	}
	h.log.Log(ctx, level, "request rejected", attrs...)
	h.metrics.reject(ctx, e.status, e.reason())
	writeJSON(w, e.status, map[string]string{"message": e.msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
