package config

import "fmt"

// UsageError is bad usage or configuration: exit code 2, nothing touched.
type UsageError struct{ Err error }

func (e *UsageError) Error() string { return e.Err.Error() }
func (e *UsageError) Unwrap() error { return e.Err }

// HelpRequest is -h, --help or `help`: Text goes to stdout, exit 0.
type HelpRequest struct{ Text string }

func (h *HelpRequest) Error() string { return "help requested" }

func usage(format string, a ...any) error { return &UsageError{fmt.Errorf(format, a...)} }
