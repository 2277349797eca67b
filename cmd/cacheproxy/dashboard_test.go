package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheproxy/cacheproxy/internal/redistest"
	"github.com/cacheproxy/cacheproxy/internal/syncbuf"
)

const (
	dashboardFile = "../../deploy/grafana/dashboards/cacheproxy.json"
	alertsFile    = "../../deploy/prometheus/alerts.yml"
)

// dashboardQueries are the PromQL expressions of every panel of the
// dashboard, rows' panels included.
func dashboardQueries(t *testing.T) []string {
	t.Helper()
	data, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	type panel struct {
		Title   string
		Targets []struct{ Expr string }
		Panels  []json.RawMessage
	}
	var d struct{ Panels []json.RawMessage }
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatal(err)
	}
	var out []string
	var walk func([]json.RawMessage)
	walk = func(raw []json.RawMessage) {
		for _, r := range raw {
			var p panel
			if err := json.Unmarshal(r, &p); err != nil {
				t.Fatal(err)
			}
			for _, tg := range p.Targets {
				if tg.Expr != "" {
					out = append(out, tg.Expr)
				}
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	return out
}

var reGrafanaVar = regexp.MustCompile(`\$\{?(\w+)\}?`)

var (
	reMetric        = regexp.MustCompile(`cacheproxy_[a-z0-9_]+`)
	reClusterMetric = regexp.MustCompile(`^cacheproxy_cluster_`)
)

// clusterOnly reports whether every metric expr names is one the proxy
// exports only with a redis-cluster:// upstream: in front of one Redis such a
// query has no data, and in front of a cluster
// TestClusterCoherence/steady/DirectWritesReachL1 finds its metrics.
func clusterOnly(expr string) bool {
	names := reMetric.FindAllString(expr, -1)
	return len(names) > 0 && !slices.ContainsFunc(names, func(n string) bool { return !reClusterMetric.MatchString(n) })
}

// checkClusterMetricsExported fails t for every cluster metric that the
// dashboard or the alerting rules name and the scrape s, of a proxy in front
// of a Redis Cluster, lacks.
func checkClusterMetricsExported(t *testing.T, s string) {
	t.Helper()
	var text strings.Builder
	text.WriteString(strings.Join(dashboardQueries(t), "\n"))
	alerts, err := os.ReadFile(alertsFile)
	if err != nil {
		t.Fatal(err)
	}
	text.Write(alerts)
	n := 0
	for _, name := range reMetric.FindAllString(text.String(), -1) {
		if !reClusterMetric.MatchString(name) {
			continue
		}
		n++
		if !strings.Contains(s, "\n# TYPE "+name+" ") {
			t.Errorf("the dashboard or the alerts ask for %s, which a proxy in front of a cluster does not export", name)
		}
	}
	if n < 10 {
		t.Errorf("the dashboard and the alerts name cluster metrics only %d times", n)
	}
}

// grafanaSubst replaces the dashboard's variables with concrete values as
// Grafana would; a variable it does not know fails t.
func grafanaSubst(t *testing.T, expr string, vars map[string]string) string {
	t.Helper()
	return reGrafanaVar.ReplaceAllStringFunc(expr, func(v string) string {
		name := reGrafanaVar.FindStringSubmatch(v)[1]
		val, ok := vars[name]
		if !ok {
			t.Fatalf("query %s uses the variable %s, which this test does not know", expr, v)
		}
		return val
	})
}

// promAPI GETs path from the Prometheus at addr and decodes its data.
func promAPI(addr, path string, query url.Values, data any) error {
	resp, err := http.Get("http://" + addr + path + "?" + query.Encode())
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var body struct {
		Status string
		Error  string
		Data   json.RawMessage
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return fmt.Errorf("%s: %s: %w", path, resp.Status, err)
	}
	if body.Status != "success" {
		return fmt.Errorf("%s: %s", path, body.Error)
	}
	return json.Unmarshal(body.Data, data)
}

// startPrometheus runs Debian's prometheus scraping target every second, with
// the alerting rules loaded, storage in a temporary directory, and returns its
// address. It is stopped when the test ends.
func startPrometheus(t *testing.T, target string) string {
	t.Helper()
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Skip("prometheus is not installed (Debian: apt-get install -y prometheus; .ci/run installs it): the dashboard is not checked against a real Prometheus")
	}
	rules, err := filepath.Abs(alertsFile)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "prometheus.yml")
	err = os.WriteFile(cfg, []byte(fmt.Sprintf(`global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: [%q]
scrape_configs:
  - job_name: cacheproxy
    static_configs:
      - targets: [%q]
`, rules, target)), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	logs := &syncbuf.Buffer{}
	cmd := exec.Command(bin, "--config.file="+cfg, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--log.level=warn")
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	waitFor(t, 15*time.Second, "prometheus ready", logs, func() bool {
		resp, err := http.Get("http://" + addr + "/-/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return addr
}

// TestDashboardAgainstPrometheus runs traffic through the proxy (hits, misses,
// writes, a reload) while a real Prometheus scrapes it, then evaluates every
// query of the Grafana dashboard, its variables replaced as Grafana would, and
// requires each to return data, except the cluster row's (clusterOnly): in
// front of one Redis those must return none. The alerting rules must load and
// evaluate without error, and none may be active on a healthy proxy.
func TestDashboardAgainstPrometheus(t *testing.T) {
	queries := dashboardQueries(t)
	if len(queries) < 20 {
		t.Fatalf("the dashboard has only %d queries", len(queries))
	}
	t.Parallel()
	r := redistest.Start(t, redistest.Options{})
	p := startProc(t, r, "config_poll: 100ms\npolicies:\n  - {prefix: \"user:\", ttl: 1m}\n")
	prom := startPrometheus(t, p.metrics)

	c := redis.NewClient(&redis.Options{Addr: p.listen, Protocol: 2, MaxRetries: -1})
	defer c.Close()
	ctx, cancel := context.WithTimeout(bg, 30*time.Second)
	defer cancel()
	traffic := func() {
		for i := range 20 {
			key := fmt.Sprintf("user:%d", i)
			if err := c.Set(ctx, key, i, 0).Err(); err != nil {
				t.Fatal(err)
			}
			for range 3 { // a miss, then hits
				if err := c.Get(ctx, key).Err(); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	traffic()
	p.writeConfig("config_poll: 100ms\npolicies:\n  - {prefix: \"user:\", ttl: 2m}\n")
	waitFor(t, 10*time.Second, "the reload", p.logs, func() bool {
		return strings.Contains(scrape(t, p.metrics), `cacheproxy_config_reloads_total{result="success"} 1`)
	})

	vars := map[string]string{
		"instance":        p.metrics, // one instance, as Grafana passes a single choice
		"__rate_interval": "15s",
		"datasource":      "prometheus",
	}
	type sample struct{ Metric map[string]string }
	var empty, cluster []string
	deadline := time.Now().Add(20 * time.Second)
	for {
		traffic() // keeps the rates above zero
		empty, cluster = empty[:0], cluster[:0]
		for _, q := range queries {
			expr := grafanaSubst(t, q, vars)
			var res struct{ Result []sample }
			if err := promAPI(prom, "/api/v1/query", url.Values{"query": {expr}}, &res); err != nil {
				t.Fatalf("query %s: %v", expr, err)
			}
			switch {
			case clusterOnly(q) && len(res.Result) > 0:
				t.Fatalf("the cluster query %s has data in front of one Redis: %v", expr, res.Result)
			case clusterOnly(q):
				cluster = append(cluster, expr)
			case len(res.Result) == 0:
				empty = append(empty, expr)
			}
		}
		if len(empty) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	for _, expr := range empty {
		t.Errorf("no data for the dashboard's query %s", expr)
	}
	if len(cluster) == 0 || len(queries)-len(cluster) < 20 {
		t.Errorf("%d of the dashboard's %d queries are the cluster row's", len(cluster), len(queries))
	}

	// The instance variable's own query, label_values(cacheproxy_connected_clients, instance).
	var instances []string
	if err := promAPI(prom, "/api/v1/label/instance/values", url.Values{"match[]": {"cacheproxy_connected_clients"}}, &instances); err != nil {
		t.Fatal(err)
	}
	if len(instances) != 1 || instances[0] != p.metrics {
		t.Errorf("the instance variable would list %v, want [%s]", instances, p.metrics)
	}

	type rule struct {
		Name, Health, LastError, State string
	}
	var rules struct {
		Groups []struct {
			Name  string
			Rules []rule
		}
	}
	var bad []rule
	n := 0
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		if err := promAPI(prom, "/api/v1/rules", nil, &rules); err != nil {
			t.Fatal(err)
		}
		n, bad = 0, bad[:0]
		for _, g := range rules.Groups {
			for _, r := range g.Rules {
				n++
				if r.Health != "ok" || r.LastError != "" || r.State != "inactive" {
					bad = append(bad, r)
				}
			}
		}
		if n > 0 && len(bad) == 0 || time.Now().After(deadline) {
			break
		}
	}
	if n < 8 {
		t.Errorf("Prometheus loaded %d alerting rules from %s", n, alertsFile)
	}
	for _, r := range bad {
		t.Errorf("rule %s: health %q, state %q (want ok and inactive on a healthy proxy), error %q", r.Name, r.Health, r.State, r.LastError)
	}
}
