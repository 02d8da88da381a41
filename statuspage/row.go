package statuspage

import (
	"html"
	"html/template"
	"strings"
	"time"
)

// keyRows is the rows of the keys table, each after a newline. They are
// written here, every value escaped, rather than by the template: a page
// of the full list is 500 rows, and the template's reflection made a page
// cost about ten times the CPU, taken from the cycle while tabs are open.
func keyRows(keys []KeyView, threshold float64, now time.Time) template.HTML {
	var b strings.Builder
	b.Grow(len(keys) * 640)
	for _, k := range keys {
		b.WriteByte('\n')
		writeKeyRow(&b, k, threshold, now)
	}
	return template.HTML(b.String())
}

func writeKeyRow(b *strings.Builder, k KeyView, threshold float64, now time.Time) {
	esc := func(s string) { b.WriteString(html.EscapeString(s)) }
	b.WriteString(`<tr class="key" data-key="`)
	esc(k.ID)
	b.WriteString("\">\n<td><code>")
	esc(k.ID)
	b.WriteString("</code></td>\n<td><code class=\"mask\">")
	esc(k.APIKeyMasked)
	b.WriteString("</code></td>\n<td><span class=\"st ")
	esc(k.Status)
	b.WriteString(`">`)
	if k.Status != "" {
		esc(k.Status)
	} else {
		b.WriteString("-")
	}
	b.WriteString("</span>")
	if k.CheckError != "" && !k.NoReading {
		b.WriteString(` <span class="warn">upstream: `)
		esc(k.CheckError)
		b.WriteString("</span>")
	}
	b.WriteString("</td>\n<td><div class=\"spend\"><div class=\"bar\" title=\"")
	esc(pct(k.PercentOfThreshold) + " of " + usd(threshold))
	b.WriteString(`"><div class="fill `)
	b.WriteString(level(k))
	b.WriteString(`" style="`)
	esc(string(bar(k.PercentOfThreshold)))
	b.WriteString(`"></div></div><span class="v">`)
	esc(reading(k))
	b.WriteString(" &middot; ")
	esc(pct(k.PercentOfThreshold))
	b.WriteString("</span></div></td>\n<td class=\"num\">")
	esc(usdp(k.Budget))
	b.WriteString("</td>\n<td class=\"num\">")
	esc(rate(k.RatePerHour))
	b.WriteString("</td>\n<td>")
	esc(eta(k, now))
	b.WriteString("</td>\n<td>")
	esc(ago(k.LastCheck, now))
	b.WriteString("</td>\n<td>")
	esc(until(k.NextCheck, now))
	b.WriteString("</td>\n</tr>")
}
