package lease_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/spendchecker/spendchecker/internal/mongotest"
	"github.com/spendchecker/spendchecker/lease"
)

// BenchmarkFailover measures, on the real clock with short settings, how
// long a standby takes to lead after the leader crashes (stops renewing) and
// after it releases gracefully. Bounds: one retry period plus the duration rounded up to
// whole retry periods, and one retry period.
//
//	go test -run '^$' -bench BenchmarkFailover -benchtime 20x ./lease
func BenchmarkFailover(b *testing.B) {
	const (
		d  = 1500 * time.Millisecond
		rd = 1000 * time.Millisecond
		rp = 200 * time.Millisecond
	)
	for _, mode := range []string{"crash", "release"} {
		b.Run(mode, func(b *testing.B) {
			db := mongotest.New(b).Database
			var took []time.Duration
			for i := range b.N {
				coll := db.Collection("leases_" + mode + string(rune('a'+i%26)) + time.Now().Format("150405.000000"))
				cfg := lease.Config{Name: "spendchecker", LeaseDuration: d, RenewDeadline: rd, RetryPeriod: rp}
				cfg.Instance = "leader"
				seed(b, coll) // not a first start (docs/design.md "Lease")
				leader, _ := lease.New(coll, cfg)
				leader.Tick(context.Background())
				if leader.IsLeader(context.Background()) != nil {
					b.Fatal("leader did not acquire")
				}
				became := make(chan time.Time, 1)
				cfg.Instance = "standby"
				cfg.OnChange = func(l bool, _ int64) {
					if l {
						became <- time.Now()
					}
				}
				standby, _ := lease.New(coll, cfg)
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan struct{})
				go func() { _ = standby.Run(ctx); close(done) }()
				// The leader renews once more, then crashes or releases.
				leader.Tick(context.Background())
				from := time.Now()
				if mode == "release" {
					_ = leader.Release(context.Background())
					from = time.Now()
				}
				select {
				case at := <-became:
					took = append(took, at.Sub(from))
				case <-time.After(10 * d):
					b.Fatal("standby never took over")
				}
				cancel()
				<-done
			}
			slices.Sort(took)
			// Observation lags the last renewal by up to one retry period, and
			// the takeover lands on the first tick at or past the duration.
			bound := rp + (d+rp-1)/rp*rp
			if mode == "release" {
				bound = rp
			}
			b.ReportMetric(took[len(took)/2].Seconds(), "median_s")
			b.ReportMetric(took[len(took)-1].Seconds(), "max_s")
			b.ReportMetric(bound.Seconds(), "bound_s")
		})
	}
}
