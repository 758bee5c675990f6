// Package shared is the root of the module that holds what both services
// import: the Segment event model, the Pub/Sub envelope, account
// configuration and its store, field paths and telemetry setup.
package shared
