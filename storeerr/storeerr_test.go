package storeerr

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"go.mongodb.org/mongo-driver/v2/x/mongo/driver/description"
	"go.mongodb.org/mongo-driver/v2/x/mongo/driver/topology"
)

func TestLineAndReason(t *testing.T) {
	refused := topology.ServerSelectionError{Wrapped: context.DeadlineExceeded, Desc: description.Topology{Servers: []description.Server{
		{Addr: "db1:27017", LastError: errors.New("dial tcp 10.0.0.1:27017: connect: connection refused")},
		{Addr: "db2:27017", LastError: errors.New("dial tcp 10.0.0.2:27017: i/o timeout")},
	}}}
	silent := topology.ServerSelectionError{Wrapped: context.DeadlineExceeded, Desc: description.Topology{Servers: []description.Server{{Addr: "db1:27017"}}}}
	for _, tt := range []struct {
		name        string
		err         error
		line        string
		reason      string
		unreachable bool
	}{
		{"wrapped twice", fmt.Errorf("status: %w", fmt.Errorf("read keys: %w", refused)),
			"status: read keys: server selection: db1:27017: dial tcp 10.0.0.1:27017: connect: connection refused; db2:27017: dial tcp 10.0.0.2:27017: i/o timeout",
			"db1:27017: dial tcp 10.0.0.1:27017: connect: connection refused; db2:27017: dial tcp 10.0.0.2:27017: i/o timeout", true},
		{"joined", errors.Join(fmt.Errorf("lease: %w", silent), fmt.Errorf("keys: %w", silent)),
			"lease: server selection: no server answered: db1:27017 (Unknown) keys: server selection: no server answered: db1:27017 (Unknown)",
			"no server answered: db1:27017 (Unknown)", true},
		{"not the store's", errors.New("bad\nthing"), "bad thing", "bad thing", false},
		{"cancelled", fmt.Errorf("x: %w", context.Canceled), "x: context canceled", "x: context canceled", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := Line(tt.err); got != tt.line {
				t.Errorf("Line = %q\nwant   %q", got, tt.line)
			}
			if got := Reason(tt.err); got != tt.reason {
				t.Errorf("Reason = %q\nwant     %q", got, tt.reason)
			}
			if got := Unreachable(tt.err); got != tt.unreachable {
				t.Errorf("Unreachable = %v", got)
			}
			if strings.Contains(Line(tt.err), "topology") {
				t.Errorf("Line keeps the topology: %q", Line(tt.err))
			}
		})
	}
}
