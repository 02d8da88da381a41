package spend

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/spendchecker/spendchecker/rotation/secret"
)

// Batch providers read one report per cycle that covers every key of an
// account, with an admin credential, instead of one request per key
// (docs/providers.md, "Batch reports").
var BatchNames = []string{"openrouter-keys", "openai-costs", "anthropic-costs"}

// IsBatch reports whether name is a batch provider.
func IsBatch(name string) bool {
	for _, n := range BatchNames {
		if n == name {
			return true
		}
	}
	return false
}

// BatchConfig configures a batch provider.
type BatchConfig struct {
	// AdminKey reads the report: OpenRouter's management key, OpenAI's
	// admin key, Anthropic's analytics key. A secret: errors mask it.
	AdminKey string
	// KeyIDs maps a pool key's document _id to its id in the report, for
	// keys whose documents carry no upstreamKeyId. The id cannot be derived
	// from the key itself.
	KeyIDs map[string]string
	// Lag is how far the report may run behind the spend: 0 means the
	// provider's DefaultLag, a negative value none.
	Lag time.Duration
	// Since is where the cost reports start adding (zero: DefaultSince):
	// spend before it is not seen. The OpenRouter list reports lifetime
	// usage and ignores it.
	Since time.Time
}

// DefaultLag is each batch provider's assumed report lag (docs/providers.md, "Batch
// reports"): OpenRouter's list, like /api/v1/key, charges a request when it
// finishes; OpenAI does not document how late its costs appear; Anthropic's
// report covers whole hours only and its data arrives minutes late.
func DefaultLag(name string) time.Duration {
	switch name {
	case "openrouter-keys":
		return time.Minute
	case "openai-costs":
		return time.Hour
	case "anthropic-costs":
		return time.Hour + 5*time.Minute
	}
	return 0
}

// DefaultSince is where a cost report starts adding when none is given:
// OpenAI's from 2023 (like the OpenHands activity); Anthropic's as far back
// as its analytics allow: the last 365 days, not before 2026.
func DefaultSince(name string, now time.Time) time.Time {
	switch name {
	case "openai-costs":
		return activityStart
	case "anthropic-costs":
		return anthropicEarliest(now)
	}
	return time.Time{}
}

func anthropicEarliest(now time.Time) time.Time {
	floor := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	// An hour inside the 365 days, so the first window is never refused
	// for starting a moment too early.
	return maxTime(floor, now.UTC().AddDate(-1, 0, 0).Add(time.Hour).Truncate(time.Hour))
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// Report limits: a report is read whole or not at all.
const (
	// maxReportPages bounds one report: 500 OpenRouter pages are 50,000
	// keys.
	maxReportPages = 500
	// reportMaxBody caps one report page: a cost page of 90 daily buckets
	// for 1,000 keys that all spent every day is about 15 MB.
	reportMaxBody = 32 << 20
	// openRouterPage is the keys per page of OpenRouter's list.
	openRouterPage = 100
	// openAICostBuckets is the buckets asked per costs page (1 to 180).
	openAICostBuckets = 90
	// anthropicWindow is the widest range asked of Anthropic at once: the
	// range its report covers when ending_at is omitted.
	anthropicWindow = 31 * 24 * time.Hour
	// anthropicBeta is the beta the analytics cost endpoint requires
	// (platform.claude.com/docs/en/api/go/beta/organization/analytics/cost).
	anthropicBeta = "analytics-usage-cost-2026-08-24"
)

// NewBatch returns the named batch provider talking to baseURL (""
// means the provider's public URL) through c.
func NewBatch(name, baseURL string, c *Client, cfg BatchConfig) (Provider, error) {
	if !IsBatch(name) {
		return nil, fmt.Errorf("unknown batch provider %q (known: %s)", name, strings.Join(BatchNames, ", "))
	}
	if strings.TrimSpace(cfg.AdminKey) == "" {
		return nil, fmt.Errorf("provider %s needs an admin key (docs/providers.md, \"Batch reports\")", name)
	}
	if baseURL == "" {
		baseURL = map[string]string{"openrouter-keys": "https://openrouter.ai", "openai-costs": "https://api.openai.com", "anthropic-costs": "https://api.anthropic.com"}[name]
	}
	u, err := url.Parse(baseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("provider URL %q is not an http(s) URL", baseURL)
	}
	if c == nil {
		c = &Client{}
	}
	p := &batchProvider{name: name, c: c, base: strings.TrimRight(baseURL, "/"), cfg: cfg, lag: cfg.Lag}
	if p.lag == 0 {
		p.lag = DefaultLag(name)
	}
	p.lag = max(p.lag, 0)
	// Everything that changes the report is in its memo key: two pools of
	// one account with different report-since read different reports.
	since := ""
	if !cfg.Since.IsZero() {
		since = strconv.FormatInt(cfg.Since.UnixNano(), 10)
	}
	// Keyed by provider, base URL, a hash of the admin key and since: two
	// pools reading one account share one fetch; no secret in the key.
	sum := sha256.Sum256([]byte(cfg.AdminKey))
	p.memo = name + "\x00" + p.base + "\x00" + hex.EncodeToString(sum[:]) + "\x00" + since
	return p, nil
}

type batchProvider struct {
	name, base string
	c          *Client
	cfg        BatchConfig
	lag        time.Duration
	memo       string // the report's id in a Cycle (ReportFor): no secret in it
}

func (p *batchProvider) Name() string { return p.name }

// Spend finds the key in this cycle's report. A key with no report id, or
// one the OpenRouter list does not name, is a failed check, never a spend
// of 0; a cost report lists only keys that spent, so a key it does not name
// spent nothing since Since.
func (p *batchProvider) Spend(ctx context.Context, k Key) (Result, error) {
	id := k.UpstreamID
	if id == "" {
		id = p.cfg.KeyIDs[k.ID]
	}
	if id == "" {
		return Result{}, unclear("no report id for this key: set upstreamKeyId on its document or map its _id in the pool's upstream-key-ids (docs/providers.md, \"Batch reports\")")
	}
	rep, err := ReportFor(ctx, p.memo, p.fetch)
	if err != nil {
		return Result{}, secret.Redact(err, p.cfg.AdminKey)
	}
	row, ok := rep.Keys[id]
	switch {
	case !ok && p.name == "openrouter-keys":
		return Result{}, unclear("key %q is not in the management key's list (deleted, another account, or a wrong upstreamKeyId)", id)
	case ok && row.Disabled:
		// The account says the key is disabled: as dead as a 401.
		return Result{}, ErrUnauthorized
	}
	// Every batch figure is cumulative (lifetime, or since report-since):
	// one below what was already recorded for the key — a cost report not
	// naming a key known to have spent above all (another organization's
	// admin key, report-since moved forward, an empty page) — says the
	// report is not this key's, not that its spend fell.
	if fell(row.Spend, k.Recorded) {
		if !ok {
			return Result{}, unclear("key %q is not in the cost report, though $%.2f was recorded for it (another organization, or report-since moved?)", id, k.Recorded)
		}
		return Result{}, unclear("key %q: the report says $%.2f, below the $%.2f recorded for it (another organization, or report-since moved?)", id, row.Spend, k.Recorded)
	}
	return Result{Spend: row.Spend, Budget: row.Budget, BudgetSpend: row.BudgetSpend, Lag: p.lag}, nil
}

// fell reports whether a cumulative figure is below the recorded one by
// more than a cent and 1% (sums of the same costs in another order, a
// small restatement).
func fell(now, recorded float64) bool {
	return recorded > 0 && now < recorded*0.99-0.01
}

func (p *batchProvider) fetch(ctx context.Context) (*Report, error) {
	switch p.name {
	case "openrouter-keys":
		return p.fetchOpenRouter(ctx)
	case "openai-costs":
		return p.fetchOpenAI(ctx)
	}
	return p.fetchAnthropic(ctx)
}

// fetchOpenRouter pages GET /api/v1/keys by offset (100 keys a page,
// openrouter.ai/docs/api/api-reference/api-keys/list), disabled keys
// included. The list has no has_more: it ends at a page shorter than the
// documented 100 or than the longest seen, or an empty one. Were the page
// size to shrink, keys past the first page would fail their checks as not
// listed, never read as spend 0.
func (p *batchProvider) fetchOpenRouter(ctx context.Context) (*Report, error) {
	rep := &Report{Keys: map[string]ReportRow{}}
	offset, longest := 0, 0
	for {
		if rep.Requests >= maxReportPages {
			return nil, unclear("the key list goes on past %d pages", maxReportPages)
		}
		q := url.Values{"include_disabled": {"true"}, "offset": {strconv.Itoa(offset)}}
		resp, err := p.c.getReport(ctx, p.base+"/api/v1/keys?"+q.Encode(), p.cfg.AdminKey, nil, reportMaxBody)
		if err != nil {
			return nil, err
		}
		rep.Requests++
		pg, err := ParseOpenRouterKeys(resp.Status, secret.RedactBody(resp.Body, p.cfg.AdminKey))
		if err != nil {
			return nil, err
		}
		fresh := 0
		for _, r := range pg.Rows {
			// Offsets shift when keys are created or deleted meanwhile: a
			// key listed twice keeps its larger usage.
			old, ok := rep.Keys[r.ID]
			if !ok {
				fresh++
			}
			if !ok || r.Spend >= old.Spend {
				rep.Keys[r.ID] = r
			}
		}
		n := len(pg.Rows)
		if offset > 0 && n > 0 && fresh == 0 {
			// A later page listing only keys already seen: the upstream (or
			// a gateway) ignores offset and would answer it for ever.
			return nil, unclear("the key list repeats its keys at offset %d: offset ignored?", offset)
		}
		longest = max(longest, n)
		if n < openRouterPage || n < longest {
			return rep, nil
		}
		offset += n
	}
}

// fetchOpenAI pages GET /v1/organization/costs grouped by api_key_id in
// daily buckets from Since, by next_page while has_more.
func (p *batchProvider) fetchOpenAI(ctx context.Context) (*Report, error) {
	since := p.cfg.Since
	if since.IsZero() {
		since = DefaultSince(p.name, p.c.now())
	}
	if !since.Before(p.c.now()) {
		// An empty report would read as every key spending nothing.
		return nil, unclear("report-since %s is not in the past", since.UTC().Format(time.RFC3339))
	}
	rep := &Report{Keys: map[string]ReportRow{}}
	next := ""
	cursors := map[string]bool{}
	for {
		if rep.Requests >= maxReportPages {
			return nil, unclear("the cost report goes on past %d pages", maxReportPages)
		}
		q := url.Values{"start_time": {strconv.FormatInt(since.Unix(), 10)}, "bucket_width": {"1d"},
			"group_by": {"api_key_id"}, "limit": {strconv.Itoa(openAICostBuckets)}}
		if next != "" {
			q.Set("page", next)
		}
		resp, err := p.c.getReport(ctx, p.base+"/v1/organization/costs?"+q.Encode(), p.cfg.AdminKey, nil, reportMaxBody)
		if err != nil {
			return nil, err
		}
		rep.Requests++
		pg, err := ParseOpenAICosts(resp.Status, secret.RedactBody(resp.Body, p.cfg.AdminKey))
		if err != nil {
			return nil, err
		}
		if err := rep.add(pg); err != nil {
			return nil, err
		}
		if !pg.More {
			return rep.attributed()
		}
		if pg.Next == "" || cursors[pg.Next] {
			// A cursor seen before (a → b → a …) would be followed for ever.
			return nil, unclear("has_more without a new next_page")
		}
		cursors[pg.Next] = true
		next = pg.Next
	}
}

// fetchAnthropic reads GET /v1/organizations/analytics/cost grouped by
// api_key_id, in windows of at most 31 days from Since, each paged by
// next_page while has_more.
func (p *batchProvider) fetchAnthropic(ctx context.Context) (*Report, error) {
	now := p.c.now().UTC().Truncate(time.Second)
	since := p.cfg.Since
	if since.IsZero() || since.Before(anthropicEarliest(now)) {
		since = anthropicEarliest(now)
	}
	if !since.Before(now) {
		// An empty report would read as every key spending nothing.
		return nil, unclear("report-since %s is not in the past", since.UTC().Format(time.RFC3339))
	}
	hdr := http.Header{}
	hdr.Set("X-Api-Key", p.cfg.AdminKey)
	hdr.Set("Anthropic-Version", "2023-06-01")
	hdr.Set("Anthropic-Beta", anthropicBeta)
	rep := &Report{Keys: map[string]ReportRow{}}
	for start := since; start.Before(now); start = start.Add(anthropicWindow) {
		end := start.Add(anthropicWindow)
		if end.After(now) {
			end = now
		}
		next := ""
		cursors := map[string]bool{}
		for {
			if rep.Requests >= maxReportPages {
				return nil, unclear("the cost report goes on past %d pages", maxReportPages)
			}
			q := url.Values{"starting_at": {start.Format(time.RFC3339)}, "ending_at": {end.Format(time.RFC3339)}, "group_by[]": {"api_key_id"}}
			if next != "" {
				q.Set("page", next)
			}
			resp, err := p.c.getReport(ctx, p.base+"/v1/organizations/analytics/cost?"+q.Encode(), p.cfg.AdminKey, hdr, reportMaxBody)
			if err != nil {
				return nil, err
			}
			rep.Requests++
			pg, err := ParseAnthropicCost(resp.Status, secret.RedactBody(resp.Body, p.cfg.AdminKey))
			if err != nil {
				return nil, err
			}
			if err := rep.add(pg); err != nil {
				return nil, err
			}
			if !pg.More {
				break
			}
			if pg.Next == "" || cursors[pg.Next] {
				return nil, unclear("has_more without a new next_page")
			}
			cursors[pg.Next] = true
			next = pg.Next
		}
	}
	return rep.attributed()
}

// ReportFor returns the report named key from the cycle ctx carries
// (Shared), fetching it there once: every key the report covers shares one
// fetch and its outcome, an error included (a report that failed fails
// every key it covers this cycle, after one fetch, not one per key), but
// not an error that was its asker's own (a fetch that ended with its
// asker's context is not kept; the next asker fetches again). Without a
// cycle every call fetches (one-off callers, tests).
func ReportFor(ctx context.Context, key string, fetch func(context.Context) (*Report, error)) (*Report, error) {
	return Shared(ctx, "report\x00"+key, func(ctx context.Context) (rep *Report, err error) {
		defer func() {
			if r := recover(); r != nil {
				rep, err = nil, fmt.Errorf("report fetch panicked: %v", r)
			}
		}()
		rep, err = fetch(ctx)
		if rep == nil && err == nil {
			err = errors.New("report fetch returned nothing")
		}
		return rep, err
	})
}
