package plot

import (
	"bytes"
	"encoding/xml"
	"io"
	"math"
	"strconv"
	"strings"
	"testing"
)

func sample() Figure {
	one := 1.0
	return Figure{
		Title: `get <hit> & "miss"`,
		Notes: []string{"median of 3 rounds", "2 CPUs shared by everything"},
		Charts: []Chart{
			{Title: "Throughput", YLabel: "ops/s", Categories: []string{"50 conns"},
				Series: []Series{{"direct", []float64{120000}}, {"proxy", []float64{250000}}, {"twemproxy", []float64{90000}}}},
			{Title: "Latency", YLabel: "µs", LogY: true, Categories: []string{"p50", "p90", "p99", "p99.9"},
				Series: []Series{{"direct", []float64{40, 70, 150, 900}}, {"proxy", []float64{20, 35, math.NaN(), 0}}}},
			{Title: "Scaling", XLabel: "connections", YLabel: "ops/s", Lines: true, Categories: []string{"1", "10", "50", "200"},
				Series: []Series{{"proxy", []float64{1e4, 8e4, math.Inf(1), 2.4e5}}, {"direct", []float64{1.2e4, 9e4, 1.3e5, 1.3e5}}}},
			{Title: "Relative", YLabel: "× direct", RefLine: &one,
				Categories: []string{"get-hit-pipeline-16", "set-passthrough-pipeline-1", "sessions", "mixed-90-10"},
				Series:     []Series{{"proxy", []float64{2.1, 0.9, 1.3, 1.1}}}},
		},
	}
}

func TestSVGIsWellFormedAndLabelled(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	if err := sample().WriteSVG(&buf); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	dec := xml.NewDecoder(strings.NewReader(out))
	var texts []string
	elements := map[string]int{}
	root := ""
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("not well-formed XML: %v\n%s", err, out)
		}
		switch tok := tok.(type) {
		case xml.StartElement:
			if root == "" {
				root = tok.Name.Local
				if tok.Name.Space != "http://www.w3.org/2000/svg" {
					t.Errorf("root namespace %q", tok.Name.Space)
				}
			}
			elements[tok.Name.Local]++
			for _, a := range tok.Attr {
				if strings.Contains(a.Value, "NaN") || strings.Contains(a.Value, "Inf") {
					t.Errorf("<%s %s=%q>: a non-finite number reached the drawing", tok.Name.Local, a.Name.Local, a.Value)
				}
			}
		case xml.CharData:
			if s := strings.TrimSpace(string(tok)); s != "" {
				texts = append(texts, s)
			}
		}
	}
	if root != "svg" {
		t.Fatalf("root element %q, want svg", root)
	}
	joined := strings.Join(texts, "\n")
	for _, want := range []string{`get <hit> & "miss"`, "median of 3 rounds", "direct", "proxy", "twemproxy",
		"Throughput", "ops/s", "µs (log scale)", "p99.9", "connections", "250k", "get-hit-pipeline-16"} {
		if !strings.Contains(joined, want) {
			t.Errorf("no text %q in the SVG", want)
		}
	}
	// 3 + 6 bars minus the NaN and the zero on the log axis, plus 4 ratio bars.
	if got := elements["rect"] - 1 - 3; got != 3+6+4 {
		t.Errorf("%d bars drawn, want 13", got)
	}
	if elements["polyline"] != 2 || elements["circle"] != 7 {
		t.Errorf("%d lines and %d markers, want 2 and 7 (the infinite point left out)", elements["polyline"], elements["circle"])
	}
	if elements["line"] == 0 {
		t.Error("no axis or grid lines")
	}
}

func TestSeriesKeepTheirColourAcrossCharts(t *testing.T) {
	t.Parallel()
	names, shown := sample().seriesNames()
	if strings.Join(names, ",") != "direct,proxy,twemproxy" || strings.Join(shown, ",") != "direct,proxy,twemproxy" {
		t.Fatalf("legend order %v, shown %v", names, shown)
	}
	// With a fixed legend order, a figure without direct keeps proxy's colour.
	f := Figure{Legend: []string{"direct", "proxy"}, Charts: []Chart{{Series: []Series{{"proxy", []float64{1}}}}}}
	if n, sh := f.seriesNames(); colour(n, "proxy") != colour(names, "proxy") || strings.Join(sh, ",") != "proxy" {
		t.Errorf("proxy coloured %s, want %s; legend shows %v", colour(n, "proxy"), colour(names, "proxy"), sh)
	}
	var buf bytes.Buffer
	if err := sample().WriteSVG(&buf); err != nil {
		t.Fatal(err)
	}
	// proxy's throughput bar and its scaling line use the same colour.
	proxy := colour(names, "proxy")
	if !strings.Contains(buf.String(), `fill="`+proxy+`"><title>proxy 50 conns`) ||
		!strings.Contains(buf.String(), `stroke="`+proxy+`" stroke-width="2"`) {
		t.Errorf("proxy is not drawn in %s everywhere", proxy)
	}
}

func TestEmptyFigureIsStillValid(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	err := Figure{Title: "nothing", Charts: []Chart{{Title: "empty", LogY: true}, {Title: "empty too"}}}.WriteSVG(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if err := xml.Unmarshal(buf.Bytes(), new(struct{})); err != nil {
		t.Errorf("empty figure is not XML: %v", err)
	}
}

func TestNiceAxes(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, want float64 }{{0.7, 1}, {1, 1}, {1.1, 2}, {3, 5}, {7, 10}, {2300, 5000}} {
		if got := niceStep(tc.in); got != tc.want {
			t.Errorf("niceStep(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
	a := axis{log: true, top: 0, bottom: 100}
	ticks := a.fit([]float64{30, 4000})
	if a.lo != 1 || a.hi != 4 || ticks[0] != 10 || ticks[len(ticks)-1] != 10000 {
		t.Errorf("log axis for 30..4000: range 10^%v..10^%v, ticks %v", a.lo, a.hi, ticks)
	}
	if a.px(10) != 100 || a.px(10000) != 0 {
		t.Errorf("log axis maps 10 to %v and 10000 to %v", a.px(10), a.px(10000))
	}
	lin := axis{top: 0, bottom: 100}
	ticks = lin.fit([]float64{0, 93})
	if lin.lo != 0 || lin.hi < 93 || ticks[0] != 0 || ticks[len(ticks)-1] != lin.hi {
		t.Errorf("linear axis for 0..93: %v..%v, ticks %v", lin.lo, lin.hi, ticks)
	}
}

func TestCompact(t *testing.T) {
	t.Parallel()
	for in, want := range map[float64]string{0: "0", 0.42: "0.42", 7: "7", 950: "950", 1234: "1234",
		12345: "12.3k", 250000: "250k", 1.5e6: "1.5M", 3e9: "3G", 1.05: "1.1"} {
		if got := Compact(in); got != want {
			t.Errorf("Compact(%v) = %q, want %q", in, got, want)
		}
	}
}

func TestWrapKeepsLinesWithinWidth(t *testing.T) {
	t.Parallel()
	text := strings.Repeat("seven words make a line of text ", 12)
	lines := wrap(text, 12, 300)
	if len(lines) < 4 || strings.Join(lines, " ") != strings.TrimSpace(text) {
		t.Fatalf("wrap lost or kept words: %q", lines)
	}
	for _, l := range lines {
		if textWidth(l, 12) > 300 {
			t.Errorf("line %q is wider than 300 px", l)
		}
	}
}

func TestBandsAndSparseLabels(t *testing.T) {
	t.Parallel()
	cats := make([]string, 100)
	vals := make([]float64, 100)
	for i := range cats {
		cats[i], vals[i] = strconv.Itoa(i), float64(i)
	}
	f := Figure{Title: "t", Charts: []Chart{{Title: "c", Categories: cats, Lines: true, NoMarkers: true, LabelEvery: 10,
		Series: []Series{{"s", vals}}, Bands: []Band{{From: 20, To: 25, Label: "fault <x>"}, {From: 90, To: 200, Label: "clipped"}, {From: 5, To: 1, Label: "empty"}}}}}
	var buf bytes.Buffer
	if err := f.WriteSVG(&buf); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	if n := strings.Count(out, "<circle"); n != 0 {
		t.Errorf("%d markers with NoMarkers", n)
	}
	if !strings.Contains(out, "fault &lt;x&gt;") || !strings.Contains(out, "clipped") || strings.Contains(out, ">empty<") {
		t.Errorf("bands not drawn as given:\n%s", out)
	}
	if strings.Contains(out, ">11</text>") || !strings.Contains(out, ">10</text>") {
		t.Error("LabelEvery: want every tenth category labelled")
	}
	if err := xml.Unmarshal(buf.Bytes(), new(struct{})); err != nil {
		t.Fatal(err)
	}
}
