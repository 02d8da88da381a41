package cli

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
)

// A wedged cycle (started, no upstream answer or store reply since) must
// starve the watchdog within the stall limit plus one ping period, and
// progress must feed it again; with the old rule (feed while the scheduler
// runs) it was fed for ever.
func TestWatchdogStarvesOnWedgedCycle(t *testing.T) {
	const every = 30 * time.Second // WatchdogSec=60
	stall := stallLimit(15 * time.Second)
	clock := clockwork.NewFakeClock()
	p := newProgress(clock, stall)
	got := make(chan string, 1)
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		feedWatchdog(clock, every, p, func(s string) { got <- s }, done)
	}()
	defer func() { close(done); <-finished }()
	next := func() string {
		t.Helper()
		select {
		case s := <-got:
			return s
		case <-time.After(10 * time.Second): // a guard against a hang, not a wait
			t.Fatal("no watchdog decision after a tick")
			return ""
		}
	}
	tick := func() string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := clock.BlockUntilContext(ctx, 1); err != nil {
			t.Fatal(err)
		}
		clock.Advance(every)
		return next()
	}
	if s := next(); s != "WATCHDOG=1" {
		t.Fatalf("booting: %q", s)
	}
	p.running()
	if s := tick(); s != "WATCHDOG=1" {
		t.Fatalf("idle scheduler: %q", s)
	}
	// Idle between cycles for a long time (an hourly cron) is healthy.
	for range 10 {
		if s := tick(); s != "WATCHDOG=1" {
			t.Fatalf("idle scheduler: %q", s)
		}
	}
	p.cycleStart()
	fed := 0
	for range 20 {
		s := tick()
		if s == "WATCHDOG=1" {
			fed++
			continue
		}
		if !strings.Contains(s, "cycle wedged") {
			t.Fatalf("starved watchdog says %q", s)
		}
		break
	}
	if max := int(stall / every); fed > max {
		t.Fatalf("watchdog fed %d times during a wedged cycle, want at most %d (stall limit %s)", fed, max, stall)
	}
	if ok, _ := p.healthy(); ok {
		t.Error("/healthz would report a wedged cycle healthy")
	}
	for range 3 {
		if s := tick(); s == "WATCHDOG=1" {
			t.Fatal("watchdog fed again without progress")
		}
	}
	// An upstream answer or a store reply is progress.
	p.beat()
	if s := tick(); s != "WATCHDOG=1" {
		t.Fatalf("after progress: %q", s)
	}
	p.cycleEnd()
	for range 10 {
		if s := tick(); s != "WATCHDOG=1" {
			t.Fatalf("after the cycle: %q", s)
		}
	}
	p.stopping()
	if ok, _ := p.healthy(); ok {
		t.Error("healthy while stopping")
	}
}

// At start, before the store answers, each attempt is progress; a start-up
// with no attempt finishing is not.
func TestProgressWhileBooting(t *testing.T) {
	clock := clockwork.NewFakeClock()
	p := newProgress(clock, 2*time.Minute)
	for range 20 {
		clock.Advance(12 * time.Second)
		p.beat()
		if ok, why := p.healthy(); !ok {
			t.Fatalf("retrying start-up reported unhealthy: %s", why)
		}
	}
	clock.Advance(2 * time.Minute)
	if ok, _ := p.healthy(); ok {
		t.Error("a start-up stuck for the stall limit reported healthy")
	}
}
