package checker

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// docsOf is a closed channel of n documents {"i": 0..n-1}.
func docsOf(t *testing.T, n int, closed bool) chan bson.Raw {
	t.Helper()
	ch := make(chan bson.Raw, n)
	for i := range n {
		raw, err := bson.Marshal(bson.M{"i": int32(i)})
		if err != nil {
			t.Fatal(err)
		}
		ch <- raw
	}
	if closed {
		close(ch)
	}
	return ch
}

func docIndex(doc bson.Raw) int { return int(doc.Lookup("i").Int32()) }

// TestPollEach: every document is polled exactly once, never more than n at
// a time, and n at a time when there is work; with one worker in the order
// the documents arrive. Each poll blocks until the test releases it, and a
// release lets exactly one more poll start, so the count in flight is
// checked at every start.
func TestPollEach(t *testing.T) {
	tests := []struct {
		name     string
		n, docs  int
		wantPeak int
	}{
		{"more documents than workers", 4, 40, 4},
		{"one worker keeps the order", 1, 12, 1},
		{"fewer documents than workers", 8, 3, 3},
		{"no document", 4, 0, 0},
		{"a limit below one is one", 0, 5, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var (
				inflight, peak atomic.Int32
				mu             sync.Mutex
				order          []int
				started        = make(chan struct{})
				release        = make(chan struct{})
				done           = make(chan struct{})
			)
			go func() {
				defer close(done)
				pollEach(context.Background(), tt.n, docsOf(t, tt.docs, true), func(doc bson.Raw) {
					cur := inflight.Add(1)
					for p := peak.Load(); cur > p && !peak.CompareAndSwap(p, cur); p = peak.Load() {
					}
					mu.Lock()
					order = append(order, docIndex(doc))
					mu.Unlock()
					started <- struct{}{}
					<-release
					inflight.Add(-1)
				})
			}()
			// Fill the workers, then keep them full: one release, one start.
			for range min(tt.wantPeak, tt.docs) {
				<-started
			}
			for range tt.docs - min(tt.wantPeak, tt.docs) {
				release <- struct{}{}
				<-started
			}
			for range min(tt.wantPeak, tt.docs) {
				release <- struct{}{}
			}
			<-done
			if got := int(peak.Load()); got != tt.wantPeak {
				t.Errorf("%d polls in flight at most, want %d", got, tt.wantPeak)
			}
			got := slices.Clone(order)
			if tt.n > 1 {
				slices.Sort(got)
			}
			want := make([]int, tt.docs)
			for i := range want {
				want[i] = i
			}
			if !slices.Equal(got, want) {
				t.Errorf("polled %v, want each of 0..%d once (in order with one worker)", order, tt.docs-1)
			}
		})
	}
}

// TestPollEachCancel: once ctx ends no new poll starts, whether the workers
// are busy (documents left waiting) or idle (docs open and empty), and
// pollEach returns with every worker stopped although docs is never closed.
func TestPollEachCancel(t *testing.T) {
	tests := []struct {
		name    string
		n, docs int
	}{
		{"workers busy, documents waiting", 3, 10},
		{"workers idle on an open channel", 3, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var polls atomic.Int32
			// Buffered: a poll wrongly started after the cancel is counted
			// rather than blocking the test.
			started := make(chan struct{}, tt.docs)
			release := make(chan struct{})
			done := make(chan struct{})
			go func() {
				defer close(done)
				pollEach(ctx, tt.n, docsOf(t, tt.docs, false), func(bson.Raw) {
					polls.Add(1)
					started <- struct{}{}
					<-release
				})
			}()
			busy := min(tt.n, tt.docs)
			for range busy {
				<-started
			}
			cancel()
			close(release) // the polls in flight finish after the cancel
			<-done         // returns: every worker has stopped
			if got := int(polls.Load()); got != busy {
				t.Errorf("%d polls started, want the %d in flight at the cancel", got, busy)
			}
		})
	}
}
