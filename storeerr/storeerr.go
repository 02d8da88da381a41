// Package storeerr turns the driver's store errors into one line a person
// reads: a failed server selection prints the whole topology (every
// server, its state, its last error), several lines' worth on one, once
// per failed read.
package storeerr

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/x/mongo/driver/topology"
)

// Unreachable reports an error that says the store could not be reached:
// no server selectable, or the network failed.
func Unreachable(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) {
		return false
	}
	var sse topology.ServerSelectionError
	return errors.As(err, &sse) || mongo.IsNetworkError(err)
}

// Reason says why the store could not be reached, in one line: each
// server's last error ("127.0.0.1:27017: dial tcp ...: connection
// refused"), else the error itself.
func Reason(err error) string {
	var sse topology.ServerSelectionError
	if !errors.As(err, &sse) {
		return Line(err)
	}
	return selection(sse)
}

// Line is err's text with every server selection error in it (the
// topology dump) shortened to its reason.
func Line(err error) string {
	if err == nil {
		return ""
	}
	msg := err.Error()
	for _, sse := range selections(err) {
		msg = strings.ReplaceAll(msg, sse.Error(), "server selection: "+selection(sse))
	}
	return strings.Join(strings.Fields(msg), " ")
}

func selection(sse topology.ServerSelectionError) string {
	var parts []string
	for _, s := range sse.Desc.Servers {
		if s.LastError != nil {
			parts = append(parts, fmt.Sprintf("%s: %v", s.Addr, s.LastError))
		}
	}
	if len(parts) == 0 {
		what := "no server answered"
		if sse.Wrapped != nil && !errors.Is(sse.Wrapped, context.DeadlineExceeded) {
			what = sse.Wrapped.Error()
		}
		var addrs []string
		for _, s := range sse.Desc.Servers {
			addrs = append(addrs, s.Addr.String()+" ("+s.Kind.String()+")")
		}
		if len(addrs) > 0 {
			what += ": " + strings.Join(addrs, ", ")
		}
		return what
	}
	return strings.Join(parts, "; ")
}

// selections finds every server selection error in err's tree.
func selections(err error) []topology.ServerSelectionError {
	var out []topology.ServerSelectionError
	var walk func(error)
	walk = func(e error) {
		switch x := e.(type) {
		case nil:
			return
		case topology.ServerSelectionError:
			out = append(out, x)
			return
		case *topology.ServerSelectionError:
			out = append(out, *x)
			return
		case interface{ Unwrap() []error }:
			for _, w := range x.Unwrap() {
				walk(w)
			}
		case interface{ Unwrap() error }:
			walk(x.Unwrap())
		}
	}
	walk(err)
	return out
}
