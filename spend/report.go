package spend

// A batch report and its parsers: what OpenRouter's key list, OpenAI's
// costs and Anthropic's cost report say of each key (docs/providers.md, "Batch
// reports"). batch.go fetches them.

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
)

// attributed refuses a cost report that has costs but puts none on any key:
// the grouping was not applied, or the organization's rows carry no
// api_key_id (Claude Enterprise organizations). Read as it is, it would say
// every key spent nothing.
func (r *Report) attributed() (*Report, error) {
	if len(r.Keys) == 0 && r.unattributed > 0 {
		return nil, unclear("the report puts no cost to any API key (%d costs without an api_key_id): grouping by key is not available to this account", r.unattributed)
	}
	return r, nil
}

// Report is one upstream report: what it says of each key it lists, by
// the upstream's key id.
type Report struct {
	Keys map[string]ReportRow
	// Requests is how many upstream requests (pages) the report took.
	Requests int
	// unattributed counts cost rows above 0 that name no key.
	unattributed int
	// seen holds the (bucket, key) pairs added: a cost report has one row
	// per key and time bucket.
	seen map[string]bool
}

// add sums a page's cost rows into the report: one key has a row per
// bucket.
func (r *Report) add(pg ReportPage) error {
	r.unattributed += pg.Unattributed
	for _, row := range pg.Rows {
		if row.Bucket != "" {
			// A bucket repeated (on a later page, behind a new cursor)
			// would add its cost twice: the report is not what it says.
			k := row.Bucket + "\x00" + row.ID
			if r.seen[k] {
				return unclear("key %q: the bucket starting %s is reported twice", row.ID, row.Bucket)
			}
			if r.seen == nil {
				r.seen = map[string]bool{}
			}
			r.seen[k] = true
		}
		old := r.Keys[row.ID]
		old.ID = row.ID
		old.Spend += row.Spend
		if math.IsInf(old.Spend, 0) {
			return unclear("key %q: total cost overflows", row.ID)
		}
		r.Keys[row.ID] = old
	}
	return nil
}

// ReportRow is one key's figures in a report page.
type ReportRow struct {
	ID    string
	Spend float64 // USD
	// Budget and BudgetSpend are as in Result (OpenRouter's limit).
	Budget, BudgetSpend *float64
	Disabled            bool
	// Bucket is the cost row's time bucket (its start), "" when the row
	// has none: a (bucket, key) pair counts once.
	Bucket string
}

// ReportPage is one page of a report.
type ReportPage struct {
	Rows []ReportRow
	More bool   // has_more
	Next string // the next page's cursor
	// Unattributed counts the cost rows above 0 that name no key.
	Unattributed int
}

// reportStatus handles a report answer that is not a 200. The admin key's
// own 401 or 403 says nothing about any pool key: never ErrUnauthorized.
func reportStatus(status int, body []byte) error {
	if status == http.StatusOK {
		return nil
	}
	if status == http.StatusUnauthorized || status == http.StatusForbidden {
		return unclear("the report refused the admin key (%d): check the admin key and its scope; no pool key is judged on it: %.120q", status, body)
	}
	return unclear("report status %d: %.120q", status, body)
}

// ParseOpenRouterKeys reads one page of GET /api/v1/keys: data[] with hash,
// usage (lifetime USD), limit, limit_remaining, limit_reset and disabled
// (openrouter.ai/docs/api/api-reference/api-keys/list).
func ParseOpenRouterKeys(status int, body []byte) (ReportPage, error) {
	if err := reportStatus(status, body); err != nil {
		return ReportPage{}, err
	}
	var v struct {
		Data *[]json.RawMessage `json:"data"`
	}
	if err := decode(body, &v); err != nil {
		return ReportPage{}, err
	}
	if v.Data == nil {
		return ReportPage{}, unclear("data missing")
	}
	var pg ReportPage
	for i, item := range *v.Data {
		var k struct {
			Hash     *string `json:"hash"`
			Disabled *bool   `json:"disabled"`
		}
		if err := decode(item, &k); err != nil {
			return ReportPage{}, err
		}
		if k.Hash == nil || *k.Hash == "" {
			return ReportPage{}, unclear("data[%d].hash missing", i)
		}
		// The item carries the same figures as GET /api/v1/key's data.
		r, err := ParseOpenRouter(http.StatusOK, append(append([]byte(`{"data":`), item...), '}'))
		if err != nil {
			return ReportPage{}, fmt.Errorf("key %q: %w", *k.Hash, err)
		}
		pg.Rows = append(pg.Rows, ReportRow{ID: *k.Hash, Spend: r.Spend, Budget: r.Budget, BudgetSpend: r.BudgetSpend,
			Disabled: k.Disabled != nil && *k.Disabled})
	}
	return pg, nil
}

// ParseOpenAICosts reads one page of GET /v1/organization/costs grouped by
// api_key_id: data[] buckets whose results carry amount.value (USD),
// amount.currency and api_key_id; has_more and next_page. Results without
// an api_key_id (costs no key made) are not any key's.
func ParseOpenAICosts(status int, body []byte) (ReportPage, error) {
	if err := reportStatus(status, body); err != nil {
		return ReportPage{}, err
	}
	var v struct {
		Data *[]struct {
			StartTime json.RawMessage `json:"start_time"`
			Results   []struct {
				Amount *struct {
					Value    json.RawMessage `json:"value"`
					Currency string          `json:"currency"`
				} `json:"amount"`
				APIKeyID *string `json:"api_key_id"`
			} `json:"results"`
		} `json:"data"`
		HasMore  *bool   `json:"has_more"`
		NextPage *string `json:"next_page"`
	}
	if err := decode(body, &v); err != nil {
		return ReportPage{}, err
	}
	if v.Data == nil || v.HasMore == nil {
		return ReportPage{}, unclear("data or has_more missing")
	}
	pg := ReportPage{More: *v.HasMore}
	if v.NextPage != nil {
		pg.Next = *v.NextPage
	}
	for _, b := range *v.Data {
		for _, r := range b.Results {
			if r.APIKeyID == nil || *r.APIKeyID == "" {
				if r.Amount != nil && positive(r.Amount.Value) {
					pg.Unattributed++
				}
				continue
			}
			if r.Amount == nil {
				return ReportPage{}, unclear("key %q: amount missing", *r.APIKeyID)
			}
			if !strings.EqualFold(r.Amount.Currency, "usd") {
				return ReportPage{}, unclear("key %q: currency %.10q is not USD", *r.APIKeyID, r.Amount.Currency)
			}
			s, err := number(r.Amount.Value)
			if err != nil {
				return ReportPage{}, fmt.Errorf("key %q: %w", *r.APIKeyID, err)
			}
			pg.Rows = append(pg.Rows, ReportRow{ID: *r.APIKeyID, Spend: s, Bucket: bucketOf(b.StartTime)})
		}
	}
	return pg, nil
}

// ParseAnthropicCost reads one page of GET /v1/organizations/analytics/cost
// grouped by api_key_id: data[] rows with group.api_key_id and cost.amount
// in fractional cents (a decimal string or a number) and cost.currency
// (always "USD"); has_more and next_page. Rows without an api_key_id (seat
// users, the console) are not any key's.
func ParseAnthropicCost(status int, body []byte) (ReportPage, error) {
	if err := reportStatus(status, body); err != nil {
		return ReportPage{}, err
	}
	var v struct {
		Data *[]struct {
			StartingAt json.RawMessage `json:"starting_at"`
			Group      *struct {
				APIKeyID *string `json:"api_key_id"`
			} `json:"group"`
			Cost *struct {
				Amount   json.RawMessage `json:"amount"`
				Currency string          `json:"currency"`
			} `json:"cost"`
		} `json:"data"`
		HasMore  *bool   `json:"has_more"`
		NextPage *string `json:"next_page"`
	}
	if err := decode(body, &v); err != nil {
		return ReportPage{}, err
	}
	if v.Data == nil || v.HasMore == nil {
		return ReportPage{}, unclear("data or has_more missing")
	}
	pg := ReportPage{More: *v.HasMore}
	if v.NextPage != nil {
		pg.Next = *v.NextPage
	}
	for _, r := range *v.Data {
		if r.Group == nil || r.Group.APIKeyID == nil || *r.Group.APIKeyID == "" {
			if r.Cost != nil && positive(r.Cost.Amount) {
				pg.Unattributed++
			}
			continue
		}
		id := *r.Group.APIKeyID
		if r.Cost == nil {
			return ReportPage{}, unclear("key %q: cost missing", id)
		}
		if !strings.EqualFold(r.Cost.Currency, "usd") {
			return ReportPage{}, unclear("key %q: currency %.10q is not USD", id, r.Cost.Currency)
		}
		raw := r.Cost.Amount
		if t := strings.TrimSpace(string(raw)); len(t) > 1 && t[0] == '"' {
			// A decimal string: its text is the number.
			var s string
			if err := json.Unmarshal(raw, &s); err != nil || s == "" || !json.Valid([]byte(s)) || (s[0] != '-' && (s[0] < '0' || s[0] > '9')) {
				return ReportPage{}, unclear("key %q: amount is not a number: %.40q", id, t)
			}
			raw = json.RawMessage(s)
		}
		cents, err := number(raw)
		if err != nil {
			return ReportPage{}, fmt.Errorf("key %q: %w", id, err)
		}
		pg.Rows = append(pg.Rows, ReportRow{ID: id, Spend: cents / 100, Bucket: bucketOf(r.StartingAt)})
	}
	return pg, nil
}

// bucketOf is a bucket's start as the report gives it (a number or a
// string), "" when absent.
func bucketOf(raw json.RawMessage) string {
	t := strings.TrimSpace(string(raw))
	if t == "" || t == "null" {
		return ""
	}
	return t
}

// positive reports whether an amount, a JSON number or a decimal string,
// is above 0.
func positive(raw json.RawMessage) bool {
	t := strings.Trim(strings.TrimSpace(string(raw)), `"`)
	v, err := strconv.ParseFloat(t, 64)
	return err == nil && v > 0
}
