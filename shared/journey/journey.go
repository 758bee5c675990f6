// Package journey is the record of what happened to one event, kept by
// deliver in the document it already writes per completed event (the
// dedupe record) and read by ingest to answer "where is my event"
// (docs/api.md § Probes and the event console). Both sides use this one schema, so that a field deliver
// writes is the field ingest reads.
//
// A record names its account by the account id (the key's hash), never by
// the key; its document id hides both the account and the messageId
// (DocumentID). Payloads (properties, traits) are kept only when the
// operator turns it on.
package journey

import (
	"crypto/sha256"
	"encoding/hex"
	"time"
)

// Statuses of an event (docs/api.md § Probes and the event console).
const (
	StatusPending      = "pending" // published, not processed yet: no record, or a delivery's claim
	StatusDelivered    = "delivered"
	StatusDuplicate    = "duplicate"
	StatusSkipped      = "skipped"
	StatusDeadLettered = "dead_lettered"
	StatusRetrying     = "retrying"
)

// Completed reports whether a record of this status means the event took
// (or must never take) effect, so that a redelivery has no second effect. A
// dead-lettered or retrying event is not completed: once its cause is
// fixed, a replay must take effect. A record from before statuses were kept
// ("") is completed.
func Completed(status string) bool {
	switch status {
	case StatusDeadLettered, StatusRetrying, StatusPending:
		return false
	}
	return true
}

// DocumentID is the id of an event's record: it names the account and the
// messageId without holding either in the clear.
func DocumentID(accountID, messageID string) string {
	sum := sha256.Sum256([]byte(accountID + "\x00" + messageID))
	return hex.EncodeToString(sum[:])
}

// Call is one HTTP call to Startdeliver made for the event.
type Call struct {
	// Method is GET, POST or PATCH; Route is the route template
	// ("/user/{id}"), never a URL with values.
	Method string `firestore:"method" json:"method"`
	Route  string `firestore:"route" json:"route"`
	// Status is the answer's HTTP status, 0 when none came (network error,
	// timeout).
	Status int `firestore:"status" json:"status"`
	// Attempt is the in-process run of the event's plan that made the call
	// (1 for the first; deliver reruns a plan after a retryable failure).
	Attempt int `firestore:"attempt" json:"attempt"`
}

// Match is the rule and value an event was matched on.
type Match struct {
	// Rule names the matching rule that chose the value: "email",
	// "override", "userId", "segmentApp".
	Rule string `firestore:"rule,omitempty" json:"rule,omitempty"`
	// Field is the Startdeliver field matched against.
	Field string `firestore:"field" json:"field"`
	// Value is the value matched on.
	Value any `firestore:"value" json:"value"`
}

// Dropped is a value left out of an update, and why.
type Dropped struct {
	Entity string `firestore:"entity" json:"entity"`
	Field  string `firestore:"field" json:"field"`
	Reason string `firestore:"reason" json:"reason"`
}

// Record is one event's journey. Its Firestore fields are also the dedupe
// record's (accountId, messageId, completedAt, expireAt).
type Record struct {
	AccountID string `firestore:"accountId" json:"-"`
	MessageID string `firestore:"messageId" json:"messageId"`
	Status    string `firestore:"status" json:"status"`
	// Type and Name are the event's type and its track event or page name.
	Type string `firestore:"type" json:"type"`
	Name string `firestore:"name" json:"name"`
	// UserID and AnonymousID are the event's Segment ids.
	UserID      string `firestore:"userId" json:"userId"`
	AnonymousID string `firestore:"anonymousId" json:"anonymousId"`
	// Reason says why the event was skipped or dead-lettered; ErrorClass is
	// the dead-letter errorClass or the skip's class.
	Reason     string `firestore:"reason" json:"reason"`
	ErrorClass string `firestore:"errorClass" json:"errorClass"`
	// UserMatch and CustomerMatch are the rules and values used.
	UserMatch     *Match `firestore:"userMatch" json:"userMatch"`
	CustomerMatch *Match `firestore:"customerMatch" json:"customerMatch"`
	// User and Customer are the Startdeliver ids matched or created.
	User            *int64 `firestore:"user" json:"user"`
	Customer        *int64 `firestore:"customer" json:"customer"`
	UserCreated     bool   `firestore:"userCreated" json:"userCreated"`
	CustomerCreated bool   `firestore:"customerCreated" json:"customerCreated"`
	// Calls are the Startdeliver calls made, in order.
	Calls   []Call    `firestore:"calls" json:"calls"`
	Dropped []Dropped `firestore:"dropped" json:"dropped"`
	// Attempts is the Pub/Sub delivery attempt that completed the event
	// (1 when the subscription does not count attempts).
	Attempts int `firestore:"attempts" json:"attempts"`
	// ReceivedAt is when ingest received the event; CompletedAt when deliver
	// finished it (DeliveredAt too, for a delivered event).
	ReceivedAt  time.Time  `firestore:"receivedAt" json:"receivedAt"`
	CompletedAt time.Time  `firestore:"completedAt" json:"completedAt"`
	DeliveredAt *time.Time `firestore:"deliveredAt" json:"deliveredAt"`
	// Duplicates counts later copies that had no effect; LastDuplicateAt is
	// the latest.
	Duplicates      int        `firestore:"duplicates" json:"duplicates"`
	LastDuplicateAt *time.Time `firestore:"lastDuplicateAt" json:"lastDuplicateAt,omitempty"`
	// TraceID is the W3C trace id of the event's trace.
	TraceID string `firestore:"traceId" json:"traceId"`
	// Payload is the event's properties and traits as JSON, kept only when
	// the operator turns it on (RECORD_PAYLOADS).
	Payload string `firestore:"payload,omitempty" json:"-"`
	// Owner is the deliver instance that claimed a pending event
	// (deliver/internal/dedupe); empty once the event has an outcome.
	Owner string `firestore:"owner,omitempty" json:"-"`
	// ExpireAt is when the TTL policy deletes the record.
	ExpireAt time.Time `firestore:"expireAt" json:"-"`
}
