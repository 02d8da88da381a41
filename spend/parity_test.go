package spend_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spendchecker/spendchecker/internal/fakeupstream"
	"github.com/spendchecker/spendchecker/rotation/proxyrotate"
	"github.com/spendchecker/spendchecker/spend"
)

// reading is what one path makes of an upstream answer: whether the key
// rotates, as what, and for which LiteLLM user's budget.
type reading struct {
	class string // "rejected", "exhausted", "budget" or "" (no rotation)
	user  string
}

func (r reading) String() string {
	if r.class == "" {
		return "no rotation"
	}
	if r.user != "" {
		return r.class + " (user " + r.user + ")"
	}
	return r.class
}

// The library's reasons, by the class the daemon rotates them as.
var reasonClass = map[string]string{
	"unauthorized": "rejected", "payment_required": "rejected", "forbidden": "rejected", "invalid_key": "rejected",
	"exhausted": "exhausted", "factory_quota_exhausted": "exhausted",
	"budget_exceeded": "budget",
}

// libraryReading is the proxy's path: ShouldRotate, then Rotate with its
// decision.
func libraryReading(status int, body string) reading {
	d, ok := proxyrotate.ShouldRotate(status, body)
	if !ok {
		return reading{}
	}
	class := reasonClass[d.Reason]
	if class == "" {
		class = "unknown reason " + d.Reason
	}
	return reading{class: class, user: d.BudgetUser}
}

// daemonParsers are the built-in providers' parsers: each reads its
// provider's answers, and an error answer through the same reading.
var daemonParsers = map[string]func(int, []byte) (spend.Result, error){
	"openhands": spend.ParseOpenHands, "litellm": spend.ParseLiteLLM, "openrouter": spend.ParseOpenRouter,
	"oneapi subscription": spend.ParseOneAPISubscription, "oneapi usage": spend.ParseOneAPIUsage,
	"deepseek": spend.ParseDeepSeek, "moonshot": spend.ParseMoonshot, "siliconflow": spend.ParseSiliconFlow,
}

// daemonDecision is what the checker does with a poll's outcome
// (checker.checkKey): a rejection, a used-up quota and a budget refusal
// rotate; anything unclear or failed does not.
func daemonDecision(res spend.Result, err error) reading {
	switch {
	case errors.Is(err, spend.ErrUnauthorized):
		return reading{class: "rejected"}
	case err != nil:
		return reading{}
	case res.Exhausted:
		return reading{class: "exhausted"}
	case res.BudgetExceeded:
		return reading{class: "budget", user: res.BudgetUser}
	}
	return reading{class: "figure"}
}

// daemonReading is the daemon's path through every built-in parser; they
// must all read an error answer alike.
func daemonReading(t *testing.T, status int, body string) reading {
	t.Helper()
	names := make([]string, 0, len(daemonParsers))
	for n := range daemonParsers {
		names = append(names, n)
	}
	sort.Strings(names)
	var first reading
	for i, n := range names {
		got := daemonDecision(daemonParsers[n](status, []byte(body)))
		if i == 0 {
			first = got
		} else if got != first {
			t.Errorf("%d %.120q: parser %s reads %v, parser %s %v", status, body, n, got, names[0], first)
		}
	}
	return first
}

// recordedAnswers are the upstream answers whose reading matters most, with
// what both paths must make of them.
var recordedAnswers = []struct {
	name, source string
	status       int
	body         string
	want         reading
}{
	// LiteLLM (OpenHands' llm-proxy is LiteLLM).
	{"access refusal: model not allowed", "litellm/proxy/auth/auth_checks.py _can_object_call_model (ProxyException key_model_access_denied, 401)",
		401, `{"error":{"message":"API Key not allowed to access model. This token can only access models=['gpt-4o-mini']. Tried to access gpt-4o","type":"key_model_access_denied","param":"model","code":"401"}}`, reading{}},
	{"access refusal, older wording", "litellm/proxy/auth/auth_checks.py can_key_call_model, in user_api_key_auth.py's auth_error envelope",
		401, `{"error":{"message":"Authentication Error, key not allowed to access model. This key can only access models=['gpt-4o-mini']. Tried to access gpt-4o","type":"auth_error","param":"None","code":"401"}}`, reading{}},
	{"access refusal, client message", "litellm/proxy/auth/model_access_denied.py MODEL_ACCESS_DENIED_CLIENT_MESSAGE (403)",
		403, `{"error":{"message":"The requested model 'gpt-5.6' is not available for this API key, or the model name is invalid. Check the models available to you and try again.","type":"key_model_access_denied","param":"model","code":"403"}}`, reading{}},
	{"access refusal: route", "litellm/proxy/auth/route_checks.py",
		401, `{"error":{"message":"Authentication Error, Only proxy admin can be used to generate, delete, update info for new keys/users/teams. Route=/key/info. Your role=internal_user_viewer. Your user_id=u1 not allowed to call this route.","type":"auth_error","param":"None","code":"401"}}`, reading{}},
	{"unknown key", "litellm/proxy/auth/user_api_key_auth.py (auth_error)",
		401, litellmAuthError, reading{class: "rejected"}},
	{"key budget", "litellm/exceptions.py BudgetExceededError",
		400, openhandsOver, reading{class: "budget"}},
	{"key budget, token form", "docs/my-website/docs/proxy/users.md",
		401, litellmTokenOver, reading{class: "budget"}},
	{"key budget as a 429", "spend/adv17_test.go (some LiteLLM deployments)",
		429, openhandsOver, reading{class: "budget"}},
	{"personal (user) budget", "litellm/proxy/auth/auth_checks.py common_checks 4.1; docs/my-website/docs/proxy/users.md",
		400, litellmUserOver, reading{class: "budget", user: "<user_id>"}},
	{"personal budget, the seeds' upstream", "goproxy/internal/openhands/spend_checker.go (\"Spend=10.02107649999999, Budget=10.0\")",
		400, `{"error":{"message":"ExceededBudget: User=2f6d0b9e-4c1a-4c47-9f1e-6b1c3e9d2a77 over budget. Spend=10.02107649999999, Budget=10.0","type":"budget_exceeded","param":null,"code":"400"}}`, reading{class: "budget", user: "2f6d0b9e-4c1a-4c47-9f1e-6b1c3e9d2a77"}},
	{"personal budget as a 429", "litellm/proxy/auth/auth_checks.py (BudgetExceededError answered 429 by some deployments)",
		429, `{"error":{"message":"ExceededBudget: User=512837 over budget. Spend=15.0, Budget=15.0","type":"budget_exceeded","param":null,"code":"429"}}`, reading{class: "budget", user: "512837"}},
	{"personal budget, older plain exception", "litellm/proxy/auth/auth_checks.py (older: raise Exception, auth_error 401)",
		401, `{"error":{"message":"Authentication Error, User=alice@example.com over budget. Spend=10.5, Budget=10.0","type":"auth_error","param":"None","code":"401"}}`, reading{class: "budget", user: "alice@example.com"}},
	{"team budget", "litellm/proxy/auth/auth_checks.py (Team=…)", 400, litellmTeamOver, reading{}},
	{"team budget, token form", "litellm/proxy/auth/user_api_key_auth.py", 401, litellmTeamOver2, reading{}},
	{"team budget, over-budget form", "litellm/proxy/auth/auth_checks.py _team_max_budget_check",
		400, `{"error":{"message":"Team=team-a over budget. Spend=51.2, Budget=50.0","type":"budget_exceeded","param":null,"code":"400"}}`, reading{}},
	{"organisation budget", "litellm/proxy/auth/auth_checks_organization.py",
		400, `{"error":{"message":"Budget has been exceeded! Organization=org-1 Current cost: 101.0, Max budget: 100.0","type":"budget_exceeded","param":null,"code":"400"}}`, reading{}},
	{"project budget", "litellm/proxy/auth/auth_checks.py _project_max_budget_check",
		400, `{"error":{"message":"Budget has been exceeded! Project=p-1 Current cost: 20.5, Max budget: 20.0","type":"budget_exceeded","param":null,"code":"400"}}`, reading{}},
	{"tag budget", "litellm/proxy/auth/auth_checks.py (Tag=…)",
		400, `{"error":{"message":"Budget has been exceeded! Tag=prod Current cost: 5.5, Max budget: 5.0","type":"budget_exceeded","param":null,"code":"400"}}`, reading{}},
	{"customer budget", "litellm/proxy/auth/auth_checks.py (End User=…); spend/adv17_test.go",
		400, `{"error":{"message":"ExceededBudget: End User=user@example.com_premium_models over budget. Spend=300.16, Budget=300.0","type":"budget_exceeded","param":null,"code":"400"}}`, reading{}},
	{"global budget", "litellm/proxy/auth/auth_checks.py _global_proxy_budget_check; spend/adv17_test.go",
		401, `{"error":{"message":"Authentication Error, ExceededBudget: LiteLLM Proxy has exceeded its budget. Current spend: 1000.5; Max Budget: 1000.0","type":"auth_error","param":"None","code":"401"}}`, reading{}},
	{"model budget", "litellm/proxy/hooks/model_max_budget_limiter.py",
		400, `{"error":{"message":"LiteLLM Virtual Key: sk-...abcd, exceeded budget for model=gpt-4o","type":"budget_exceeded","param":null,"code":"400"}}`, reading{}},
	// OpenRouter: openrouter.ai/docs/api-reference/errors.
	{"openrouter no credentials", "openrouter.ai/docs/api-reference/errors", 401, openrouterAuth, reading{class: "rejected"}},
	{"openrouter insufficient credits", "openrouter.ai/docs/api-reference/errors (402)",
		402, `{"error":{"code":402,"message":"Insufficient credits. Add more using https://openrouter.ai/credits"}}`, reading{class: "rejected"}},
	// one-api and new-api.
	{"one-api exhausted", "one-api middleware/auth.go, model/token.go", 401, oneapiExhausted, reading{class: "exhausted"}},
	{"new-api exhausted", "new-api model/token.go", 401, newapiExhausted, reading{class: "exhausted"}},
	// Not the provider.
	{"CDN block page", "Cloudflare", 403, cdnBlockHTML, reading{}},
	{"CDN error 1020", "Cloudflare", 403, cdnBlockJSON, reading{}},
	{"rate limit", "any", 429, `{"error":{"message":"Rate limit exceeded","code":"429"}}`, reading{}},
	{"overloaded", "any", 529, `{"error":{"message":"Overloaded","type":"overloaded_error"}}`, reading{}},
	// The proxy's own rules (goproxy/internal/openhands/openhands.go,
	// internal/openhandspool/rotation.go, internal/keypool/rotation.go
	// CheckAndRotateOnError): "ExceededBudget", "budget_exceeded" and
	// "over budget" on a 400, 401/402/403, Factory's quota texts,
	// invalid_api_key or revoked.
	{"proxy: ExceededBudget without figures", "goproxy CheckAndRotateOnError (400, \"ExceededBudget\")",
		400, `{"error":{"message":"ExceededBudget"}}`, reading{}},
	{"proxy: budget_exceeded type without figures", "goproxy CheckAndRotateOnError (400, \"budget_exceeded\")",
		400, `{"error":{"message":"Key is over its limit","type":"budget_exceeded","param":null,"code":"400"}}`, reading{}},
	{"proxy: over budget without figures", "goproxy CheckAndRotateOnError (400, \"over budget\")",
		400, `{"error":{"message":"Key over budget"}}`, reading{}},
	{"proxy: 400 other", "goproxy forwardToEndpoint (400 without a budget text: sanitised, no rotation)",
		400, `{"error":{"message":"prompt is too long: 200076 tokens > 200000 maximum","type":"invalid_request_error"}}`, reading{}},
	{"proxy: 401", "goproxy CheckAndRotateOnError (401)",
		401, `{"error":{"message":"Authentication failed","type":"authentication_error","code":"invalid_api_key"}}`, reading{class: "rejected"}},
	{"proxy: 402", "goproxy CheckAndRotateOnError (402)",
		402, `{"error":{"message":"Payment required","type":"payment_required"}}`, reading{class: "rejected"}},
	{"proxy: 403", "goproxy CheckAndRotateOnError (403)",
		403, `{"error":{"message":"Forbidden","type":"permission_error"}}`, reading{class: "rejected"}},
	{"proxy: 401 block page", "goproxy CheckAndRotateOnError (401; not the provider's)", 401, `<html><body>401 Authorization Required</body></html>`, reading{}},
	{"factory: reload your tokens", "goproxy/internal/keypool/rotation.go",
		402, `{"error":{"message":"Ready for more? Reload your tokens at https://app.factory.ai/settings/billing"}}`, reading{class: "exhausted"}},
	{"factory: subscribe, as a 429", "goproxy/internal/keypool/rotation.go (checked before the 429 cooldown)",
		429, `{"detail":"Ready to get started? Subscribe at https://app.factory.ai/settings/billing"}`, reading{class: "exhausted"}},
	{"factory: invalid_api_key", "goproxy/internal/keypool/rotation.go; internal/rotationtest/proxyrotate/adv18_test.go",
		400, `{"error":{"message":"Incorrect API key provided.","type":"invalid_request_error","code":"invalid_api_key"}}`, reading{class: "rejected"}},
	{"factory: revoked", "goproxy/internal/keypool/rotation.go", 500, `{"error":{"message":"This API key has been revoked."}}`, reading{class: "rejected"}},
	{"factory: revoked on a page", "goproxy/internal/keypool/rotation.go (not JSON: a page)", 500, `<html>token revoked? see status page</html>`, reading{}},
}

// TestUpstreamReadingParity runs every upstream answer the project records
// through both paths — the daemon's (a provider's parser, then what the
// checker does with its outcome) and the proxy's (proxyrotate.ShouldRotate)
// — and fails on any disagreement: the recorded answers above with what
// both must make of them, then every answer in the project's tests and the
// fake upstream's, at every error status.
func TestUpstreamReadingParity(t *testing.T) {
	for _, c := range recordedAnswers {
		t.Run(c.name, func(t *testing.T) {
			d, l := daemonReading(t, c.status, c.body), libraryReading(c.status, c.body)
			if d != l {
				t.Errorf("%d %s (%s): the daemon reads %v, the proxy's ShouldRotate %v", c.status, c.body, c.source, d, l)
			}
			if d != c.want {
				t.Errorf("%d %s (%s): read %v, want %v", c.status, c.body, c.source, d, c.want)
			}
		})
	}
	corpus := append(fakeAnswers(t), sourceAnswers(t)...)
	if len(corpus) < 100 {
		t.Fatalf("only %d recorded answers found: the collection is broken", len(corpus))
	}
	statuses := []int{400, 401, 402, 403, 404, 429, 500, 503, 529}
	if testing.Short() {
		// A rejection and a refusal; the long run tries every status.
		statuses = []int{401, 429}
	}
	disagree := 0
	for _, a := range corpus {
		for _, st := range append([]int{a.status}, statuses...) {
			if st == 0 || st == http.StatusOK {
				continue
			}
			if d, l := daemonReading(t, st, a.body), libraryReading(st, a.body); d != l {
				disagree++
				if disagree <= 20 {
					t.Errorf("%s: %d %.200q: the daemon reads %v, the proxy's ShouldRotate %v", a.from, st, a.body, d, l)
				}
			}
		}
	}
	if disagree > 0 {
		t.Errorf("%d disagreements over %d recorded answers", disagree, len(corpus))
	}
	t.Logf("%d recorded answers, each read at its own status and %d others, by %d parsers and ShouldRotate", len(corpus), len(statuses), len(daemonParsers))
}

// TestUpstreamReadingParityThroughTheClient runs the recorded answers
// through the daemon's whole poll — the HTTP client, which retries 429 and
// 5xx unless the answer is about the key, then the parser.
func TestUpstreamReadingParityThroughTheClient(t *testing.T) {
	for _, c := range recordedAnswers {
		t.Run(c.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(c.status)
				_, _ = io.WriteString(w, c.body)
			}))
			defer srv.Close()
			cl := &spend.Client{MaxAttempts: 2, Wait: func(context.Context, time.Duration) error { return nil }}
			p, err := spend.New("litellm", srv.URL, cl)
			if err != nil {
				t.Fatal(err)
			}
			d := daemonDecision(p.Spend(context.Background(), spend.Key{Secret: "sk-parity-0123456789"}))
			if l := libraryReading(c.status, c.body); d != l {
				t.Errorf("%d %s (%s): the daemon's poll reads %v, the proxy's ShouldRotate %v", c.status, c.body, c.source, d, l)
			}
		})
	}
}

type recorded struct {
	from   string
	status int
	body   string
}

// fakeAnswers are internal/fakeupstream's error answers, as it sends them.
func fakeAnswers(t *testing.T) []recorded {
	t.Helper()
	var out []recorded
	get := func(s *fakeupstream.Server, kind, secret, path string) {
		req, _ := http.NewRequest(http.MethodGet, s.URL+path, nil)
		req.Header.Set("Authorization", "Bearer "+secret)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			out = append(out, recorded{from: "fakeupstream " + kind, status: resp.StatusCode, body: string(b)})
		}
	}
	for _, kind := range []string{"openhands", "litellm", "openrouter", "oneapi", "deepseek"} {
		s := fakeupstream.New(kind)
		s.SetSpend("over", 10.02)
		s.SetBudget("over", 10)
		s.SetSpend("tiny", 1.5e-05)
		s.SetBudget("tiny", 1e-05)
		for _, st := range []int{400, 401, 402, 403, 429, 500, 503} {
			secret := "status-" + strconv.Itoa(st)
			s.SetSpend(secret, 1)
			s.SetStatus(secret, st)
			get(s, kind, secret, "/")
		}
		for _, secret := range []string{"unknown", "over", "tiny"} {
			get(s, kind, secret, "/v1/dashboard/billing/subscription")
		}
		s.Close()
	}
	return out
}

// answerLike keeps the string literals that are upstream answers: a JSON
// object, a page, or a text naming a budget, a quota or a rejection.
var answerLike = regexp.MustCompile(`(?i)budget|额度|quota|unauthori|forbidden|revoked|invalid_api_key|not allowed|reload your tokens|subscribe|credits`)

// sourceAnswers collects every string literal of the project's tests that
// is an upstream answer, so an answer recorded in a new test is read by
// both paths without being listed here.
func sourceAnswers(t *testing.T) []recorded {
	t.Helper()
	var out []recorded
	seen := map[string]bool{}
	fset := token.NewFileSet()
	err := filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "node_modules") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		f, err := parser.ParseFile(fset, path, src, 0)
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			lit, ok := n.(*ast.BasicLit)
			if !ok || lit.Kind != token.STRING {
				return true
			}
			s, err := strconv.Unquote(lit.Value)
			if err != nil || seen[s] || len(s) > 4096 || strings.Contains(s, "%") {
				return true
			}
			trimmed := strings.TrimSpace(s)
			isJSON := strings.HasPrefix(trimmed, "{") && json.Valid([]byte(trimmed))
			if isJSON || strings.HasPrefix(trimmed, "<") || answerLike.MatchString(s) {
				seen[s] = true
				out = append(out, recorded{from: fset.Position(lit.Pos()).String(), body: s})
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}
