package keyadmin_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spendchecker/spendchecker/internal/fakeupstream"
	"github.com/spendchecker/spendchecker/keyadmin"
)

const mgmtKey = "sk-or-v1-mgmt-0123456789abcdef0123456789abcdef"

// waits records the client's waits instead of sleeping.
type waits struct {
	mu sync.Mutex
	d  []time.Duration
}

func (w *waits) wait(_ context.Context, d time.Duration) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.d = append(w.d, d)
	return nil
}

func newAdmin(t *testing.T, kind string) (*fakeupstream.Server, *keyadmin.Client, *waits) {
	t.Helper()
	up := fakeupstream.New(kind)
	t.Cleanup(up.Close)
	up.EnableAdmin(mgmtKey)
	w := &waits{}
	// A minute per request, which a loaded machine may need; the hang tests
	// set their own.
	c, err := keyadmin.New(keyadmin.Config{Kind: kind, BaseURL: up.URL, AdminKey: mgmtKey, Wait: w.wait, Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	return up, c, w
}

var kinds = []string{keyadmin.OpenRouter, keyadmin.LiteLLM}

func TestLifecycleAsDocumented(t *testing.T) {
	for _, kind := range kinds {
		t.Run(kind, func(t *testing.T) {
			up, c, _ := newAdmin(t, kind)
			ctx := context.Background()
			proposed := ""
			if c.ProposesSecret() {
				var err error
				if proposed, err = keyadmin.NewSecret(); err != nil {
					t.Fatal(err)
				}
			}
			k, err := c.Create(ctx, "spendchecker-p-1", 10, proposed)
			if err != nil {
				t.Fatalf("create: %v", err)
			}
			if k.Secret == "" || k.ID == "" || k.Name != "spendchecker-p-1" {
				t.Fatalf("create answered %+v", k)
			}
			if proposed != "" && (k.Secret != proposed || k.ID != c.IDOf(proposed)) {
				t.Fatalf("the proposed key was not the one created: %+v", k)
			}
			got := up.ManagedKeys()
			if len(got) != 1 || got[0].Limit != 10 || got[0].Secret != k.Secret || got[0].ID != k.ID {
				t.Fatalf("upstream holds %+v", got)
			}
			found, err := c.FindByName(ctx, "spendchecker-p-1")
			if err != nil || len(found) != 1 || found[0].ID != k.ID || found[0].Secret != "" {
				t.Fatalf("find: %+v, %v", found, err)
			}
			for range 2 { // disabling twice is no error
				if err := c.Disable(ctx, k.ID); err != nil {
					t.Fatalf("disable: %v", err)
				}
			}
			if !up.Disabled(k.Secret) || up.ManagedKeys()[0].Disables != 1 {
				t.Fatalf("not disabled once upstream: %+v", up.ManagedKeys()[0])
			}
			if l, err := c.Lookup(ctx, k.ID); err != nil || !l.Disabled {
				t.Fatalf("lookup after disable: %+v, %v", l, err)
			}
			if err := c.Enable(ctx, k.ID); err != nil || up.Disabled(k.Secret) {
				t.Fatalf("enable: %v", err)
			}
			if err := c.Delete(ctx, k.ID); err != nil {
				t.Fatalf("delete: %v", err)
			}
			for name, err := range map[string]error{
				"lookup":  func() error { _, err := c.Lookup(ctx, k.ID); return err }(),
				"disable": c.Disable(ctx, k.ID),
				"delete":  c.Delete(ctx, k.ID),
			} {
				if !errors.Is(err, keyadmin.ErrNotFound) {
					t.Errorf("%s of a deleted key: %v, want ErrNotFound", name, err)
				}
			}
		})
	}
}

// The list is read to its end whatever the page size, and the name
// picked out of it.
func TestFindReadsEveryPage(t *testing.T) {
	for _, kind := range kinds {
		for _, page := range []int{1, 3, 100} {
			t.Run(fmt.Sprintf("%s/page%d", kind, page), func(t *testing.T) {
				up, c, _ := newAdmin(t, kind)
				up.SetPageSize(page)
				want := map[string]bool{}
				for i := range 250 {
					name := fmt.Sprintf("other-%d", i)
					if i%97 == 5 {
						name = "wanted"
					}
					k := up.AddManagedKey(name, "", 1)
					if name == "wanted" {
						want[k.ID] = true
					}
				}
				found, err := c.FindByName(context.Background(), "wanted")
				if err != nil {
					t.Fatal(err)
				}
				if len(found) != len(want) {
					t.Fatalf("found %d keys named wanted, want %d", len(found), len(want))
				}
				for _, k := range found {
					if !want[k.ID] {
						t.Errorf("found %s, not one of them", k.ID)
					}
				}
			})
		}
	}
}

func TestMisbehavingUpstream(t *testing.T) {
	tooMany := func(after string) fakeupstream.AdminHooks {
		n := 0
		return fakeupstream.AdminHooks{Before: func(w http.ResponseWriter, _ *http.Request) bool {
			if n++; n > 1 {
				return false
			}
			w.Header().Set("Retry-After", after)
			w.WriteHeader(http.StatusTooManyRequests)
			fmt.Fprint(w, `{"error":{"code":429,"message":"Rate limit exceeded"}}`)
			return true
		}}
	}
	for _, kind := range kinds {
		t.Run(kind+"/429 retried after Retry-After", func(t *testing.T) {
			up, c, w := newAdmin(t, kind)
			k := up.AddManagedKey("x", "", 1)
			up.SetAdminHooks(tooMany("7"))
			if err := c.Disable(context.Background(), k.ID); err != nil {
				t.Fatal(err)
			}
			if len(w.d) != 1 || w.d[0] < 7*time.Second {
				t.Fatalf("waited %v, want one wait of at least 7s", w.d)
			}
		})
		t.Run(kind+"/429 with a long Retry-After fails at once", func(t *testing.T) {
			up, c, w := newAdmin(t, kind)
			up.AddManagedKey("x", "", 1)
			up.SetAdminHooks(tooMany("3600"))
			_, err := c.FindByName(context.Background(), "x")
			if keyadmin.RetryAfter(err) != time.Hour || len(w.d) != 0 {
				t.Fatalf("err %v, waits %v: want Retry-After 1h reported, no wait", err, w.d)
			}
		})
		t.Run(kind+"/5xx on create is never retried", func(t *testing.T) {
			up, c, _ := newAdmin(t, kind)
			up.SetAdminHooks(fakeupstream.AdminHooks{AfterCreate: func(w http.ResponseWriter, _ *http.Request, _ fakeupstream.ManagedKey) bool {
				w.WriteHeader(http.StatusBadGateway)
				fmt.Fprint(w, `upstream connect error`)
				return true
			}})
			_, err := c.Create(context.Background(), "n", 5, "")
			var e *keyadmin.Error
			if !errors.As(err, &e) || !e.Temporary() {
				t.Fatalf("err %v, want a temporary *Error", err)
			}
			if up.Creates("n") != 1 {
				t.Fatalf("%d creates sent, want 1", up.Creates("n"))
			}
			if found, err := c.FindByName(context.Background(), "n"); err != nil || len(found) != 1 {
				t.Fatalf("the key created under the 502 is not found: %v %v", found, err)
			}
		})
		t.Run(kind+"/timeout after the key was created", func(t *testing.T) {
			up, _, _ := newAdmin(t, kind)
			c, _ := keyadmin.New(keyadmin.Config{Kind: kind, BaseURL: up.URL, AdminKey: mgmtKey, Timeout: 50 * time.Millisecond})
			up.SetAdminHooks(fakeupstream.AdminHooks{AfterCreate: func(_ http.ResponseWriter, r *http.Request, _ fakeupstream.ManagedKey) bool {
				<-r.Context().Done()
				return true
			}})
			_, err := c.Create(context.Background(), "n", 5, "")
			var e *keyadmin.Error
			if !errors.As(err, &e) || e.Status != 0 || !e.Temporary() {
				t.Fatalf("err %v, want no answer", err)
			}
			if up.Creates("n") != 1 || len(up.ManagedKeys()) != 1 {
				t.Fatalf("want the one key created upstream")
			}
		})
		t.Run(kind+"/answer without the secret", func(t *testing.T) {
			up, c, _ := newAdmin(t, kind)
			up.SetAdminHooks(fakeupstream.AdminHooks{AfterCreate: func(w http.ResponseWriter, _ *http.Request, k fakeupstream.ManagedKey) bool {
				if kind == keyadmin.OpenRouter {
					fmt.Fprintf(w, `{"data":{"hash":%q,"name":%q,"disabled":false}}`, k.ID, k.Name)
				} else {
					fmt.Fprintf(w, `{"key_alias":%q,"max_budget":5}`, k.Name)
				}
				return true
			}})
			proposed := ""
			if c.ProposesSecret() {
				proposed, _ = keyadmin.NewSecret()
			}
			k, err := c.Create(context.Background(), "n", 5, proposed)
			if !errors.Is(err, keyadmin.ErrNoSecret) || k.ID != up.ManagedKeys()[0].ID {
				t.Fatalf("got %+v, %v: want ErrNoSecret with the created key's id", k, err)
			}
		})
		t.Run(kind+"/secrets echoed in errors are masked", func(t *testing.T) {
			up, c, _ := newAdmin(t, kind)
			leak := "sk-or-v1-leaked0123456789abcdef0123"
			up.SetAdminHooks(fakeupstream.AdminHooks{Before: func(w http.ResponseWriter, r *http.Request) bool {
				w.WriteHeader(http.StatusBadRequest)
				fmt.Fprintf(w, `{"error":{"message":"bad key %s sent with %s"}}`, leak, r.Header.Get("Authorization"))
				return true
			}})
			_, err := c.Create(context.Background(), "n", 5, "")
			if err == nil || strings.Contains(err.Error(), leak) || strings.Contains(err.Error(), mgmtKey) {
				t.Fatalf("error leaks a secret: %v", err)
			}
		})
	}
}

// An upstream that ignores offset would list its first page for ever.
func TestListIgnoringOffsetFails(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, `{"data":[{"hash":"h1","name":"a","disabled":false},{"hash":"h2","name":"b","disabled":false}]}`)
	}))
	defer srv.Close()
	c, _ := keyadmin.New(keyadmin.Config{Kind: keyadmin.OpenRouter, BaseURL: srv.URL, AdminKey: mgmtKey})
	if _, err := c.FindByName(context.Background(), "a"); err == nil || !strings.Contains(err.Error(), "offset ignored") {
		t.Fatalf("err %v, want the repeated list refused", err)
	}
}

// A disable answered 200 with the key still enabled is not a disable.
func TestDisableAnswerStillEnabled(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, `{"data":{"hash":"h1","name":"a","disabled":false}}`)
	}))
	defer srv.Close()
	c, _ := keyadmin.New(keyadmin.Config{Kind: keyadmin.OpenRouter, BaseURL: srv.URL, AdminKey: mgmtKey})
	if err := c.Disable(context.Background(), "h1"); err == nil {
		t.Fatal("a disable the answer contradicts succeeded")
	}
}
