// Package envconfig reads typed settings from an environment lookup, with
// defaults and errors that name the variable, for both services' config.go.
package envconfig

import (
	"fmt"
	"strconv"
	"time"
)

// String returns the variable, or def when it is unset or empty.
func String(getenv func(string) string, name, def string) string {
	if v := getenv(name); v != "" {
		return v
	}
	return def
}

// Duration parses the variable as a Go duration ("10m"), or returns def.
func Duration(getenv func(string) string, name string, def time.Duration) (time.Duration, error) {
	v := getenv(name)
	if v == "" {
		return def, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, fmt.Errorf("%s=%q: want a duration such as 10m", name, v)
	}
	return d, nil
}

// DurationUpTo is Duration for a variable that must be more than 0 and at
// most limit.
func DurationUpTo(getenv func(string) string, name string, def, limit time.Duration) (time.Duration, error) {
	d, err := Duration(getenv, name, def)
	if err == nil && (d <= 0 || d > limit) {
		err = fmt.Errorf("%s=%s: want more than 0 and at most %s", name, d, limit)
	}
	return d, err
}

// Int parses the variable as a decimal integer, or returns def.
func Int(getenv func(string) string, name string, def int) (int, error) {
	v := getenv(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0, fmt.Errorf("%s=%q: want a number", name, v)
	}
	return n, nil
}

// Bool parses the variable as true or false, or returns def.
func Bool(getenv func(string) string, name string, def bool) (bool, error) {
	v := getenv(name)
	if v == "" {
		return def, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, fmt.Errorf("%s=%q: want true or false", name, v)
	}
	return b, nil
}
