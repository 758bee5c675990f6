package envconfig

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/startdeliver/segment-destination/shared/telemetry"
)

// Service is what both services read alike from the environment; each
// embeds it in its own config.
type Service struct {
	// Port is PORT: where the service listens (its default differs); Host
	// is HOST: the interface to listen on (default all; 127.0.0.1 keeps a
	// local run on loopback).
	Port, Host string
	// Project is GOOGLE_CLOUD_PROJECT (required).
	Project string
	// LogLevel is LOG_LEVEL (debug, info, warn, error, or a Cloud Logging
	// severity; default info: telemetry.ParseLevel).
	LogLevel string
	// FirestoreDatabase is FIRESTORE_DATABASE (default "(default)");
	// AccountsCollection is ACCOUNTS_COLLECTION (default accounts).
	FirestoreDatabase, AccountsCollection string
	// Emulator is true when PUBSUB_EMULATOR_HOST is set: topics and
	// subscriptions are then created when missing. FirestoreEmulator is
	// true when FIRESTORE_EMULATOR_HOST is set.
	Emulator, FirestoreEmulator bool
}

// ReadService reads a Service, with defaultPort when PORT is unset.
func ReadService(getenv func(string) string, defaultPort string) Service {
	return Service{
		Port:               String(getenv, "PORT", defaultPort),
		Host:               getenv("HOST"),
		Project:            getenv("GOOGLE_CLOUD_PROJECT"),
		LogLevel:           String(getenv, "LOG_LEVEL", "info"),
		FirestoreDatabase:  String(getenv, "FIRESTORE_DATABASE", "(default)"),
		AccountsCollection: String(getenv, "ACCOUNTS_COLLECTION", "accounts"),
		Emulator:           getenv("PUBSUB_EMULATOR_HOST") != "",
		FirestoreEmulator:  getenv("FIRESTORE_EMULATOR_HOST") != "",
	}
}

// Validate reports what is wrong with s (no project, a port that is not a
// number, an unknown log level), for the service's own validate to join
// with its errors.
func (s Service) Validate() []error {
	var errs []error
	if s.Project == "" {
		errs = append(errs, errors.New("GOOGLE_CLOUD_PROJECT is required"))
	}
	if _, err := strconv.ParseUint(s.Port, 10, 16); err != nil {
		errs = append(errs, fmt.Errorf("PORT=%q: want a port number", s.Port))
	}
	if _, err := telemetry.ParseLevel(s.LogLevel); err != nil {
		errs = append(errs, err)
	}
	return errs
}
