package statuspage

import (
	"html"
	"html/template"
	"strings"
	"testing"
	"time"
)

// rowTemplate is a key's row as the page's template wrote it before
// keyRows did.
var rowTemplate = template.Must(template.New("row").Funcs(template.FuncMap{
	"usd": usd, "usdp": func(v *float64) string { return usdp(v) }, "reading": reading, "pct": pct, "bar": bar,
	"level": level, "ago": ago, "until": until, "rate": rate, "eta": eta,
}).Parse(`{{$threshold := .Threshold}}{{with .K}}<tr class="key" data-key="{{.ID}}">
<td><code>{{.ID}}</code></td>
<td><code class="mask">{{.APIKeyMasked}}</code></td>
<td><span class="st {{.Status}}">{{if .Status}}{{.Status}}{{else}}-{{end}}</span>{{if and .CheckError (not .NoReading)}} <span class="warn">upstream: {{.CheckError}}</span>{{end}}</td>
<td><div class="spend"><div class="bar" title="{{pct .PercentOfThreshold}} of {{usd $threshold}}"><div class="fill {{level .}}" style="{{bar .PercentOfThreshold}}"></div></div><span class="v">{{reading .}} &middot; {{pct .PercentOfThreshold}}</span></div></td>
<td class="num">{{usdp .Budget}}</td>
<td class="num">{{rate .RatePerHour}}</td>
<td>{{eta . $.Now}}</td>
<td>{{ago .LastCheck $.Now}}</td>
<td>{{until .NextCheck $.Now}}</td>
</tr>{{end}}`))

// keyRows writes what the template wrote, escaping as it did: the same
// bytes for ordinary values, the same text and no markup for odd ones.
func TestKeyRowIsTheTemplatesRow(t *testing.T) {
	f := func(v float64) *float64 { return &v }
	tm := func(d time.Duration) *time.Time { v := now.Add(d); return &v }
	for _, tc := range []struct {
		name  string
		k     KeyView
		exact bool
	}{
		{"checked", KeyView{ID: "key-0001", APIKeyMasked: "sk-ab...cdef", Status: "healthy", Spend: f(4), Budget: f(10), PercentOfThreshold: f(40.2),
			RatePerHour: f(1), ThresholdAt: tm(5 * time.Hour), LastCheck: tm(-time.Minute), NextCheck: tm(10 * time.Minute)}, true},
		{"unchecked", KeyView{ID: "b", APIKeyMasked: "****"}, true},
		{"over and rejected", KeyView{ID: "c", Status: "healthy", CheckError: "unauthorized", Spend: f(10.5), PercentOfThreshold: f(105), Over: true}, true},
		{"balance", KeyView{ID: "r", Remaining: f(3.5), Currency: "CNY", LastCheck: tm(-time.Second)}, true},
		{"no reading", KeyView{ID: "u", CheckError: "no_reading", NoReading: true}, true},
		{"odd id", KeyView{ID: `<script>x</script>`, APIKeyMasked: `a"b`, Status: `x" onclick="y`, CheckError: "<b>"}, false},
		{"odd id 2", KeyView{ID: `a&after=zz 'q' +1`}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var want strings.Builder
			if err := rowTemplate.Execute(&want, map[string]any{"Threshold": 9.95, "K": tc.k, "Now": now}); err != nil {
				t.Fatal(err)
			}
			got := strings.TrimPrefix(string(keyRows([]KeyView{tc.k}, 9.95, now)), "\n")
			if tc.exact && got != want.String() {
				t.Fatalf("row\n%s\nwant\n%s", got, want.String())
			}
			if html.UnescapeString(got) != html.UnescapeString(want.String()) {
				t.Errorf("row reads\n%s\nwant\n%s", html.UnescapeString(got), html.UnescapeString(want.String()))
			}
			for _, bad := range []string{"<script>", "<b>", `" onclick`} {
				if strings.Contains(got, bad) {
					t.Errorf("row carries %q: %s", bad, got)
				}
			}
		})
	}
}
