package refill_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/spendchecker/spendchecker/internal/fakeupstream"
	"github.com/spendchecker/spendchecker/keyadmin"
	"github.com/spendchecker/spendchecker/notify"
	"github.com/spendchecker/spendchecker/refill"
	"github.com/spendchecker/spendchecker/rotation"
)

var kinds = []string{keyadmin.OpenRouter, keyadmin.LiteLLM}

func kindsOf(evs []notify.Event) map[notify.Kind]int {
	out := map[notify.Kind]int{}
	for _, e := range evs {
		out[e.Kind]++
	}
	return out
}

// Below its level the pool is refilled to its target with keys of the
// pool's budget, each a backup only once the upstream confirmed it.
func TestRefillBelowLevel(t *testing.T) {
	for _, kind := range kinds {
		t.Run(kind, func(t *testing.T) {
			w := newWorld(t, kind, 2, 1)
			r := w.refiller(refill.Config{Below: 3, To: 5, Limit: 12.5})
			rep, err := r.Run(context.Background())
			if err != nil || rep.Created != 4 {
				t.Fatalf("first pass: %+v, %v", rep, err)
			}
			if got := kindsOf(rep.Events); got[notify.BackupsRefilled] != 1 {
				t.Fatalf("events %v", got)
			}
			if w.unused() != 5 {
				t.Fatalf("%d unused backups, want 5", w.unused())
			}
			for _, k := range w.up.ManagedKeys() {
				if strings.HasPrefix(k.Name, "spendchecker-") && k.Limit != 12.5 {
					t.Errorf("%s created with limit %v", k.Name, k.Limit)
				}
			}
			if rep, _ := r.Run(context.Background()); rep.Created != 0 {
				t.Fatalf("a full pool was refilled again: %+v", rep)
			}
			w.checkInvariants(true)
		})
	}
}

// However many keys a configuration asks for, a day's keys and USD stay
// within the caps; a new day brings a new allowance, capped again.
func TestRefillCapsUnderTenThousandAsked(t *testing.T) {
	for _, c := range []struct {
		name      string
		maxKeys   int
		maxUSD    float64
		limit     float64
		wantOnDay int
	}{
		{"defaults", 0, 0, 10, 10},
		{"keys cap binds", 7, 1000, 10, 7},
		{"usd cap binds", 100, 35, 10, 3},
	} {
		t.Run(c.name, func(t *testing.T) {
			w := newWorld(t, keyadmin.LiteLLM, 1, 0)
			r := w.refiller(refill.Config{Below: 10000, To: 10000, Limit: c.limit, MaxKeysPerDay: c.maxKeys, MaxUSDPerDay: c.maxUSD})
			total := settle(t, w, r)
			if total.Created != c.wantOnDay || !total.Capped || kindsOf(total.Events)[notify.RefillCapped] == 0 {
				t.Fatalf("day one: %+v", total)
			}
			w.clock.Advance(24 * time.Hour)
			total = settle(t, w, r)
			if total.Created != c.wantOnDay {
				t.Fatalf("day two created %d, want %d", total.Created, c.wantOnDay)
			}
			perDay := map[string]float64{}
			count := map[string]int{}
			for _, s := range w.slots() {
				perDay[s.Day] += s.Limit
				count[s.Day]++
			}
			for day, usd := range perDay {
				if count[day] > c.wantOnDay || usd > max(c.maxUSD, refill.DefaultMaxUSDPerDay) {
					t.Errorf("%s: %d keys, $%v", day, count[day], usd)
				}
			}
			w.checkInvariants(true)
		})
	}
}

// Replicas configured differently, refilling at once, never pass the
// largest cap among them: slots are numbered per day and won by unique
// inserts.
func TestRefillReplicasWithMismatchedCaps(t *testing.T) {
	w := newWorld(t, keyadmin.OpenRouter, 1, 0)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i, maxKeys := range []int{5, 7, 5, 6} {
		r := w.refiller(refill.Config{Below: 10000, To: 10000, MaxKeysPerDay: maxKeys, Owner: fmt.Sprintf("replica-%d", i)})
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 4 {
				if _, err := r.Run(context.Background()); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := len(w.slots()); n > 7 {
		t.Fatalf("%d slots today, above every replica's cap", n)
	}
	w.checkInvariants(true)
}

// A dry run says how many keys it would create and creates nothing.
func TestRefillDryRun(t *testing.T) {
	w := newWorld(t, keyadmin.OpenRouter, 1, 1)
	rep, err := w.refiller(refill.Config{Below: 3, To: 6, DryRun: true}).Run(context.Background())
	if err != nil || rep.Would != 5 || rep.Created != 0 {
		t.Fatalf("dry run: %+v, %v", rep, err)
	}
	if len(w.slots()) != 0 || len(w.up.ManagedKeys()) != 2 {
		t.Fatal("a dry run journaled or created keys")
	}
}

// hang blocks a management answer until the client gives up.
func hang(_ http.ResponseWriter, r *http.Request, _ fakeupstream.ManagedKey) bool {
	<-r.Context().Done()
	return true
}

func badGateway(w http.ResponseWriter, _ *http.Request, _ fakeupstream.ManagedKey) bool {
	w.WriteHeader(http.StatusBadGateway)
	fmt.Fprint(w, `upstream connect error or disconnect/reset before headers`)
	return true
}

// noSecret answers the create as documented, less the key.
func noSecret(kind string) func(http.ResponseWriter, *http.Request, fakeupstream.ManagedKey) bool {
	return func(w http.ResponseWriter, _ *http.Request, k fakeupstream.ManagedKey) bool {
		w.WriteHeader(http.StatusOK)
		if kind == keyadmin.OpenRouter {
			fmt.Fprintf(w, `{"data":{"hash":%q,"name":%q,"disabled":false,"limit":10}}`, k.ID, k.Name)
		} else {
			fmt.Fprintf(w, `{"key_alias":%q,"max_budget":10,"token_id":%q}`, k.Name, k.ID)
		}
		return true
	}
}

// An upstream that created the key but whose answer was lost or said
// nothing of its secret: the key is found by its name and becomes a
// backup where its secret is known (LiteLLM takes ours), and is disabled
// and recorded where it is not (OpenRouter shows it once).
func TestRefillKeyCreatedButAnswerLost(t *testing.T) {
	for _, kind := range kinds {
		for name, hook := range map[string]func(http.ResponseWriter, *http.Request, fakeupstream.ManagedKey) bool{
			"5xx": badGateway, "timeout": hang, "no secret": noSecret(kind),
		} {
			t.Run(kind+"/"+name, func(t *testing.T) {
				if testing.Short() && name == "timeout" {
					t.Skip("waits for the client's 5 s timeout")
				}
				w := newWorld(t, kind, 1, 0)
				if name == "timeout" {
					// The create hangs until the client gives up; the other
					// requests must still be answered within this.
					w.timeout = 5 * time.Second
				}
				w.up.SetAdminHooks(fakeupstream.AdminHooks{AfterCreate: hook})
				r := w.refiller(refill.Config{Below: 1, To: 1})
				first, err := r.Run(context.Background())
				if err != nil || first.Failed != 1 || first.Created != 0 {
					t.Fatalf("first pass: %+v, %v", first, err)
				}
				w.up.SetAdminHooks(fakeupstream.AdminHooks{})
				total := settle(t, w, r)
				add(&total, first)
				w.checkInvariants(true)
				wantAdopted := kind == keyadmin.LiteLLM
				if (total.Adopted == 1) != wantAdopted || (total.Orphaned == 1) == wantAdopted {
					t.Fatalf("recovery %+v", total)
				}
				if !wantAdopted && kindsOf(total.Events)[notify.RefillFailed] != 1 {
					t.Fatalf("events %v", kindsOf(total.Events))
				}
				// The pool is refilled all the same, by a later slot.
				if w.unused() != 1 {
					t.Fatalf("%d unused backups, want 1", w.unused())
				}
			})
		}
	}
}

// A 429 refuses the create: nothing is created, no create is sent before
// its Retry-After, and the slot settles as never created.
func TestRefillRateLimited(t *testing.T) {
	for _, kind := range kinds {
		t.Run(kind, func(t *testing.T) {
			w := newWorld(t, kind, 1, 0)
			var mu sync.Mutex
			limited, creates := true, 0
			w.up.SetAdminHooks(fakeupstream.AdminHooks{Before: func(rw http.ResponseWriter, req *http.Request) bool {
				mu.Lock()
				defer mu.Unlock()
				if req.Method != http.MethodPost || strings.Contains(req.URL.Path, "block") {
					return false
				}
				creates++
				if !limited {
					return false
				}
				rw.Header().Set("Retry-After", "600")
				rw.WriteHeader(http.StatusTooManyRequests)
				fmt.Fprint(rw, `{"error":{"code":429,"message":"Rate limit exceeded"}}`)
				return true
			}})
			r := w.refiller(refill.Config{Below: 2, To: 3})
			var total refill.Report
			rep, _ := r.Run(context.Background())
			if add(&total, rep); rep.Failed != 1 || creates != 1 {
				t.Fatalf("first pass: %+v, %d creates", rep, creates)
			}
			w.clock.Advance(5 * time.Minute)
			rep, err := r.Run(context.Background())
			if add(&total, rep); err != nil || creates != 1 {
				t.Fatalf("a create was sent within Retry-After (%d), %v", creates, err)
			}
			mu.Lock()
			limited = false
			mu.Unlock()
			add(&total, settle(t, w, r))
			if total.Absent != 1 || w.unused() != 3 {
				t.Fatalf("recovery %+v, %d unused", total, w.unused())
			}
			w.checkInvariants(true)
		})
	}
}

// The key list is read to its end to find a slot's key, however the
// upstream pages it.
func TestRefillFindsAcrossPages(t *testing.T) {
	for _, kind := range kinds {
		t.Run(kind, func(t *testing.T) {
			w := newWorld(t, kind, 1, 0)
			for i := range 40 {
				w.up.AddManagedKey(fmt.Sprintf("someone-else-%d", i), "", 1)
			}
			w.up.SetPageSize(3)
			w.up.SetAdminHooks(fakeupstream.AdminHooks{AfterCreate: badGateway})
			r := w.refiller(refill.Config{Below: 1, To: 1})
			total, _ := r.Run(context.Background())
			w.up.SetAdminHooks(fakeupstream.AdminHooks{})
			if add(&total, settle(t, w, r)); total.Adopted+total.Orphaned != 1 {
				t.Fatalf("the created key was not found: %+v", total)
			}
			w.checkInvariants(true)
		})
	}
}

var errCrash = errors.New("crash")

// A crash at every step of a slot's life, on the way that creates and on
// the way that settles an unclear create, is recovered by another process:
// no slot creates two keys, no created key is lost, none is disabled live.
func TestRefillCrashAtEveryStep(t *testing.T) {
	steps := []refill.Step{refill.StepJournal, refill.StepCreate, refill.StepFind, refill.StepDecide, refill.StepDisable, refill.StepBackup, refill.StepDone}
	for _, kind := range kinds {
		for _, unclear := range []bool{false, true} {
			for _, step := range steps {
				for _, at := range []int{0, 1} {
					if testing.Short() && unclear != (at == 1) {
						// Every step, clear and unclear, first and second
						// slot: half the pairs; the long run has them all.
						continue
					}
					name := fmt.Sprintf("%s/unclear=%v/%s/slot%d", kind, unclear, step, at)
					t.Run(name, func(t *testing.T) {
						w := newWorld(t, kind, 1, 0)
						if unclear {
							w.up.SetAdminHooks(fakeupstream.AdminHooks{AfterCreate: badGateway})
						}
						seen := map[string]bool{}
						crashed := false
						r := w.refiller(refill.Config{Below: 3, To: 3, Owner: "crashing", AfterStep: func(_ context.Context, id string, s refill.Step) error {
							seen[id] = true
							if s == step && len(seen) == at+1 && !crashed {
								crashed = true
								return errCrash
							}
							return nil
						}})
						// Passes until the crash (an unclear create
						// stops each pass; settling it comes later).
						for range 6 {
							if _, err := r.Run(context.Background()); errors.Is(err, errCrash) {
								break
							} else if err != nil {
								t.Fatal(err)
							}
							w.clock.Advance(refill.DefaultSettleAfter)
						}
						if !crashed {
							t.Skipf("step %s not reached on this path", step)
						}
						w.checkInvariants(false)
						w.up.SetAdminHooks(fakeupstream.AdminHooks{})
						settle(t, w, w.refiller(refill.Config{Below: 3, To: 3, Owner: "recovering"}))
						w.checkInvariants(true)
						if w.unused() != 3 {
							t.Fatalf("%d unused backups after recovery, want 3", w.unused())
						}
					})
				}
			}
		}
	}
}

// A leader whose create is held in the network while another process
// settles its slot: whichever decides first, the key ends up a backup or
// disabled and recorded, never both, never lost.
func TestRefillSettledUnderAHeldCreate(t *testing.T) {
	for _, kind := range kinds {
		for _, when := range []string{"created before the hold", "created after the slot settled"} {
			t.Run(kind+"/"+when, func(t *testing.T) {
				w := newWorld(t, kind, 1, 0)
				entered, release := make(chan struct{}), make(chan struct{})
				hold := func() { close(entered); <-release }
				if when == "created before the hold" {
					w.up.SetAdminHooks(fakeupstream.AdminHooks{AfterCreate: func(http.ResponseWriter, *http.Request, fakeupstream.ManagedKey) bool {
						hold()
						return false
					}})
				} else {
					w.up.SetAdminHooks(fakeupstream.AdminHooks{Before: func(_ http.ResponseWriter, r *http.Request) bool {
						if r.Method == http.MethodPost && !strings.Contains(r.URL.Path, "block") {
							hold()
						}
						return false
					}})
				}
				w.timeout = time.Minute
				old := w.refiller(refill.Config{Below: 1, To: 1, Owner: "old-leader"})
				done := make(chan error, 1)
				go func() { _, err := old.Run(context.Background()); done <- err }()
				<-entered
				w.up.SetAdminHooks(fakeupstream.AdminHooks{})
				newer := w.refiller(refill.Config{Below: 1, To: 1, Owner: "new-leader", MaxKeysPerDay: 1})
				for range 3 {
					w.clock.Advance(refill.DefaultSettleAfter)
					if _, err := newer.Run(context.Background()); err != nil {
						t.Fatal(err)
					}
				}
				close(release)
				if err := <-done; err != nil {
					t.Fatal(err)
				}
				settle(t, w, newer)
				w.checkInvariants(true)
			})
		}
	}
}

// A backup id already taken by another key: the created key cannot become
// that backup, so it is disabled and recorded, and the pool is refilled by
// the next slot.
func TestRefillBackupIDTaken(t *testing.T) {
	w := newWorld(t, keyadmin.OpenRouter, 1, 0)
	taken := ""
	// The first slot's name taken by a backup as soon as it is journaled.
	r := w.refiller(refill.Config{Below: 1, To: 1, AfterStep: func(ctx context.Context, id string, s refill.Step) error {
		if s != refill.StepJournal || taken != "" {
			return nil
		}
		var sl slotDoc
		if err := w.db.Collection(refill.Collection).FindOne(ctx, bson.M{"_id": id}).Decode(&sl); err != nil {
			return err
		}
		taken = sl.Name
		_, err := w.db.Collection(w.pool.BackupsCollection).InsertOne(ctx,
			bson.M{"_id": taken, rotation.FieldAPIKey: "sk-someone-else-0123456789", rotation.FieldIsUsed: true})
		return err
	}})
	total := settle(t, w, r)
	if total.Orphaned != 1 || total.Created != 1 || w.unused() != 1 {
		t.Fatalf("report %+v, %d unused", total, w.unused())
	}
	for _, k := range w.up.ManagedKeys() {
		if k.Name == taken && !k.Disabled {
			t.Fatal("the key that could not become a backup is enabled upstream")
		}
	}
}
