// Package intake brings Pub/Sub messages to deliver's processor in the three
// ways deliver runs: a streaming pull subscriber (default locally), Pub/Sub
// push requests (Cloud Run), and Eventarc CloudEvents. Each turns the
// processor's decision into Pub/Sub's ack or nack: an ack for a 2xx answer,
// a nack for anything else.
package intake

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"

	"github.com/startdeliver/segment-destination/deliver/internal/delivery"
	"github.com/startdeliver/segment-destination/shared/abbrev"
)

// processor decides the fate of one message. It is called from many
// goroutines at once and always returns a decision. ctx bounds only how
// long the message may wait for its turn: once started, its processing
// ends on its own, within its budget, whatever becomes of ctx.
type processor interface {
	Process(ctx context.Context, m delivery.Message) delivery.Result
}

// PullSettings bound a pull subscriber's memory and parallelism.
type PullSettings struct {
	// MaxOutstandingMessages and MaxOutstandingBytes bound what is held at
	// once, so a backlog of millions does not grow memory (defaults 2048 and
	// 64 MiB: one pool for every account, sized well above what one account
	// runs at once; see package delivery).
	MaxOutstandingMessages int
	MaxOutstandingBytes    int
	// Streams is the number of StreamingPull streams (default 4).
	Streams int
	// MaxExtension bounds how long a message's lease is extended (default
	// 10 minutes); MaxDurationPerAckExtension bounds one extension, which
	// limits how long a crashed instance's messages stay leased (default
	// 30s).
	MaxExtension               time.Duration
	MaxDurationPerAckExtension time.Duration
	// Logger receives a line when Receive has to be restarted.
	Logger *slog.Logger
}

// Pull receives from sub until ctx ends, processing each message. On ctx's
// end it stops pulling; messages already processing finish (the processor
// runs them on contexts of their own, bounded by their budget) and are
// acked or nacked by their outcome; messages still waiting for their turn,
// or not yet handed over, are nacked. Receive returns once every callback
// has and their acks and nacks are sent: within the delivery budget and its
// outcome's writes.
func Pull(ctx context.Context, sub *pubsub.Subscriber, p processor, s PullSettings) error {
	if s.MaxOutstandingMessages <= 0 {
		s.MaxOutstandingMessages = 2048
	}
	if s.MaxOutstandingBytes <= 0 {
		s.MaxOutstandingBytes = 64 << 20
	}
	if s.Streams <= 0 {
		s.Streams = 4
	}
	if s.MaxExtension <= 0 {
		s.MaxExtension = 10 * time.Minute
	}
	if s.MaxDurationPerAckExtension <= 0 {
		s.MaxDurationPerAckExtension = 30 * time.Second
	}
	sub.ReceiveSettings.MaxOutstandingMessages = s.MaxOutstandingMessages
	sub.ReceiveSettings.MaxOutstandingBytes = s.MaxOutstandingBytes
	sub.ReceiveSettings.NumGoroutines = s.Streams
	sub.ReceiveSettings.MaxExtension = s.MaxExtension
	sub.ReceiveSettings.MaxDurationPerAckExtension = s.MaxDurationPerAckExtension
	// The client's default shutdown waits for every callback and then
	// sends their acks and nacks; a timed shutdown (ShutdownOptions) would
	// return without sending them. Callbacks end on their own within the
	// delivery budget, so the wait is bounded.
	handle := func(ctx context.Context, m *pubsub.Message) {
		msg := delivery.Message{
			ID:          m.ID,
			Data:        m.Data,
			Attributes:  m.Attributes,
			OrderingKey: m.OrderingKey,
			PublishTime: m.PublishTime,
		}
		if m.DeliveryAttempt != nil {
			msg.DeliveryAttempt = *m.DeliveryAttempt
		}
		if p.Process(ctx, msg).Decision == delivery.Ack {
			m.Ack()
		} else {
			m.Nack()
		}
	}
	// Receive returns on errors it does not retry itself (a stream the
	// server closed, a subscription briefly missing): start it again with
	// back-off rather than stop delivering.
	pause := time.Second
	for {
		err := sub.Receive(ctx, handle)
		if ctx.Err() != nil {
			return nil
		}
		if s.Logger != nil {
			s.Logger.WarnContext(ctx, "receive stopped; restarting", "error", err, "in", pause)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(pause):
		}
		pause = min(pause*2, 30*time.Second)
	}
}

// pushRequest is the body of a Pub/Sub push request.
type pushRequest struct {
	Message         pushMessage `json:"message"`
	Subscription    string      `json:"subscription"`
	DeliveryAttempt int         `json:"deliveryAttempt"`
}

// pushMessage accepts both spellings Pub/Sub uses for push and Eventarc.
type pushMessage struct {
	Attributes   map[string]string `json:"attributes"`
	Data         string            `json:"data"`
	MessageID    string            `json:"messageId"`
	MessageID2   string            `json:"message_id"`
	PublishTime  time.Time         `json:"publishTime"`
	PublishTime2 time.Time         `json:"publish_time"`
	OrderingKey  string            `json:"orderingKey"`
}

func (pm pushMessage) toMessage(attempt int) (delivery.Message, error) {
	data, err := base64.StdEncoding.DecodeString(pm.Data)
	if err != nil {
		return delivery.Message{}, fmt.Errorf("message data is not base64: %w", err)
	}
	m := delivery.Message{ID: pm.MessageID, Data: data, Attributes: pm.Attributes, OrderingKey: pm.OrderingKey,
		PublishTime: pm.PublishTime, DeliveryAttempt: attempt}
	if m.ID == "" {
		m.ID = pm.MessageID2
	}
	if m.PublishTime.IsZero() {
		m.PublishTime = pm.PublishTime2
	}
	if m.Attributes == nil {
		m.Attributes = map[string]string{}
	}
	return m, nil
}

// tokenValidator checks a Google-signed OIDC token for an audience.
type tokenValidator interface {
	Validate(ctx context.Context, token, audience string) (email string, err error)
}

// PushOptions configure the push handler.
type PushOptions struct {
	// Audience, when set, requires every request to carry a Google OIDC
	// token for it (PUSH_AUDIENCE).
	Audience string
	// ServiceAccount, when set, requires the token's email to be it.
	ServiceAccount string
	// Validator checks tokens (default: Google's certificates).
	Validator tokenValidator
	// TurnWait bounds how long a push request waits for its account's turn
	// before it is answered 503 (nack): it must leave the delivery's budget
	// and its outcome within the subscription's ack deadline. Default 45s.
	TurnWait time.Duration
	Logger   *slog.Logger
}

// maxPushBody bounds a push request: a Pub/Sub message is at most 10 MB,
// base64 grows it by a third.
const maxPushBody = 14 << 20

// PushHandler serves POST /pubsub/push: 2xx acks the message, anything else
// makes Pub/Sub retry it. With o.Audience set it is behind RequireToken;
// without, it is unauthenticated, which deliver allows only on the
// emulators.
func PushHandler(p processor, o PushOptions) http.Handler {
	if o.TurnWait <= 0 {
		o.TurnWait = 45 * time.Second
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		var req pushRequest
		if err := json.NewDecoder(io.LimitReader(r.Body, maxPushBody)).Decode(&req); err != nil {
			// A body that is not a push request will never become one:
			// answer 400 so that the subscription's dead-letter policy
			// takes it after its attempts.
			writeJSON(w, http.StatusBadRequest, "not a Pub/Sub push request: "+describeJSON(err))
			return
		}
		m, err := req.Message.toMessage(req.DeliveryAttempt)
		if err != nil {
			writeJSON(w, http.StatusBadRequest, err.Error())
			return
		}
		// The request waits for its turn within the ack deadline; only
		// a turn that does not come in time is answered 503.
		wait, cancel := context.WithTimeout(ctx, o.TurnWait)
		defer cancel()
		answer(w, p.Process(wait, m))
	})
	if o.Audience == "" {
		return h
	}
	return RequireToken(o, h)
}

// answer turns a decision into a status: 200 acks, 503 nacks.
func answer(w http.ResponseWriter, res delivery.Result) {
	if res.Decision == delivery.Ack {
		writeJSON(w, http.StatusOK, res.Outcome)
		return
	}
	w.Header().Set("Retry-After", "10")
	writeJSON(w, http.StatusServiceUnavailable, "retry: "+res.Class)
}

// describeJSON says what is wrong with a body that did not decode, with
// the byte offset where encoding/json gives one, and never the body's bytes
// (a syntax error's own text quotes the offending character).
func describeJSON(err error) string {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return fmt.Sprintf("malformed JSON at byte %d", syn.Offset)
	case errors.As(err, &typ):
		return fmt.Sprintf("field %s is not a %s", abbrev.String(typ.Field, 64), typ.Type)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "body ends early"
	default:
		return "malformed JSON"
	}
}

func writeJSON(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"message": msg})
}

// messagePublishedData is the data of an Eventarc
// google.cloud.pubsub.topic.v1.messagePublished CloudEvent.
type messagePublishedData struct {
	Message      pushMessage `json:"message"`
	Subscription string      `json:"subscription"`
}

// CloudEventFunc is the function registered with functions-framework-go: a
// nil error acks the event, an error makes Eventarc retry it. An event
// waits for its turn at most turnWait (as PushOptions.TurnWait).
func CloudEventFunc(p processor, turnWait time.Duration) func(context.Context, event.Event) error {
	if turnWait <= 0 {
		turnWait = 45 * time.Second
	}
	return func(ctx context.Context, e event.Event) error {
		ctx, cancel := context.WithTimeout(ctx, turnWait)
		defer cancel()
		// Errors name what is wrong, never the caller's bytes: the
		// CloudEvents SDK's DataAs error quotes the data, and the event id
		// is the caller's too.
		var d messagePublishedData
		if err := e.DataAs(&d); err != nil {
			return errors.New("not a Pub/Sub messagePublished event")
		}
		m, err := d.Message.toMessage(0)
		if err != nil {
			return err
		}
		if m.ID == "" {
			m.ID = e.ID()
		}
		if res := p.Process(ctx, m); res.Decision != delivery.Ack {
			return fmt.Errorf("retry: %s", res.Class)
		}
		return nil
	}
}

// CloudEventHandler serves Eventarc CloudEvents (binary or structured mode)
// at POST / with fn.
func CloudEventHandler(fn func(context.Context, event.Event) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, maxPushBody)
		e, err := cehttp.NewEventFromHTTPRequest(r)
		if err != nil {
			// The SDK's parse errors may quote the request.
			writeJSON(w, http.StatusBadRequest, "not a CloudEvent")
			return
		}
		if err := fn(r.Context(), *e); err != nil {
			writeJSON(w, http.StatusServiceUnavailable, err.Error())
			return
		}
		writeJSON(w, http.StatusOK, "ok")
	})
}

// DeadLetterPublisher publishes to the dead-letter topic.
type DeadLetterPublisher struct {
	p       *pubsub.Publisher
	timeout time.Duration
}

// NewDeadLetterPublisher returns a publisher for topic. Messages keep their
// original body, so that they can be replayed; ordering keys are dropped
// (dead letters need no order, and a failed key would pause its
// successors).
func NewDeadLetterPublisher(c *pubsub.Client, topic string) *DeadLetterPublisher {
	p := c.Publisher(topic)
	p.PublishSettings.DelayThreshold = 5 * time.Millisecond
	return &DeadLetterPublisher{p: p, timeout: 30 * time.Second}
}

// Publish sends one dead letter and waits for Pub/Sub's confirmation, or
// for ctx to end.
func (d *DeadLetterPublisher) Publish(ctx context.Context, data []byte, attrs map[string]string, _ string) error {
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	if _, err := d.p.Publish(ctx, &pubsub.Message{Data: data, Attributes: attrs}).Get(ctx); err != nil {
		return fmt.Errorf("publish dead letter: %w", err)
	}
	return nil
}

// Stop flushes and stops the publisher.
func (d *DeadLetterPublisher) Stop() { d.p.Stop() }
