package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/spendchecker/spendchecker/notify"
)

// The alert rules and the dashboard in deploy/ (docs/operating.md, "Metrics and alerts")
// must name only series the daemon exports. The exported names come from the
// daemon's own registry, so a renamed or removed metric fails here.
// The test reads the deploy files relative to this package (three levels deep).
const (
	alertsFile    = "../../../deploy/prometheus/alerts.yaml"
	dashboardFile = "../../../deploy/grafana/spendchecker.json"
)

// pendingMetrics are named by the deploy files ahead of the code that exports
// them: remove an entry once the registry has it.
var pendingMetrics = map[string]string{}

// daemonRegistry is the daemon's registry with everything it registers:
// its own metrics and the notifier's.
func daemonRegistry(t *testing.T) *prometheus.Registry {
	t.Helper()
	m := newMetrics()
	n, err := notify.New(notify.Config{Registerer: m.reg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close(context.Background()) })
	return m.reg
}

func TestDeployFilesNameExportedMetrics(t *testing.T) {
	exported := exportedSeries(t, daemonRegistry(t))
	for name, why := range pendingMetrics {
		if exported[name] != "" {
			t.Logf("%s is exported now: remove it from pendingMetrics", name)
		} else {
			t.Logf("%s is not exported yet (%s); the deploy files already use it", name, why)
		}
	}
	for _, f := range []struct {
		file  string
		exprs []string
	}{
		{alertsFile, alertExprs(t, alertsFile)},
		{dashboardFile, dashboardExprs(t, dashboardFile)},
	} {
		for _, e := range f.exprs {
			names := metricNames(e)
			if len(names) == 0 {
				t.Errorf("%s: %q names no metric", f.file, e)
			}
			for _, n := range names {
				if exported[n] == "" && pendingMetrics[n] == "" {
					t.Errorf("%s names %s, which the daemon does not export, in %q", f.file, n, e)
				}
			}
		}
	}
}

// Every spendchecker_ metric has a panel.
func TestDashboardShowsEveryMetric(t *testing.T) {
	exported := exportedSeries(t, daemonRegistry(t))
	shown := map[string]bool{}
	for _, e := range dashboardExprs(t, dashboardFile) {
		for _, n := range metricNames(e) {
			shown[exported[n]] = true
		}
	}
	for _, fam := range exported {
		if strings.HasPrefix(fam, "spendchecker_") && !shown[fam] {
			t.Errorf("no panel of %s shows %s", dashboardFile, fam)
		}
	}
}

// promtool parses every dashboard query (the rules' are parsed by
// `promtool test rules` in .ci/run).
func TestDashboardQueriesParse(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("SPENDCHECKER_REQUIRE_PROMTOOL") != "" {
			t.Fatal("promtool not found and SPENDCHECKER_REQUIRE_PROMTOOL is set")
		}
		t.Skip("promtool not installed (.ci/run installs Debian's prometheus package)")
	}
	var b strings.Builder
	b.WriteString("groups:\n  - name: dashboard\n    rules:\n")
	for i, e := range dashboardExprs(t, dashboardFile) {
		q, _ := json.Marshal(e)
		fmt.Fprintf(&b, "      - record: dashboard_query_%d\n        expr: %s\n", i, q)
	}
	f := filepath.Join(t.TempDir(), "dashboard.rules.yaml")
	if err := os.WriteFile(f, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(promtool, "check", "rules", f).CombinedOutput(); err != nil {
		t.Fatalf("promtool check rules on the dashboard's queries: %v\n%s\n%s", err, out, b.String())
	}
}

// exportedSeries maps every series name the registry can expose, including
// vectors that have no child yet, to its metric family; a histogram (or
// summary) exposes _bucket, _sum and _count, never its bare name.
func exportedSeries(t *testing.T, reg *prometheus.Registry) map[string]string {
	t.Helper()
	descs := make(chan *prometheus.Desc)
	go func() { reg.Describe(descs); close(descs) }()
	fq := regexp.MustCompile(`fqName: "([^"]+)"`)
	names := map[string]string{}
	for d := range descs {
		m := fq.FindStringSubmatch(d.String())
		if m == nil {
			t.Fatalf("cannot read the name of %s", d)
		}
		names[m[1]] = m[1]
	}
	// Types are known for the families that have series; vectors still
	// empty are counters and gauges (a histogram vector would fail below,
	// loudly, as unknown).
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		switch mf.GetType() {
		case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
			delete(names, mf.GetName())
			for _, s := range []string{"_bucket", "_sum", "_count"} {
				names[mf.GetName()+s] = mf.GetName()
			}
		case dto.MetricType_SUMMARY:
			delete(names, mf.GetName())
			for _, s := range []string{"_sum", "_count"} {
				names[mf.GetName()+s] = mf.GetName()
			}
		}
	}
	if names["spendchecker_cycle_duration_seconds_bucket"] == "" || names["spendchecker_rotations_total"] == "" {
		t.Fatalf("the registry's names look wrong: %v", names)
	}
	return names
}

// alertExprs reads each rule's expr from a Prometheus rules file, plain or
// as a YAML block scalar (| or >), without a YAML library.
func alertExprs(t *testing.T, file string) []string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	key := regexp.MustCompile(`^(\s*)(?:- )?expr:\s*(.*)$`)
	rule := regexp.MustCompile(`^\s*- (alert|record):`)
	var exprs []string
	rules := 0
	for i := 0; i < len(lines); i++ {
		if rule.MatchString(lines[i]) {
			rules++
		}
		m := key.FindStringSubmatch(lines[i])
		if m == nil {
			continue
		}
		v := strings.TrimSpace(m[2])
		if strings.HasPrefix(v, "|") || strings.HasPrefix(v, ">") {
			var block []string
			for i+1 < len(lines) && (strings.TrimSpace(lines[i+1]) == "" || indent(lines[i+1]) > len(m[1])) {
				i++
				block = append(block, lines[i])
			}
			v = strings.Join(block, "\n")
		} else if uq, err := unquoteYAML(v); err == nil {
			v = uq
		} else {
			t.Fatalf("%s:%d: %v", file, i+1, err)
		}
		exprs = append(exprs, strings.TrimSpace(v))
	}
	if rules == 0 || len(exprs) != rules {
		t.Fatalf("%s: read %d exprs for %d rules", file, len(exprs), rules)
	}
	return exprs
}

func indent(s string) int { return len(s) - len(strings.TrimLeft(s, " ")) }

func unquoteYAML(v string) (string, error) {
	switch {
	case strings.HasPrefix(v, `"`):
		var s string
		err := json.Unmarshal([]byte(v), &s)
		return s, err
	case strings.HasPrefix(v, `'`):
		if len(v) < 2 || !strings.HasSuffix(v, `'`) {
			return "", fmt.Errorf("unterminated quote in %s", v)
		}
		return strings.ReplaceAll(v[1:len(v)-1], `''`, `'`), nil
	}
	return v, nil
}

// dashboardExprs returns every query of a Grafana dashboard: the panels'
// targets (rows included) and the template variables', with Grafana's
// interval variables replaced by a duration so the text is PromQL.
func dashboardExprs(t *testing.T, file string) []string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels     []json.RawMessage `json:"panels"`
		Templating struct {
			List []struct {
				Type  string          `json:"type"`
				Query json.RawMessage `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	var exprs []string
	var walk func(raw []json.RawMessage)
	walk = func(raw []json.RawMessage) {
		for _, r := range raw {
			var p struct {
				Type    string                  `json:"type"`
				Targets []struct{ Expr string } `json:"targets"`
				Panels  []json.RawMessage       `json:"panels"`
			}
			if err := json.Unmarshal(r, &p); err != nil {
				t.Fatalf("%s: %v", file, err)
			}
			if p.Type != "row" && len(p.Targets) == 0 {
				t.Errorf("%s: a %s panel has no query", file, p.Type)
			}
			for _, tg := range p.Targets {
				exprs = append(exprs, tg.Expr)
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	labelValues := regexp.MustCompile(`^label_values\((.*),\s*\w+\)$`)
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q struct{ Query string }
		if err := json.Unmarshal(v.Query, &q); err != nil {
			if err := json.Unmarshal(v.Query, &q.Query); err != nil {
				t.Fatalf("%s: template query %s: %v", file, v.Query, err)
			}
		}
		if m := labelValues.FindStringSubmatch(q.Query); m != nil {
			q.Query = m[1]
		}
		exprs = append(exprs, q.Query)
	}
	if len(exprs) == 0 {
		t.Fatalf("%s: no queries", file)
	}
	grafana := strings.NewReplacer("$__rate_interval", "5m", "$__interval", "1m", "$__range", "1h")
	for i := range exprs {
		exprs[i] = grafana.Replace(exprs[i])
	}
	return exprs
}

var (
	promqlStrings    = regexp.MustCompile("\"(?:[^\"\\\\]|\\\\.)*\"|'(?:[^'\\\\]|\\\\.)*'|`[^`]*`")
	promqlMatchers   = regexp.MustCompile(`\{[^}]*\}|\[[^\]]*\]`)
	promqlLabelLists = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	promqlTokens     = regexp.MustCompile(`[0-9][0-9a-zA-Z_.]*|[a-zA-Z_:][a-zA-Z0-9_:]*`)
	promqlKeywords   = []string{"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left", "group_right", "inf", "nan", "atan2", "start", "end"}
)

// metricNames returns the metric names a PromQL expression selects: what is
// left once strings, label matchers, ranges, grouping label lists, numbers,
// keywords and function names are taken out.
func metricNames(expr string) []string {
	s := promqlStrings.ReplaceAllString(expr, `""`)
	s = promqlMatchers.ReplaceAllString(s, " ")
	s = promqlLabelLists.ReplaceAllString(s, " ")
	seen := map[string]bool{}
	for _, loc := range promqlTokens.FindAllStringIndex(s, -1) {
		tok := s[loc[0]:loc[1]]
		if tok[0] >= '0' && tok[0] <= '9' || slices.Contains(promqlKeywords, strings.ToLower(tok)) {
			continue
		}
		if rest := strings.TrimLeft(s[loc[1]:], " \t\n"); strings.HasPrefix(rest, "(") {
			continue // a function or an aggregation
		}
		seen[tok] = true
	}
	names := make([]string, 0, len(seen))
	for n := range seen {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func TestMetricNames(t *testing.T) {
	for _, c := range []struct {
		expr string
		want []string
	}{
		{`min by (pool) (spendchecker_backup_keys_available) < 3`, []string{"spendchecker_backup_keys_available"}},
		{`time() - max(a_seconds > 0 or (b and on(instance, job) c{job=~"x|y"}))`, []string{"a_seconds", "b", "c"}},
		{`sum by (pool) (increase(x_total{outcome="no_backup"}[15m])) > 0 unless x_total offset 15m`, []string{"x_total"}},
		{`histogram_quantile(0.9, sum(rate(d_bucket[5m])) by (le))`, []string{"d_bucket"}},
		{`absent(up{job="a(b)"}) * 1e3 + vector(2)`, []string{"up"}},
		{`label_replace(m, "dst", "$1", "src", "(.*)")`, []string{"m"}},
		{"sum without (le) (rate(h_count[1m:30s])) / ignoring(x) group_left(y) k", []string{"h_count", "k"}},
	} {
		if got := metricNames(c.expr); !slices.Equal(got, c.want) {
			t.Errorf("metricNames(%q) = %v, want %v", c.expr, got, c.want)
		}
	}
}

// The check fails on a name the registry lacks, histogram suffixes on a
// metric that is not a histogram, and a bare histogram name.
func TestExportedSeriesRejectsUnknownNames(t *testing.T) {
	exported := exportedSeries(t, daemonRegistry(t))
	for _, n := range []string{"spendchecker_rotation_total", "spendchecker_leader_bucket", "spendchecker_cycle_duration_seconds"} {
		if exported[n] != "" {
			t.Errorf("%s counts as exported", n)
		}
	}
	for _, n := range []string{"spendchecker_cycle_duration_seconds_sum", "spendchecker_keys_checked_total", "spendchecker_backup_count_failures_total", "process_start_time_seconds", "go_goroutines"} {
		if exported[n] == "" {
			t.Errorf("%s does not count as exported", n)
		}
	}
}
