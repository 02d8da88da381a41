package cli

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/spendchecker/spendchecker/checker"
	"github.com/spendchecker/spendchecker/refill"
	"github.com/spendchecker/spendchecker/retire"
)

// metrics are the Prometheus series of the docs/operating.md's "Metrics and alerts", on a registry of their own.
type metrics struct {
	reg       *prometheus.Registry
	cycles    *prometheus.CounterVec
	checked   *prometheus.CounterVec
	rotations *prometheus.CounterVec
	backups   *prometheus.GaugeVec
	// backupCountFailures counts cycles that could not count the backups.
	backupCountFailures *prometheus.CounterVec
	duration            prometheus.Histogram
	isLeader            prometheus.Gauge
	epoch               prometheus.Gauge
	lastSuccess         prometheus.Gauge
	// remaining is the lowest account balance a balance provider reported
	// in the pool's last cycle that read one (docs/providers.md).
	remaining *prometheus.GaugeVec
	// refill and retire (docs/refill.md): keys created by result, rotated
	// keys retired upstream by outcome.
	refill, retire *prometheus.CounterVec
	// retireOverdue: done rotations whose key the last retire pass left
	// enabled upstream past the bound (retire.OverdueAfter past the grace).
	retireOverdue *prometheus.GaugeVec
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		cycles: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "spendchecker_cycles_total",
			Help: "Check cycles by result: ok, partial (some keys failed), error, skipped (not leader)."}, []string{"result"}),
		checked: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "spendchecker_keys_checked_total",
			Help: "Keys polled by result: ok, failed, unauthorized, over_threshold."}, []string{"pool", "result"}),
		rotations: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "spendchecker_rotations_total",
			Help: "Rotation attempts by outcome: rotated, already_rotated, no_backup, error."}, []string{"pool", "outcome"}),
		backups: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "spendchecker_backup_keys_available",
			Help: "Backup keys not yet used."}, []string{"pool"}),
		backupCountFailures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "spendchecker_backup_count_failures_total",
			Help: "Cycles that could not count the backup keys (the gauge keeps its last value)."}, []string{"pool"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "spendchecker_cycle_duration_seconds",
			Help: "Duration of check cycles.", Buckets: prometheus.ExponentialBuckets(0.05, 2, 14)}),
		isLeader: prometheus.NewGauge(prometheus.GaugeOpts{Name: "spendchecker_leader",
			Help: "1 while this replica holds the lease."}),
		epoch: prometheus.NewGauge(prometheus.GaugeOpts{Name: "spendchecker_lease_epoch",
			Help: "Epoch of the lease this replica last held."}),
		lastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{Name: "spendchecker_last_success_timestamp_seconds",
			Help: "Unix time of the last cycle that checked every due key."}),
		remaining: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "spendchecker_remaining_lowest",
			Help: "Balance providers: the lowest remaining account balance read in the pool's last cycle, in its currency."}, []string{"pool", "currency"}),
	}
	m.refill = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "spendchecker_refill_keys_total",
		Help: "Refill: keys created upstream and added as backups (created), found by name after a crash (adopted), created but disabled for a lost secret (orphaned), never created (absent); failed requests (failed), passes stopped by the day's caps (capped), passes that stopped early (error)."}, []string{"pool", "result"})
	m.retire = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "spendchecker_retired_keys_total",
		Help: "Retire: rotated keys disabled upstream (disabled), found gone (not_found), left alone (skipped: no upstream id, or live again), failed attempts (failed), live keys enabled again after a disable the upstream carried out late (reenabled), retired keys disabled again after an enable the upstream carried out late (redisabled), deleted after retire-delete-after (deleted), passes that stopped early (error)."}, []string{"pool", "outcome"})
	m.retireOverdue = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "spendchecker_retire_overdue_keys",
		Help: "Retire: rotated keys the last pass found still enabled upstream 10 minutes past their grace."}, []string{"pool"})
	m.reg.MustRegister(m.refill, m.retire, m.retireOverdue)
	m.reg.MustRegister(m.cycles, m.checked, m.rotations, m.backups, m.backupCountFailures, m.duration, m.isLeader, m.epoch, m.lastSuccess, m.remaining,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, r := range []string{"ok", "partial", "error", "skipped"} {
		m.cycles.WithLabelValues(r)
	}
	return m
}

func (m *metrics) leader(on bool, epoch int64) {
	if on {
		m.isLeader.Set(1)
		m.epoch.Set(float64(epoch))
		return
	}
	m.isLeader.Set(0)
}

func (m *metrics) cycle(sum checker.Summary, err error, nowUnix float64) {
	result := "ok"
	switch {
	case err != nil:
		result = "error"
	case !sum.Clean():
		result = "partial"
	}
	m.cycles.WithLabelValues(result).Inc()
	m.duration.Observe(sum.Duration.Seconds())
	if result == "ok" {
		m.lastSuccess.Set(nowUnix)
	}
	for _, p := range sum.Pools {
		add := func(v *prometheus.CounterVec, label string, n int) {
			v.WithLabelValues(p.Pool, label).Add(float64(n))
		}
		add(m.checked, "ok", p.Checked)
		add(m.checked, "failed", p.Failed)
		add(m.checked, "unauthorized", p.Unauthorized)
		add(m.checked, "over_threshold", p.Over)
		if p.NoReading > 0 {
			add(m.checked, "no_reading", p.NoReading)
		}
		if p.LowestRemaining != nil {
			m.remaining.WithLabelValues(p.Pool, p.LowestCurrency).Set(*p.LowestRemaining)
		}
		add(m.rotations, "rotated", p.Rotated)
		add(m.rotations, "already_rotated", p.AlreadyRotated)
		add(m.rotations, "no_backup", p.NoBackup)
		add(m.rotations, "held", p.Held)
		add(m.rotations, "error", p.RotateErrors)
		if p.BackupsUnknown {
			m.backupCountFailures.WithLabelValues(p.Pool).Inc()
			continue
		}
		m.backups.WithLabelValues(p.Pool).Set(float64(p.BackupsLeft))
	}
}

// refilled counts a refill pass.
func (m *metrics) refilled(pool string, rep refill.Report, err error) {
	for result, n := range map[string]int{"created": rep.Created, "adopted": rep.Adopted, "orphaned": rep.Orphaned, "absent": rep.Absent, "failed": rep.Failed} {
		m.refill.WithLabelValues(pool, result).Add(float64(n))
	}
	if rep.Capped {
		m.refill.WithLabelValues(pool, "capped").Inc()
	}
	if err != nil {
		m.refill.WithLabelValues(pool, "error").Inc()
	}
}

// retired counts a retire pass.
func (m *metrics) retired(pool string, rep retire.Report, err error) {
	for outcome, n := range map[string]int{"disabled": rep.Retired, "not_found": rep.NotFound, "skipped": rep.Skipped, "failed": rep.Failed,
		"reenabled": rep.Reenabled, "redisabled": rep.Redisabled, "deleted": rep.Deleted} {
		m.retire.WithLabelValues(pool, outcome).Add(float64(n))
	}
	if err != nil {
		// A pass stopped early read only part of the journal: the gauge
		// keeps its last value.
		m.retire.WithLabelValues(pool, "error").Inc()
		return
	}
	m.retireOverdue.WithLabelValues(pool).Set(float64(rep.Overdue))
}
