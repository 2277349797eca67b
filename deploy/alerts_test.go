package deploy

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// alertRules are the rules of prometheus/alerts.yml, by alert name.
func alertRules(t *testing.T) map[string]any {
	t.Helper()
	out := map[string]any{}
	groups, _ := at(docs(t, "prometheus/alerts.yml")[0], "groups").([]any)
	for _, g := range groups {
		rules, _ := at(g, "rules").([]any)
		for _, r := range rules {
			out[str(at(r, "alert"))] = r
		}
	}
	return out
}

// TestAlertsForOperators: every alert has a severity an alert router can act on
// and a summary and description to read, asks only for metrics the proxy
// exports, and is unit-tested both firing and not firing; the compose stack's
// Prometheus loads the file.
func TestAlertsForOperators(t *testing.T) {
	rules := alertRules(t)
	if len(rules) < 8 {
		t.Fatalf("only %d alerts", len(rules))
	}
	for name, r := range rules {
		if sev := str(at(r, "labels", "severity")); sev != "critical" && sev != "warning" {
			t.Errorf("%s: severity %q, want critical or warning", name, sev)
		}
		if len(str(at(r, "annotations", "summary"))) < 20 || len(str(at(r, "annotations", "description"))) < 100 {
			t.Errorf("%s: the summary or description does not tell an operator enough: %v", name, at(r, "annotations"))
		}
		checkMetricsExist(t, name, str(at(r, "expr")))
	}

	fires, quiet := map[string]bool{}, map[string]bool{}
	tests, _ := at(docs(t, "prometheus/alerts_test.yml")[0], "tests").([]any)
	for _, test := range tests {
		cases, _ := at(test, "alert_rule_test").([]any)
		for _, c := range cases {
			name := str(at(c, "alertname"))
			if exp, _ := at(c, "exp_alerts").([]any); len(exp) > 0 {
				fires[name] = true
			} else {
				quiet[name] = true
			}
		}
	}
	for name := range rules {
		if !fires[name] || !quiet[name] {
			t.Errorf("%s: alerts_test.yml tests it firing: %v, not firing: %v", name, fires[name], quiet[name])
		}
	}

	prom := docs(t, "compose/prometheus.yml")[0]
	compose := docs(t, "docker-compose.yml")[0]
	files := yamlString(at(prom, "rule_files"))
	vols, _ := at(compose, "services", "prometheus", "volumes").([]any)
	if !slices.ContainsFunc(vols, func(v any) bool {
		src, dst, _ := strings.Cut(str(v), ":")
		return src == "./prometheus/alerts.yml" && strings.Contains(files, strings.TrimSuffix(dst, ":ro"))
	}) {
		t.Errorf("compose's Prometheus does not load prometheus/alerts.yml (rule_files %s, volumes %v)", files, vols)
	}
}

// TestAlertsPromtool: promtool accepts the rules, and their unit tests in
// alerts_test.yml pass.
func TestAlertsPromtool(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool is not installed (Debian: apt-get install -y prometheus; .ci/run installs it): the alerting rules are not checked")
	}
	t.Parallel()
	for _, args := range [][]string{{"check", "rules", "alerts.yml"}, {"test", "rules", "alerts_test.yml"}} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = "prometheus"
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}
