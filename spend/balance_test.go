package spend_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/spendchecker/spendchecker/spend"
)

// Balance answers as documented:
//   - DeepSeek GET /user/balance (api-docs.deepseek.com/zh-cn/api/get-user-balance,
//     its example; amounts are strings, currency CNY or USD); errors
//     (api-docs.deepseek.com/quick_start/error_codes) in OpenAI's envelope.
//   - Moonshot GET /v1/users/me/balance (platform.moonshot.cn/docs/api/balance,
//     its example; numbers in CNY on api.moonshot.cn, USD on api.moonshot.ai;
//     cash_balance may be negative, available_balance ≤ 0 refuses inference).
//   - SiliconFlow GET /v1/user/info (docs.siliconflow.cn/cn/api-reference/
//     userinfo/get-user-info, its example; amounts are strings).
const (
	deepseekOK        = `{"is_available":true,"balance_infos":[{"currency":"CNY","total_balance":"110.00","granted_balance":"10.00","topped_up_balance":"100.00"}]}`
	deepseekTwo       = `{"is_available":true,"balance_infos":[{"currency":"CNY","total_balance":"110.00","granted_balance":"10.00","topped_up_balance":"100.00"},{"currency":"USD","total_balance":"3.50","granted_balance":"0.00","topped_up_balance":"3.50"}]}`
	deepseekEmpty     = `{"is_available":false,"balance_infos":[{"currency":"USD","total_balance":"0.00","granted_balance":"0.00","topped_up_balance":"0.00"}]}`
	deepseekAuth      = `{"error":{"message":"Authentication Fails, Your api key: ****abcd is invalid","type":"authentication_error","param":null,"code":"invalid_request_error"}}`
	moonshotOK        = `{"code":0,"data":{"available_balance":49.58894,"voucher_balance":46.58893,"cash_balance":3.00001},"scode":"0x0","status":true}`
	moonshotDebt      = `{"code":0,"data":{"available_balance":-0.5,"voucher_balance":0,"cash_balance":-0.5},"scode":"0x0","status":true}`
	moonshotFailed    = `{"code":5,"data":null,"scode":"0x5","status":false}`
	moonshotAuth      = `{"error":{"message":"Invalid Authentication","type":"invalid_authentication_error"}}`
	siliconflowOK     = `{"code":20000,"message":"OK","status":true,"data":{"id":"userid","name":"username","image":"user_avatar_image_url","email":"user_email_address","isAdmin":false,"balance":"0.88","status":"normal","introduction":"","role":"","chargeBalance":"88.00","totalBalance":"88.88"}}`
	siliconflowFailed = `{"code":30001,"message":"internal error","status":false,"data":null}`
)

func TestBalanceProviders(t *testing.T) {
	ok := func(b string) []answer { return []answer{{200, nil, b}} }
	tests := []struct {
		prov, path, host string
		answers          []answer
		want             spend.Result
		wantErr          string
	}{
		{"deepseek", "/user/balance", "", ok(deepseekOK), spend.Result{Remaining: f(110), Currency: "CNY"}, ""},
		{"deepseek", "/user/balance", "", ok(deepseekTwo), spend.Result{Remaining: f(3.5), Currency: "USD"}, ""},
		{"deepseek", "/user/balance", "", ok(deepseekEmpty), spend.Result{Remaining: f(0), Currency: "USD"}, ""},
		{"deepseek", "/user/balance", "", ok(`{"is_available":true,"balance_infos":[{"currency":"CNY","total_balance":"1O.00"}]}`), spend.Result{}, "unclear"},
		{"deepseek", "/user/balance", "", ok(`{"is_available":true,"balance_infos":[]}`), spend.Result{}, "unclear"},
		{"deepseek", "/user/balance", "", ok(`{"balance_infos":[{"currency":"CNY","total_balance":"1.00"}]}`), spend.Result{}, "unclear"},
		{"deepseek", "/user/balance", "", []answer{{401, nil, deepseekAuth}}, spend.Result{}, "unauthorized"},
		{"moonshot", "/v1/users/me/balance", "", ok(moonshotOK), spend.Result{Remaining: f(49.58894)}, ""},
		{"moonshot", "/v1/users/me/balance", "", ok(moonshotDebt), spend.Result{Remaining: f(-0.5)}, ""},
		{"moonshot", "/v1/users/me/balance", "", ok(moonshotFailed), spend.Result{}, "unclear"},
		{"moonshot", "/v1/users/me/balance", "", []answer{{401, nil, moonshotAuth}}, spend.Result{}, "unauthorized"},
		{"siliconflow", "/v1/user/info", "", ok(siliconflowOK), spend.Result{Remaining: f(88.88)}, ""},
		{"siliconflow", "/v1/user/info", "", ok(siliconflowFailed), spend.Result{}, "unclear"},
		{"siliconflow", "/v1/user/info", "", ok(strings.Replace(siliconflowOK, `"88.88"`, `"NaN"`, 1)), spend.Result{}, "unclear"},
		{"siliconflow", "/v1/user/info", "", ok(strings.Replace(siliconflowOK, `"88.88"`, `"0x10"`, 1)), spend.Result{}, "unclear"},
		// A 401 that is not the provider's JSON error is no statement about the key.
		{"siliconflow", "/v1/user/info", "", []answer{{401, nil, `"Invalid token"`}}, spend.Result{}, "unclear"},
	}
	for i, tt := range tests {
		t.Run(fmt.Sprintf("%s/%d", tt.prov, i), func(t *testing.T) {
			u := newUpstream(t, "Bearer sk-balance-test-0001", map[string][]answer{tt.path: tt.answers})
			ft := newFakeTime()
			p, err := spend.New(tt.prov, u.URL, &spend.Client{Now: ft.Now, Wait: ft.Wait})
			if err != nil {
				t.Fatal(err)
			}
			got, err := p.Spend(context.Background(), spend.Key{Secret: "sk-balance-test-0001"})
			checkOutcome(t, got, err, tt.want, tt.wantErr)
		})
	}
}

// The currency of an answer that names none comes from the host.
func TestBalanceCurrencyByHost(t *testing.T) {
	for _, tc := range []struct{ prov, url, want string }{
		{"moonshot", "https://api.moonshot.cn", "CNY"}, {"moonshot", "https://api.moonshot.ai", "USD"},
		{"siliconflow", "https://api.siliconflow.cn", "CNY"}, {"siliconflow", "https://api.siliconflow.com", "USD"},
		{"moonshot", "http://127.0.0.1:1", ""},
	} {
		got := spend.HostCurrency(tc.url)
		if got != tc.want {
			t.Errorf("%s %s: %q, want %q", tc.prov, tc.url, got, tc.want)
		}
	}
}

// Keys of one account are asked once per cycle when the account is named;
// without a name each key is its own account; a new cycle asks again. The
// shared answer carries no other key's secret.
func TestBalanceOncePerAccountPerCycle(t *testing.T) {
	u := newUpstream(t, "", map[string][]answer{"/user/balance": {{200, nil, deepseekOK}}})
	ft := newFakeTime()
	p, err := spend.New("deepseek", u.URL, &spend.Client{Now: ft.Now, Wait: ft.Wait})
	if err != nil {
		t.Fatal(err)
	}
	run := func(account string, keys int) {
		ctx := spend.WithCycle(context.Background(), spend.BeginCycle())
		var wg sync.WaitGroup
		for i := range keys {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r, err := p.Spend(ctx, spend.Key{Secret: fmt.Sprintf("sk-account-key-%04d", i), Account: account})
				if err != nil || r.Remaining == nil || *r.Remaining != 110 {
					t.Errorf("key %d: %s, %v", i, show(r), err)
				}
			}()
		}
		wg.Wait()
	}
	run("acme", 50)
	if n := u.n("/user/balance"); n != 1 {
		t.Fatalf("50 keys of one account asked %d times in a cycle, want 1", n)
	}
	run("acme", 50)
	if n := u.n("/user/balance"); n != 2 {
		t.Fatalf("a second cycle: %d requests in all, want 2", n)
	}
	run("", 5)
	if n := u.n("/user/balance"); n != 7 {
		t.Fatalf("5 keys without an account: %d requests in all, want 7 (one each)", n)
	}
}

func TestSharedErrorIsRedacted(t *testing.T) {
	const secret = "sk-leaky-secret-0123456789"
	u := newUpstream(t, "", map[string][]answer{"/user/balance": {{200, nil, `{"is_available":true,"balance_infos":[{"currency":"CNY","total_balance":"` + secret + `"}]}`}}})
	p, _ := spend.New("deepseek", u.URL, &spend.Client{})
	ctx := spend.WithCycle(context.Background(), spend.BeginCycle())
	_, err1 := p.Spend(ctx, spend.Key{Secret: secret, Account: "acme"})
	if err1 == nil || strings.Contains(err1.Error(), secret) {
		t.Fatalf("err %v: want a failure without the secret", err1)
	}
	// A failure is not shared (adv16a): the next key of the account asks
	// with its own key, so no key's error reaches another key's log line.
	_, err2 := p.Spend(ctx, spend.Key{Secret: "sk-other-key-000000000", Account: "acme"})
	if err2 == nil || u.n("/user/balance") != 2 {
		t.Fatalf("second key: %v after %d requests: want its own failed request", err2, u.n("/user/balance"))
	}
}
