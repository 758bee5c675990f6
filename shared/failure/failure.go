// Package failure is the one vocabulary the project uses to say that an
// error is permanent: the same input will fail the same way however often it
// is tried, so it must not be retried (deliver dead-letters it with its
// class and acks). Every other error, an unknown one included, is retryable.
//
// Permanent marks an error and names its class (the dead-letter topic's
// errorClass attribute); IsPermanent and Class read the mark anywhere in an
// error's chain, so wrapping with fmt.Errorf("...: %w", err) keeps it.
// Producers mark where they know (plan for events that cannot be planned,
// envelope for bodies that cannot be read, the Startdeliver client for
// answers that retrying cannot change); consumers decide with IsPermanent
// and never with strings or type switches of their own.
package failure

import "errors"

// Error is a permanent failure of a named class. Build it with Permanent.
type Error struct {
	// Class names the failure for metrics and the dead-letter errorClass
	// attribute: short, lower-case, hyphenated ("invalid-event").
	Class string
	// Err is the failure itself.
	Err error
}

// Error returns the wrapped error's message; the class is not repeated in it.
func (e *Error) Error() string { return e.Err.Error() }

// Unwrap returns the wrapped error.
func (e *Error) Unwrap() error { return e.Err }

// Permanent marks err as permanent with class. It returns nil for a nil err.
// When err already carries a class, the outer one (this) is what Class
// reports: the caller closest to the decision names it.
func Permanent(class string, err error) error {
	if err == nil {
		return nil
	}
	return &Error{Class: class, Err: err}
}

// IsPermanent reports whether err's chain holds an error marked by
// Permanent. It is false for nil.
func IsPermanent(err error) bool {
	var e *Error
	return errors.As(err, &e)
}

// Class returns the class of the outermost permanent mark in err's chain,
// or "" when err is not permanent.
func Class(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Class
	}
	return ""
}
