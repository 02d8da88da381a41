package spend_test

import (
	"strings"
	"testing"
)

// Answers at the edges of the shared reading: an error body under 200,
// budget texts under 429, case variants, JSON inside a page, a body past
// the size cap. Both paths must read each alike.
func TestAdv22ReadingParityAtTheEdges(t *testing.T) {
	user := `{"error":{"message":"ExceededBudget: User=u-1 over budget. Spend=10.5, Budget=10.0","type":"budget_exceeded","param":null,"code":"400"}}`
	cases := []struct {
		status int
		body   string
	}{
		{200, user},
		{200, `{"error":{"message":"Incorrect API key provided.","type":"invalid_request_error","code":"invalid_api_key"}}`},
		{429, user},
		{400, strings.ToLower(user)},
		{400, `{"error":{"message":"EXCEEDEDBUDGET: User=u-1 OVER BUDGET. Spend=10.5, Budget=10.0"}}`},
		{401, `<html><pre>` + user + `</pre></html>`},
		{400, strings.Repeat(" ", 1<<20) + user},
		{400, user + strings.Repeat(" ", 1<<20)},
		{401, `{"error":{"message":"Authentication Error, User=u-1 over budget. Spend=10.5, Budget=10.0","type":"auth_error","param":"None","code":"401"}}`},
	}
	for _, c := range cases {
		if testing.Short() && len(c.body) > 1<<20 {
			continue // every parser reads 1 MiB: seconds each
		}
		if d, l := daemonReading(t, c.status, c.body), libraryReading(c.status, c.body); d != l {
			t.Errorf("%d %.120q: the daemon reads %v, the proxy's ShouldRotate %v", c.status, strings.TrimSpace(c.body), d, l)
		}
	}
}
