// Package deploy holds the files that run cacheproxy outside this repository:
// a Dockerfile, a docker-compose stack with Prometheus and Grafana, Kubernetes
// manifests, and Prometheus alerting rules. No container engine runs
// in the tests, so they check what can be checked without one: every file
// parses, every cacheproxy configuration in them loads with the proxy's own
// loader, names and ports agree across files, the dashboard and the alerts ask
// only for metrics that exist, and promtool checks and unit-tests the alerts.
package deploy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"io/fs"
	"maps"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"gopkg.in/yaml.v3"

	"github.com/cacheproxy/cacheproxy/config"
	"github.com/cacheproxy/cacheproxy/invalidation"
	"github.com/cacheproxy/cacheproxy/proxy"
)

// docs decodes every YAML document of path.
func docs(t *testing.T, path string) []any {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var out []any
	for {
		var v any
		err := dec.Decode(&v)
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		out = append(out, v)
	}
}

// at walks maps by key and lists by index; nil when the path is absent.
func at(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = m[k]
		case int:
			l, ok := v.([]any)
			if !ok || k >= len(l) {
				return nil
			}
			v = l[k]
		}
	}
	return v
}

func str(v any) string {
	s, _ := v.(string)
	return s
}

func port(t *testing.T, addr string) string {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestEveryFileParses(t *testing.T) {
	n := 0
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		switch filepath.Ext(path) {
		case ".yaml", ".yml":
			if len(docs(t, path)) == 0 {
				t.Errorf("%s holds no document", path)
			}
			n++
		case ".json":
			data, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			var v any
			if err := json.Unmarshal(data, &v); err != nil {
				t.Errorf("%s: %v", path, err)
			}
			n++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 12 {
		t.Fatalf("only %d YAML and JSON files found", n)
	}
}

// manifests are the Kubernetes objects by kind and name.
func manifests(t *testing.T) map[string]any {
	t.Helper()
	out := map[string]any{}
	paths, _ := filepath.Glob("kubernetes/*.yaml")
	for _, path := range paths {
		for _, d := range docs(t, path) {
			if kind := str(at(d, "kind")); kind != "" && kind != "Kustomization" {
				out[kind+"/"+str(at(d, "metadata", "name"))] = d
			}
		}
	}
	return out
}

// configs are every cacheproxy configuration in deploy/, loaded by the
// proxy's own loader, by where they come from.
func configs(t *testing.T) map[string]*config.Config {
	t.Helper()
	out := map[string]*config.Config{}
	for name, obj := range manifests(t) {
		if !strings.HasPrefix(name, "ConfigMap/") {
			continue
		}
		c, err := config.Parse([]byte(str(at(obj, "data", "cacheproxy.yaml"))), name)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		out[name] = c
	}
	for _, path := range []string{"compose/cacheproxy.yaml", "cacheproxy.example.yaml"} {
		c, err := config.Load(path)
		if err != nil {
			t.Errorf("%s: %v", path, err)
			continue
		}
		out[path] = c
	}
	return out
}

func TestConfigsLoad(t *testing.T) {
	cs := configs(t)
	for _, want := range []string{"ConfigMap/cacheproxy", "ConfigMap/app-cacheproxy", "ConfigMap/cluster-cacheproxy",
		"compose/cacheproxy.yaml", "cacheproxy.example.yaml"} {
		if cs[want] == nil {
			t.Errorf("no configuration %s", want)
		}
	}
}

func containerPorts(c any) map[string]string {
	out := map[string]string{}
	ports, _ := at(c, "ports").([]any)
	for _, p := range ports {
		out[str(at(p, "name"))] = strings.TrimSpace(yamlString(at(p, "containerPort")))
	}
	return out
}

func yamlString(v any) string {
	b, _ := yaml.Marshal(v)
	return strings.TrimSpace(string(b))
}

// TestKubernetesAgrees: the Deployment's ports, probes and mount match its
// ConfigMap, the Service and PodDisruptionBudget select its pods, and the
// sidecar example's application talks to its sidecar's listen address.
func TestKubernetesAgrees(t *testing.T) {
	m := manifests(t)
	cfg := configs(t)["ConfigMap/cacheproxy"]
	if cfg == nil {
		t.Fatal("no ConfigMap/cacheproxy")
	}
	dep := m["Deployment/cacheproxy"]
	pod := at(dep, "spec", "template")
	c := at(pod, "spec", "containers", 0)
	ports := containerPorts(c)
	if ports["redis"] != port(t, cfg.Listen) || ports["metrics"] != port(t, cfg.Metrics) {
		t.Errorf("container ports %v; the ConfigMap listens on %s and serves metrics on %s", ports, cfg.Listen, cfg.Metrics)
	}
	if a := str(at(pod, "metadata", "annotations", "prometheus.io/port")); a != port(t, cfg.Metrics) {
		t.Errorf("prometheus.io/port %q, metrics on %s", a, cfg.Metrics)
	}
	for probe, path := range map[string]string{"livenessProbe": "/healthz", "readinessProbe": "/readyz"} {
		if at(c, probe, "httpGet", "path") != path || at(c, probe, "httpGet", "port") != "metrics" {
			t.Errorf("%s: %v, want %s on the metrics port", probe, at(c, probe), path)
		}
	}
	args, _ := at(c, "args").([]any)
	mount := str(at(c, "volumeMounts", 0, "mountPath"))
	if len(args) != 2 || args[1] != mount+"/cacheproxy.yaml" || at(pod, "spec", "volumes", 0, "configMap", "name") != "cacheproxy" {
		t.Errorf("args %v do not name the ConfigMap's file under %s", args, mount)
	}
	grace, _ := at(pod, "spec", "terminationGracePeriodSeconds").(int)
	pause, _ := at(c, "lifecycle", "preStop", "sleep", "seconds").(int)
	if float64(grace) <= float64(pause)+cfg.ShutdownGrace.Seconds() {
		t.Errorf("terminationGracePeriodSeconds %d leaves no room for the preStop pause %ds and shutdown_grace %v", grace, pause, cfg.ShutdownGrace)
	}
	labels := at(pod, "metadata", "labels")
	for _, obj := range []string{"Service/cacheproxy", "PodDisruptionBudget/cacheproxy"} {
		sel := at(m[obj], "spec", "selector")
		if obj != "Service/cacheproxy" {
			sel = at(sel, "matchLabels")
		}
		for k, v := range sel.(map[string]any) {
			if at(labels, k) != v {
				t.Errorf("%s selects %s=%v, which the pods lack", obj, k, v)
			}
		}
	}
	svcPorts, _ := at(m["Service/cacheproxy"], "spec", "ports").([]any)
	for _, p := range svcPorts {
		if _, ok := ports[str(at(p, "targetPort"))]; !ok {
			t.Errorf("Service targets port %v, which the container does not name", at(p, "targetPort"))
		}
	}

	side := configs(t)["ConfigMap/app-cacheproxy"]
	app := m["Deployment/app"]
	proxyC := at(app, "spec", "template", "spec", "initContainers", 0)
	if at(proxyC, "restartPolicy") != "Always" {
		t.Error("the sidecar is not a native sidecar (restartPolicy: Always)")
	}
	if addr := str(at(app, "spec", "template", "spec", "containers", 0, "env", 0, "value")); side == nil || addr != side.Listen {
		t.Errorf("the application connects to %q, the sidecar listens on %v", addr, side)
	}
	if p := containerPorts(proxyC)["metrics"]; side == nil || p != port(t, side.Metrics) {
		t.Errorf("sidecar metrics port %q", p)
	}
}

// TestKubernetesClusterAgrees: the cluster example's proxies mount its
// ConfigMap, whose upstream is a Redis Cluster, expose its ports, probe
// readiness (every master's stream trusted) on /readyz, and its Service
// selects them.
func TestKubernetesClusterAgrees(t *testing.T) {
	m := manifests(t)
	cfg := configs(t)["ConfigMap/cluster-cacheproxy"]
	if cfg == nil {
		t.Fatal("no ConfigMap/cluster-cacheproxy")
	}
	if up := fmt.Sprint(cfg.Upstream); !strings.HasPrefix(up, "redis-cluster://") {
		t.Errorf("the cluster example's upstream is %q", up)
	}
	pod := at(m["Deployment/cacheproxy-cluster"], "spec", "template")
	c := at(pod, "spec", "containers", 0)
	ports := containerPorts(c)
	if ports["redis"] != port(t, cfg.Listen) || ports["metrics"] != port(t, cfg.Metrics) {
		t.Errorf("container ports %v; the ConfigMap listens on %s and serves metrics on %s", ports, cfg.Listen, cfg.Metrics)
	}
	if at(c, "readinessProbe", "httpGet", "path") != "/readyz" {
		t.Errorf("readinessProbe %v", at(c, "readinessProbe"))
	}
	if at(pod, "spec", "volumes", 0, "configMap", "name") != "cluster-cacheproxy" {
		t.Errorf("the pods mount %v", at(pod, "spec", "volumes"))
	}
	labels := at(pod, "metadata", "labels")
	for k, v := range at(m["Service/cacheproxy-cluster"], "spec", "selector").(map[string]any) {
		if at(labels, k) != v {
			t.Errorf("the Service selects %s=%v, which the pods lack", k, v)
		}
	}
	// An alternative to the fleet the kustomization applies, not a part of it.
	if k := docs(t, "kubernetes/kustomization.yaml")[0]; slices.Contains(at(k, "resources").([]any), any("cluster.yaml")) {
		t.Error("the cluster example is in the kustomization beside the single-Redis fleet")
	}
}

// TestComposeAgrees: the compose stack runs the image the manifests name,
// mounts its config where the image's command reads it, and Prometheus and
// Grafana point at what the stack runs.
func TestComposeAgrees(t *testing.T) {
	compose := docs(t, "docker-compose.yml")[0]
	cfg := configs(t)["compose/cacheproxy.yaml"]
	if cfg == nil {
		t.Fatal("no compose/cacheproxy.yaml")
	}
	svc := at(compose, "services", "cacheproxy")
	image := str(at(svc, "image"))
	m := manifests(t)
	for _, c := range []any{
		at(m["Deployment/cacheproxy"], "spec", "template", "spec", "containers", 0),
		at(m["Deployment/app"], "spec", "template", "spec", "initContainers", 0),
	} {
		if got := str(at(c, "image")); got != image {
			t.Errorf("Kubernetes runs image %q, compose %q", got, image)
		}
	}
	if up := string(cfg.Upstream); !strings.Contains(up, "//redis:6379/") || at(compose, "services", "redis") == nil {
		t.Errorf("compose's proxy reaches %s; the stack's Redis is redis:6379", up)
	}
	redisCmd := yamlString(at(compose, "services", "redis", "command"))
	if !strings.Contains(redisCmd, "notify-keyspace-events") {
		t.Error("compose's Redis does not turn keyspace notifications on")
	}
	ports := yamlString(at(svc, "ports"))
	for _, addr := range []string{cfg.Listen, cfg.Metrics} {
		p := port(t, addr)
		if !strings.Contains(ports, p+":"+p) {
			t.Errorf("compose publishes %s; the proxy uses %s", ports, addr)
		}
	}
	vols := yamlString(at(svc, "volumes"))
	cmd, _ := at(svc, "command").([]any)
	if len(cmd) != 2 || !strings.Contains(vols, "./compose/cacheproxy.yaml:"+str(cmd[1])) {
		t.Errorf("compose mounts %s but runs %v", vols, cmd)
	}

	prom := docs(t, "compose/prometheus.yml")[0]
	targets := yamlString(at(prom, "scrape_configs", 0, "static_configs", 0, "targets"))
	if !strings.Contains(targets, "cacheproxy:"+port(t, cfg.Metrics)) {
		t.Errorf("Prometheus scrapes %s; the proxy serves metrics on %s", targets, cfg.Metrics)
	}
	ds := docs(t, "grafana/provisioning/datasources/prometheus.yaml")[0]
	if url := str(at(ds, "datasources", 0, "url")); !strings.Contains(yamlString(at(compose, "services", "prometheus", "ports")), port(t, strings.TrimPrefix(url, "http://"))) {
		t.Errorf("Grafana's datasource %s is not the stack's Prometheus", url)
	}
	dashes := docs(t, "grafana/provisioning/dashboards/cacheproxy.yaml")[0]
	if p := str(at(dashes, "providers", 0, "options", "path")); !strings.Contains(yamlString(at(compose, "services", "grafana", "volumes")), "./grafana/dashboards:"+p) {
		t.Errorf("Grafana reads dashboards from %s, which compose does not mount", p)
	}

	docker, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	df := string(docker)
	for _, want := range []string{
		"EXPOSE " + port(t, cfg.Listen) + " " + port(t, cfg.Metrics),
		"USER nonroot",
		"CGO_ENABLED=0",
		`CMD ["--config", "` + str(cmd[1]) + `"]`,
	} {
		if !strings.Contains(df, want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
	if strings.Count(df, "\nFROM ") < 2 {
		t.Error("Dockerfile is not multi-stage")
	}
}

var reMetric = regexp.MustCompile(`cacheproxy_[a-z0-9_]+`)

// TestDashboardAsksForExistingMetrics: every metric the dashboard queries is
// one the proxy exports.
func TestDashboardAsksForExistingMetrics(t *testing.T) {
	data, err := os.ReadFile("grafana/dashboards/cacheproxy.json")
	if err != nil {
		t.Fatal(err)
	}
	if n := checkMetricsExist(t, "the dashboard", string(data)); n < 15 {
		t.Fatalf("the dashboard queries only %d metrics", n)
	}
}

// checkMetricsExist fails t for every cacheproxy metric named in text (by
// what) that neither the proxy package nor cmd/cacheproxy exports, and returns
// how many it names.
func checkMetricsExist(t *testing.T, what, text string) int {
	t.Helper()
	exported := commandMetrics(t)
	var rec recorder
	m := proxy.NewMetrics(&rec)
	m.ObserveSubscriber(func() invalidation.State { return invalidation.State{} })
	ch := make(chan *prometheus.Desc, 256)
	go func() {
		for _, c := range rec {
			c.Describe(ch)
		}
		close(ch)
	}()
	reName := regexp.MustCompile(`fqName: "([^"]+)"`)
	for d := range ch {
		if mm := reName.FindStringSubmatch(d.String()); mm != nil {
			exported[mm[1]] = true
		}
	}
	used := reMetric.FindAllString(text, -1)
	for _, name := range used {
		base := name
		for _, suffix := range []string{"_bucket", "_count", "_sum"} {
			base = strings.TrimSuffix(base, suffix)
		}
		if !exported[base] {
			t.Errorf("%s queries %s, which the proxy does not export (it exports %v)", what, name, slices.Sorted(maps.Keys(exported)))
		}
	}
	return len(used)
}

// commandMetrics are the metrics cmd/cacheproxy registers beside the proxy
// package's (those of a Sentinel or a cluster upstream). Package main cannot be
// imported, so they are read from its sources (tests excluded): the name given
// to every prometheus.NewDesc and in every prometheus.*Opts literal. A name
// not written as a string literal there is not found, and its queries fail.
func commandMetrics(t *testing.T) map[string]bool {
	t.Helper()
	paths, err := filepath.Glob("../cmd/cacheproxy/*.go")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	name := func(e ast.Expr) {
		if lit, ok := e.(*ast.BasicLit); ok && lit.Kind == token.STRING {
			if s, err := strconv.Unquote(lit.Value); err == nil {
				out[s] = true
			}
		}
	}
	isProm := func(e ast.Expr, sel func(string) bool) bool {
		s, ok := e.(*ast.SelectorExpr)
		if !ok {
			return false
		}
		pkg, ok := s.X.(*ast.Ident)
		return ok && pkg.Name == "prometheus" && sel(s.Sel.Name)
	}
	fset := token.NewFileSet()
	for _, path := range paths {
		if strings.HasSuffix(path, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.CallExpr:
				if len(n.Args) > 0 && isProm(n.Fun, func(s string) bool { return s == "NewDesc" }) {
					name(n.Args[0])
				}
			case *ast.CompositeLit:
				if isProm(n.Type, func(s string) bool { return strings.HasSuffix(s, "Opts") }) {
					for _, el := range n.Elts {
						if kv, ok := el.(*ast.KeyValueExpr); ok && fmt.Sprint(kv.Key) == "Name" {
							name(kv.Value)
						}
					}
				}
			}
			return true
		})
	}
	if !out["cacheproxy_cluster_masters"] || !out["cacheproxy_cluster_stream_subscribed"] {
		t.Fatalf("cmd/cacheproxy's sources register %v: the scan misses what they register", slices.Sorted(maps.Keys(out)))
	}
	return out
}

// recorder is a Registerer that keeps what it is given.
type recorder []prometheus.Collector

func (r *recorder) Register(c prometheus.Collector) error   { *r = append(*r, c); return nil }
func (r *recorder) MustRegister(cs ...prometheus.Collector) { *r = append(*r, cs...) }
func (r *recorder) Unregister(prometheus.Collector) bool    { return false }
