package spend

import (
	"bytes"
	"context"
	"encoding/json"
	"net/url"
	"strconv"
	"strings"

	"github.com/spendchecker/spendchecker/rotation/secret"
)

// Balance providers report what remains of the account's balance, not a
// key's spend; every key of the account reports the same figure
// (docs/providers.md). Each answer is shared in the cycle by account
// (Key.Account, else the key itself).
type balance struct {
	name, base, path string
	c                *Client
	parse            func(status int, body []byte) (Result, error)
	// currency is implied by the host when the answer carries none.
	currency string
}

func (p *balance) Name() string { return p.name }

func (p *balance) Spend(ctx context.Context, k Key) (Result, error) {
	return SharedSuccess(ctx, accountID(p.name, p.base, k), func(ctx context.Context) (Result, error) {
		resp, err := p.c.Get(ctx, p.base+p.path, k.Secret)
		if err != nil {
			return Result{}, secret.Redact(err, k.Secret)
		}
		r, err := p.parse(resp.Status, resp.Body)
		if err != nil {
			return Result{}, secret.Redact(err, k.Secret)
		}
		if r.Currency == "" {
			r.Currency = p.currency
		}
		return r, nil
	})
}

// hostCurrency: Moonshot and SiliconFlow bill in CNY on their .cn hosts
// and in USD on the international ones; their answers name no currency.
func hostCurrency(base string) string {
	u, err := url.Parse(base)
	if err != nil {
		return ""
	}
	switch h := u.Hostname(); {
	case strings.HasSuffix(h, ".cn"):
		return "CNY"
	case strings.HasSuffix(h, "moonshot.ai"), strings.HasSuffix(h, "siliconflow.com"):
		return "USD"
	}
	return ""
}

// flexNumber reads a finite number given as a JSON number or a string
// holding one ("110.00"): balance APIs send either. Either sign.
func flexNumber(raw json.RawMessage) (float64, error) {
	t := bytes.TrimSpace(raw)
	if len(t) > 0 && t[0] == '"' {
		var s string
		if err := json.Unmarshal(t, &s); err != nil {
			return 0, unclear("not a number: %.40q", raw)
		}
		s = strings.TrimSpace(s)
		if s == "" || strings.ContainsAny(s, "xXpP_") {
			// Go reads hex floats and underscores; an upstream does not send them.
			return 0, unclear("not a number: %.40q", raw)
		}
		if _, err := strconv.ParseFloat(s, 64); err != nil {
			return 0, unclear("not a number: %.40q", raw)
		}
		t = []byte(s)
	}
	return signedNumber(t)
}

// ParseDeepSeek reads DeepSeek's GET /user/balance
// (api-docs.deepseek.com/api/get-user-balance): {"is_available": true,
// "balance_infos": [{"currency": "CNY", "total_balance": "110.00",
// "granted_balance": "10.00", "topped_up_balance": "100.00"}]}, amounts as
// strings. The remaining figure is total_balance in USD when the account
// has a USD entry, else in the first entry's currency; is_available false
// (no balance the API may use) is a remaining of 0. An available account
// whose picked entry is empty while another currency is funded is a failed
// check: we do not guess its currency.
func ParseDeepSeek(status int, body []byte) (Result, error) {
	if r, done, err := common(status, body); done {
		return r, err
	}
	var v struct {
		IsAvailable *bool `json:"is_available"`
		Infos       []struct {
			Currency     string          `json:"currency"`
			TotalBalance json.RawMessage `json:"total_balance"`
		} `json:"balance_infos"`
	}
	if err := decode(body, &v); err != nil {
		return Result{}, err
	}
	if v.IsAvailable == nil {
		return Result{}, unclear("is_available missing")
	}
	if !*v.IsAvailable {
		zero := 0.0
		cur := ""
		if len(v.Infos) > 0 {
			cur = v.Infos[0].Currency
		}
		return Result{Remaining: &zero, Currency: cur}, nil
	}
	if len(v.Infos) == 0 {
		return Result{}, unclear("balance_infos empty")
	}
	pick := 0
	for i, in := range v.Infos {
		if in.Currency == "USD" {
			pick = i
			break
		}
	}
	rem, err := flexNumber(v.Infos[pick].TotalBalance)
	if err != nil {
		return Result{}, err
	}
	if rem <= 0 {
		// The account can still spend (is_available): if another entry is
		// funded it spends that currency, and reading the empty one as
		// "remaining 0" would rotate every key of a funded account. Which
		// currency the pool's --min-remaining means is not ours to guess: a
		// failed check, never a rotation (docs/providers.md).
		for i, in := range v.Infos {
			if i == pick {
				continue
			}
			if other, err := flexNumber(in.TotalBalance); err == nil && other > 0 {
				return Result{}, unclear("balance %s %s is empty but %s %s is funded and the account is available: not guessing which the account spends",
					v.Infos[pick].TotalBalance, v.Infos[pick].Currency, in.TotalBalance, in.Currency)
			}
		}
	}
	return Result{Remaining: &rem, Currency: v.Infos[pick].Currency}, nil
}

// ParseMoonshot reads Moonshot's GET /v1/users/me/balance
// (platform.moonshot.cn/docs/api/balance): {"code": 0, "data":
// {"available_balance": 49.58894, "voucher_balance": 46.58893,
// "cash_balance": 3.00001}, "scode": "0x0", "status": true}, numbers.
// available_balance (cash + vouchers; at or below 0 the inference API
// refuses the account) is the remaining figure; code ≠ 0 or status false
// on a 200 is a failed check.
func ParseMoonshot(status int, body []byte) (Result, error) {
	return parseCodedBalance(status, body, 0, "available_balance")
}

// ParseSiliconFlow reads SiliconFlow's GET /v1/user/info
// (docs.siliconflow.cn/cn/api-reference/userinfo/get-user-info):
// {"code": 20000, "message": "OK", "status": true, "data": {…, "balance":
// "0.88", "chargeBalance": "88.00", "totalBalance": "88.88"}}, amounts as
// strings. totalBalance (gift + charged) is the remaining figure; code ≠
// 20000 or status false on a 200 is a failed check.
func ParseSiliconFlow(status int, body []byte) (Result, error) {
	return parseCodedBalance(status, body, 20000, "totalBalance")
}

// parseCodedBalance reads the answer shape Moonshot and SiliconFlow share:
// {"code": N, "status": true, "data": {field: amount}}. A 200 with another
// code or status false is a failed check; the amount is a number or a
// numeric string.
func parseCodedBalance(status int, body []byte, okCode int, field string) (Result, error) {
	if r, done, err := common(status, body); done {
		return r, err
	}
	var v struct {
		Code   *int                       `json:"code"`
		Status *bool                      `json:"status"`
		Data   map[string]json.RawMessage `json:"data"`
	}
	if err := decode(body, &v); err != nil {
		return Result{}, err
	}
	if v.Code == nil || *v.Code != okCode || v.Status == nil || !*v.Status {
		return Result{}, unclear("200 without success (code %d, status true): %.160q", okCode, body)
	}
	raw, ok := v.Data[field]
	if !ok || isNull(raw) {
		return Result{}, unclear("data.%s missing", field)
	}
	rem, err := flexNumber(raw)
	if err != nil {
		return Result{}, err
	}
	return Result{Remaining: &rem}, nil
}

// HostCurrency is the currency a balance answer from baseURL is in when it
// names none ("" unknown).
func HostCurrency(baseURL string) string { return hostCurrency(baseURL) }
