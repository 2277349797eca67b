package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cacheproxy/cacheproxy/internal/faultnet"
	"github.com/cacheproxy/cacheproxy/internal/localnet"
)

// soakConfig is the proxy's configuration in the soak: "soak:" keys cached,
// short upstream and canary bounds so that faults are noticed within a second.
const soakConfig = `l1:
  max_memory: 64MiB
upstream_timeout: 1s
invalidation:
  canary_interval: 200ms
  canary_timeout: 1s
policies:
  - {prefix: "soak:", ttl: 60s}
  - {prefix: "", cache: false}
`

// faultKinds are the faults the soak cycles through, in order.
var faultKinds = []string{"latency", "cut-mid-reply", "blackhole", "rst-cut", "slicing", "bandwidth"}

// faultSettle is how long after a fault is healed errors still count as its.
const faultSettle = 10 * time.Second

type plannedFault struct {
	Kind       string
	Start, End time.Duration // offsets from the start of the load
}

// faultSchedule plans a fault every `every`, cycling through faultKinds, each
// lasting length (a blackhole at most 5s), none ending within
// faultSettle+20s of the end so that the last samples are calm.
func faultSchedule(duration, every, length time.Duration) []plannedFault {
	var out []plannedFault
	if every <= 0 {
		return nil
	}
	for i := 0; ; i++ {
		start := time.Duration(i+1) * every
		kind := faultKinds[i%len(faultKinds)]
		d := length
		if kind == "blackhole" {
			d = min(d, 5*time.Second)
		}
		if start+d+faultSettle+20*time.Second > duration {
			return out
		}
		out = append(out, plannedFault{Kind: kind, Start: start, End: start + d})
	}
}

// inFault reports whether offset t is within a fault or its settling time.
func inFault(plan []plannedFault, t time.Duration) bool {
	for _, f := range plan {
		if t >= f.Start && t <= f.End+faultSettle {
			return true
		}
	}
	return false
}

// faultEvent is a fault as applied.
type faultEvent struct {
	Kind    string    `json:"kind"`
	Detail  string    `json:"detail"`
	StartS  float64   `json:"start_s"`
	EndS    float64   `json:"end_s"`
	StartAt time.Time `json:"start_at"`
	EndAt   time.Time `json:"end_at"`
	Cut     int       `json:"connections_cut,omitempty"`
}

// applyFault starts a fault of kind on the bridge; tick is called every second
// while it lasts (CutAfter affects only the connections open when called).
func applyFault(br *faultnet.Bridge, kind string, rng *rand.Rand) (detail string, tick func() int) {
	switch kind {
	case "latency":
		br.SetLatency(150*time.Millisecond, 150*time.Millisecond)
		return "150ms each way", nil
	case "cut-mid-reply":
		cut := func() int { br.CutAfter(int64(1 + rng.IntN(64))); return br.Conns() }
		return "every connection reset after the first 1-64 bytes of Redis's next reply, renewed every second", cut
	case "blackhole":
		br.Blackhole()
		return "nothing forwarded either way", nil
	case "rst-cut":
		n := br.Cut(true)
		return fmt.Sprintf("%d connections reset, new ones refused", n), nil
	case "slicing":
		br.SliceWrites(4, 2*time.Millisecond)
		return "writes in pieces of 1-4 bytes, 2ms apart", nil
	case "bandwidth":
		br.LimitRate(64 << 10)
		return "64 KiB/s per direction per connection", nil
	}
	return "", nil
}

// soakSample is one reading of the proxy process and the load.
type soakSample struct {
	TS          float64 `json:"t_s"`
	RSSBytes    int64   `json:"rss_bytes"`
	Goroutines  int     `json:"goroutines"`
	FDs         int     `json:"open_fds"`
	Ops         int64   `json:"ops"`
	OpsPerSec   float64 `json:"ops_per_sec"`
	FaultErrors int64   `json:"fault_errors"`
	CalmErrors  int64   `json:"calm_errors"`
	Wrong       int64   `json:"wrong_replies"`
	Fault       string  `json:"fault,omitempty"`
}

func soakCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench soak", flag.ContinueOnError)
	fs.SetOutput(stderr)
	defDuration := 30 * time.Minute
	if env := os.Getenv("SOAK_DURATION"); env != "" {
		d, err := time.ParseDuration(env)
		if err != nil {
			return fmt.Errorf("soak: SOAK_DURATION: %w", err)
		}
		defDuration = d
	}
	var (
		proxyBin, out, redisBin              string
		duration, every, length, sampleEvery time.Duration
		baselineAt, directEvery, staleBound  time.Duration
		conns                                int
		tolerance                            float64
	)
	fs.StringVar(&proxyBin, "proxy-bin", "", "the proxy binary to start (required)")
	fs.StringVar(&out, "out", filepath.Join("bench", "results", "soak"), "directory for soak.md, soak.json and soak.svg")
	fs.StringVar(&redisBin, "redis-server", "redis-server", "redis-server binary")
	fs.DurationVar(&duration, "duration", defDuration, "length of the load (default: $SOAK_DURATION, else 30m)")
	fs.DurationVar(&every, "fault-every", time.Minute, "a fault every this long")
	fs.DurationVar(&length, "fault-length", 8*time.Second, "how long each fault lasts before Heal (a blackhole at most 5s)")
	fs.DurationVar(&sampleEvery, "sample-every", 5*time.Second, "how often to read the proxy's RSS, goroutines and open files")
	fs.DurationVar(&baselineAt, "baseline-at", 5*time.Minute, "the mark the end is compared with (a quarter of the run if that is earlier)")
	fs.Float64Var(&tolerance, "flat-tolerance", 0.2, "how much the end may exceed the baseline before it is a leak")
	fs.IntVar(&conns, "conns", 8, "client connections through the proxy")
	fs.DurationVar(&directEvery, "direct-every", 20*time.Millisecond, "interval of the writes made directly on Redis")
	fs.DurationVar(&staleBound, "stale-bound", 5*time.Second, "how long after a direct write the proxy may still serve the older value")
	if err := fs.Parse(args); err != nil {
		return err
	}
	switch {
	case fs.NArg() > 0:
		return fmt.Errorf("soak: unexpected argument %q", fs.Arg(0))
	case proxyBin == "":
		return errors.New("soak: --proxy-bin is required")
	case duration < time.Minute || duration > 24*time.Hour:
		return fmt.Errorf("soak: --duration %v: between 1m and 24h", duration)
	case conns < 1 || conns > 200:
		return fmt.Errorf("soak: --conns %d: between 1 and 200", conns)
	case sampleEvery < time.Second || length < time.Second || directEvery < time.Millisecond:
		return errors.New("soak: --sample-every and --fault-length are at least 1s, --direct-every at least 1ms")
	}
	baselineAt = min(baselineAt, duration/4)
	plan := faultSchedule(duration, every, length)
	if err := os.MkdirAll(out, 0o755); err != nil {
		return fmt.Errorf("soak: %w", err)
	}
	l, err := newLauncher(ctx, "soak")
	if err != nil {
		return err
	}
	defer l.close()

	redisPath, err := exec.LookPath(redisBin)
	if err != nil {
		return fmt.Errorf("soak needs redis-server: %w", err)
	}
	redisAddr, err := l.startRedis(redisPath)
	if err != nil {
		return fmt.Errorf("soak: %w", err)
	}
	br, err := faultnet.New(redisAddr)
	if err != nil {
		return fmt.Errorf("soak: %w", err)
	}
	defer br.Close()
	proxyPath, err := filepath.Abs(proxyBin)
	if err != nil {
		return fmt.Errorf("soak: %w", err)
	}
	configPath := filepath.Join(l.dir, "cacheproxy.yaml")
	if err := os.WriteFile(configPath, []byte(soakConfig), 0o644); err != nil {
		return fmt.Errorf("soak: %w", err)
	}
	var metricsAddr string
	proxyAddr, err := l.start("proxy", func(addr string) ([]string, error) {
		var err error
		metricsAddr, err = localnet.FreeAddr()
		return []string{proxyPath, "--config", configPath, "--listen", addr,
			"--upstream", "redis://" + br.Addr() + "/0", "--metrics", metricsAddr}, err
	})
	if err != nil {
		return fmt.Errorf("soak: %w", err)
	}
	proxy := l.last()
	pid := proxy.cmd.Process.Pid
	metricsURL := "http://" + metricsAddr + "/metrics"
	if err := waitReadyz(ctx, "http://"+metricsAddr+"/readyz"); err != nil {
		return fmt.Errorf("soak: %w", err)
	}

	stats := &soakStats{}
	env := &soakEnv{proxy: proxyAddr, stats: stats, direct: newDirectModel(staleBound)}
	// Every direct key holds a value before any client reads it.
	began := time.Now()
	env.began = began
	if err := directWriter(ctx, env, redisAddr, 0, time.Now().Add(time.Hour), soakDirectKeys); err != nil {
		return fmt.Errorf("soak: %w", err)
	}
	began = time.Now()
	env.began = began
	env.faulty = func(t time.Time) bool { return inFault(plan, t.Sub(began)) }
	deadline := began.Add(duration)
	fmt.Fprintf(stdout, "soak: %v of load, %d connections through the proxy (pid %d) at %s, Redis behind a fault bridge; %d faults planned; results in %s\n",
		duration, conns, pid, proxyAddr, len(plan), out)

	loadCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	for i := range conns {
		c := newSoakClient(i, env)
		wg.Add(1)
		go func() { defer wg.Done(); c.run(loadCtx, deadline) }()
	}
	var directErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		directErr = directWriter(loadCtx, env, redisAddr, directEvery, deadline, -1)
	}()

	var (
		evMu   sync.Mutex
		events []faultEvent
		active string
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		rng := rand.New(rand.NewPCG(7, 7))
		for _, f := range plan {
			if !sleepUntil(loadCtx, began.Add(f.Start)) {
				return
			}
			startAt := time.Now()
			detail, tick := applyFault(br, f.Kind, rng)
			evMu.Lock()
			active = f.Kind
			evMu.Unlock()
			fmt.Fprintf(stdout, "%7s  fault %s: %s\n", fmtOffset(startAt.Sub(began)), f.Kind, detail)
			cut := 0
			for t := startAt.Add(time.Second); t.Before(began.Add(f.End)); t = t.Add(time.Second) {
				if tick != nil {
					cut += tick()
				}
				if !sleepUntil(loadCtx, t) {
					break
				}
			}
			sleepUntil(loadCtx, began.Add(f.End))
			br.Heal()
			endAt := time.Now()
			evMu.Lock()
			active = ""
			events = append(events, faultEvent{Kind: f.Kind, Detail: detail, StartS: startAt.Sub(began).Seconds(),
				EndS: endAt.Sub(began).Seconds(), StartAt: startAt.UTC(), EndAt: endAt.UTC(), Cut: cut})
			evMu.Unlock()
			fmt.Fprintf(stdout, "%7s  healed\n", fmtOffset(endAt.Sub(began)))
		}
	}()

	var samples []soakSample
	var sampleErr error
	var lastOps int64
	lastAt := began
	for next := began; ; {
		now := time.Now()
		evMu.Lock()
		fault := active
		evMu.Unlock()
		s, err := sampleProxy(ctx, pid, metricsURL)
		if err != nil && sampleErr == nil {
			sampleErr = err
		}
		s.TS = now.Sub(began).Seconds()
		s.Ops = stats.ops.Load()
		if dt := now.Sub(lastAt).Seconds(); dt > 0 && len(samples) > 0 {
			s.OpsPerSec = float64(s.Ops-lastOps) / dt
		}
		lastOps, lastAt = s.Ops, now
		s.FaultErrors, s.CalmErrors, s.Wrong = stats.faultErrors.Load(), stats.calmErrors.Load(), stats.wrong.Load()
		s.Fault = fault
		samples = append(samples, s)
		if len(samples)%6 == 1 {
			fmt.Fprintf(stdout, "%7s  rss %d MiB, %d goroutines, %d fds, %.0f ops/s; %d ops, %d errors in faults, %d outside, %d wrong\n",
				fmtOffset(now.Sub(began)), s.RSSBytes>>20, s.Goroutines, s.FDs, s.OpsPerSec, s.Ops, s.FaultErrors, s.CalmErrors, s.Wrong)
		}
		if !now.Before(deadline) || ctx.Err() != nil {
			break
		}
		next = next.Add(sampleEvery)
		if next.After(deadline) {
			next = deadline
		}
		if !sleepUntil(ctx, next) {
			break
		}
		select {
		case <-proxy.exited:
			cancel()
			wg.Wait()
			return fmt.Errorf("soak: the proxy exited during the run; its output:\n%s", proxy.logTail())
		default:
		}
	}
	cancel()
	wg.Wait()
	br.Heal()
	if ctx.Err() != nil {
		return ctx.Err()
	}

	rep := soakReport{
		Duration: duration.String(), Conns: conns, FaultEvery: every.String(), FaultLength: length.String(),
		SampleEvery: sampleEvery.String(), StaleBound: staleBound.String(), Began: began.UTC(),
		Faults: events, Samples: samples, Ops: stats.ops.Load(), DirectWrites: stats.directOps.Load(),
		FaultErrors: stats.faultErrors.Load(), CalmErrors: stats.calmErrors.Load(), Wrong: stats.wrong.Load(),
		Reconnects: stats.reconnects.Load(), WrongSeen: stats.wrongSeen, CalmSeen: stats.calmSeen,
		BaselineS: baselineAt.Seconds(), Tolerance: tolerance,
	}
	rep.Flatness = flatness(samples, baselineAt, duration, tolerance)
	if sampleErr != nil {
		rep.SampleError = sampleErr.Error()
	}
	if directErr != nil {
		rep.SampleError = strings.TrimSpace(rep.SampleError + "; " + directErr.Error())
	}
	if err := writeSoakReport(out, rep); err != nil {
		return err
	}
	writeSoakSummary(stdout, rep)
	var fails []string
	if rep.Wrong > 0 {
		fails = append(fails, fmt.Sprintf("%d wrong replies", rep.Wrong))
	}
	for _, f := range rep.Flatness {
		if f.Leak {
			fails = append(fails, fmt.Sprintf("%s grew from %s to %s", f.Metric, f.fmt(f.Baseline), f.fmt(f.End)))
		}
	}
	if len(fails) > 0 {
		return fmt.Errorf("soak failed: %s (see %s)", strings.Join(fails, "; "), filepath.Join(out, "soak.md"))
	}
	return nil
}

func fmtOffset(d time.Duration) string {
	d = d.Round(time.Second)
	return fmt.Sprintf("%d:%02d", int(d/time.Minute), int(d%time.Minute/time.Second))
}

// sleepUntil waits until t, or reports false when ctx ends first.
func sleepUntil(ctx context.Context, t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err() == nil
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-timer.C:
		return true
	}
}

// waitReadyz waits until the proxy's /readyz answers 200: Redis reachable and
// the invalidation stream trusted.
func waitReadyz(ctx context.Context, url string) error {
	deadline := time.Now().Add(startTimeout)
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := metricsClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the proxy's %s did not answer 200 within %v", url, startTimeout)
		}
		if !sleepUntil(ctx, time.Now().Add(100*time.Millisecond)) {
			return ctx.Err()
		}
	}
}

// sampleProxy reads the proxy's RSS from /proc, and its goroutines and open
// files from its metrics (open files from /proc when the metrics lack them).
func sampleProxy(ctx context.Context, pid int, metricsURL string) (soakSample, error) {
	var s soakSample
	var errs []error
	if f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
		s.RSSBytes, _, err = residentMemory(f)
		f.Close()
		if err != nil {
			errs = append(errs, err)
		}
	} else {
		errs = append(errs, err)
	}
	g, err := scrapeGauges(ctx, metricsURL, "go_goroutines", "process_open_fds")
	if err != nil {
		errs = append(errs, err)
	}
	s.Goroutines, s.FDs = int(g["go_goroutines"]), int(g["process_open_fds"])
	if _, ok := g["process_open_fds"]; !ok {
		if ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid)); err == nil {
			s.FDs = len(ents)
		}
	}
	return s, errors.Join(errs...)
}

// scrapeGauges reads the named unlabelled samples from a Prometheus endpoint.
func scrapeGauges(ctx context.Context, url string, names ...string) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := metricsClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scrape %s: %s", url, resp.Status)
	}
	return parseGauges(io.LimitReader(resp.Body, 64<<20), names...)
}

func parseGauges(r io.Reader, names ...string) (map[string]float64, error) {
	out := make(map[string]float64)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		name, rest := splitName(line)
		if !slices.Contains(names, name) {
			continue
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			return out, fmt.Errorf("sample without a value: %q", line)
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			return out, fmt.Errorf("sample %q: bad value", line)
		}
		out[name] = v
	}
	return out, sc.Err()
}
