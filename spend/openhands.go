package spend

import (
	"context"
	"encoding/json"
	"math"
	"net/url"
	"strconv"
	"time"

	"github.com/spendchecker/spendchecker/rotation/secret"
)

// Page is where one answer of a paginated endpoint sits.
type Page struct {
	Page, TotalPages int
	HasMore          bool
}

// ParseOpenHands reads one page of GET /user/daily/activity: its
// metadata.total_spend, which LiteLLM totals over that page's rows only.
func ParseOpenHands(status int, body []byte) (Result, error) {
	r, _, err := ParseOpenHandsPage(status, body)
	return r, err
}

// ParseOpenHandsPage is ParseOpenHands with the page's place: LiteLLM's
// DailySpendMetadata carries page, total_pages and has_more
// (litellm/proxy/management_endpoints/common_daily_activity.py,
// get_daily_activity).
func ParseOpenHandsPage(status int, body []byte) (Result, Page, error) {
	if r, done, err := common(status, body); done {
		return r, Page{}, err
	}
	var v struct {
		Metadata *struct {
			TotalSpend json.RawMessage `json:"total_spend"`
			Page       *int            `json:"page"`
			TotalPages *int            `json:"total_pages"`
			HasMore    *bool           `json:"has_more"`
		} `json:"metadata"`
	}
	if err := decode(body, &v); err != nil {
		return Result{}, Page{}, err
	}
	if v.Metadata == nil || v.Metadata.TotalSpend == nil {
		return Result{}, Page{}, unclear("metadata.total_spend missing")
	}
	s, err := number(v.Metadata.TotalSpend)
	if err != nil {
		return Result{}, Page{}, err
	}
	pg := Page{Page: 1, TotalPages: 1}
	if v.Metadata.Page != nil {
		pg.Page = *v.Metadata.Page
	}
	if v.Metadata.TotalPages != nil {
		pg.TotalPages = *v.Metadata.TotalPages
	}
	if v.Metadata.HasMore != nil {
		pg.HasMore = *v.Metadata.HasMore
	}
	return Result{Spend: s}, pg, nil
}

const (
	// activityPageSize is LiteLLM's largest (page_size le=1000).
	activityPageSize = 1000
	// maxActivityPages bounds one check: 50,000 daily rows. Beyond it the
	// pages read are a lower bound of the key's spend (Result.AtLeast).
	maxActivityPages = 50
	// activityMaxBody caps one page: a full page of 1,000 rows with
	// LiteLLM's per-model, per-provider and per-key breakdowns is about
	// 2.2 MB (docs/providers.md).
	activityMaxBody = 8 << 20
)

// activityStart precedes any key's life: LiteLLM's daily spend tables
// began in 2025, and a key document's createdAt is not its first spend
// (a migrated or restored key spent before it).
var activityStart = time.Date(2023, 1, 1, 0, 0, 0, 0, time.UTC)

type openHands struct {
	c    *Client
	base string
}

func (p *openHands) Name() string { return "openhands" }

// Spend follows every page and adds their totals: one request per 1,000
// daily rows (docs/providers.md).
func (p *openHands) Spend(ctx context.Context, k Key) (Result, error) {
	end := p.c.now().UTC().AddDate(0, 0, 1).Format(time.DateOnly)
	var total float64
	for page := 1; ; page++ {
		q := url.Values{
			"start_date": {activityStart.Format(time.DateOnly)},
			"end_date":   {end},
			"page":       {strconv.Itoa(page)},
			"page_size":  {strconv.Itoa(activityPageSize)},
		}
		resp, err := p.c.get(ctx, p.base+"/user/daily/activity?"+q.Encode(), k.Secret, activityMaxBody)
		if err != nil {
			return Result{}, err
		}
		r, pg, err := ParseOpenHandsPage(resp.Status, secret.RedactBody(resp.Body, k.Secret))
		if err != nil || r.BudgetExceeded {
			return r, err
		}
		total += r.Spend
		if math.IsInf(total, 0) {
			return Result{}, unclear("total spend overflows")
		}
		switch {
		case !pg.HasMore && pg.Page >= pg.TotalPages:
			// Either field saying there is more is believed: stopping early
			// would report part of the spend as all of it.
			return Result{Spend: total}, nil
		case page >= maxActivityPages:
			// The spend read so far is a lower bound: enough to rotate a key
			// already over its threshold, not to clear one.
			return Result{Spend: total, AtLeast: true}, nil
		case pg.Page != page:
			return Result{}, unclear("asked for page %d, got page %d", page, pg.Page)
		}
	}
}
