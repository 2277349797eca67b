// Package plot writes small, self-contained SVG charts: grouped bars or lines
// over named categories, with axes, tick labels, a shared legend and an optional
// log scale. It draws what it is given and knows nothing about benchmarks; it
// never loads fonts, scripts or anything outside the file it writes.
package plot

import (
	"bufio"
	"encoding/xml"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
)

// Series is one named set of values, one per category. NaN marks a value
// that is missing; it is not drawn.
type Series struct {
	Name   string
	Values []float64
}

// Chart is one panel of a figure.
type Chart struct {
	Title      string
	XLabel     string
	YLabel     string
	Categories []string // x positions, evenly spaced, in order
	Series     []Series
	Lines      bool // lines with markers; otherwise grouped bars
	LogY       bool // log10 y axis; values <= 0 are not drawn
	// RefLine, when not nil, draws a dashed horizontal line at that value
	// (1.0 on a chart of ratios).
	RefLine *float64
	// Bands shade spans of categories behind the data (time windows on a
	// chart over time).
	Bands []Band
	// LabelEvery labels every n-th category only (dense axes); 0 or 1: all.
	LabelEvery int
	// NoMarkers draws lines without a marker per value (long series).
	NoMarkers bool
}

// Band is a shaded span of a chart, from category From to To (indexes,
// inclusive), with a label at its top.
type Band struct {
	From, To int
	Label    string
}

// Figure is a titled grid of charts sharing one legend: a series has the same
// colour in every chart.
type Figure struct {
	Title       string
	Notes       []string // lines under the title
	Charts      []Chart
	Columns     int // charts per row; 0 means up to 2
	ChartWidth  int // pixels; 0 means 520
	ChartHeight int // pixels; 0 means 340
	// Legend fixes the colour order: the i-th name gets the i-th colour in
	// every figure that shares this list. Series not in it come after.
	Legend []string
}

var palette = []string{"#4e79a7", "#f28e2b", "#e15759", "#59a14f", "#b07aa1", "#76b7b2", "#edc948", "#9c755f"}

const (
	font       = `font-family="Helvetica, Arial, sans-serif"`
	marginL    = 72
	marginR    = 16
	marginT    = 28
	marginB    = 52
	titleH     = 30
	noteH      = 16
	legendH    = 26
	figPadding = 12
)

// WriteSVG writes the figure as one SVG document.
func (f Figure) WriteSVG(w io.Writer) error {
	cols := f.Columns
	if cols <= 0 {
		cols = min(2, max(1, len(f.Charts)))
	}
	cw, ch := f.ChartWidth, f.ChartHeight
	if cw <= 0 {
		cw = 520
	}
	if ch <= 0 {
		ch = 340
	}
	rows := (len(f.Charts) + cols - 1) / cols
	names, shown := f.seriesNames()
	width := 2*figPadding + cols*cw
	var notes []string
	for _, n := range f.Notes {
		notes = append(notes, wrap(n, 12, float64(width-2*figPadding))...)
	}
	header := figPadding + titleH + noteH*len(notes) + legendH
	height := header + rows*ch + figPadding

	bw := bufio.NewWriter(w)
	s := &svg{w: bw}
	s.printf(`<?xml version="1.0" encoding="UTF-8"?>` + "\n")
	s.printf(`<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" %s>`+"\n", width, height, width, height, font)
	s.printf(`<rect width="100%%" height="100%%" fill="white"/>` + "\n")
	y := figPadding + 20
	s.text(float64(width)/2, float64(y), "middle", 17, "bold", "#222", f.Title)
	for _, n := range notes {
		y += noteH
		s.text(float64(width)/2, float64(y), "middle", 12, "normal", "#555", n)
	}
	s.legend(names, shown, float64(width)/2, float64(y+legendH-4))
	for i, c := range f.Charts {
		x0 := figPadding + (i%cols)*cw
		y0 := header + (i/cols)*ch
		s.chart(c, names, float64(x0), float64(y0), float64(cw), float64(ch))
	}
	s.printf("</svg>\n")
	if s.err != nil {
		return s.err
	}
	return bw.Flush()
}

// seriesNames lists the names in colour order, Legend's first, and the names
// that appear in some chart, in that order.
func (f Figure) seriesNames() (names, shown []string) {
	names = append(names, f.Legend...)
	for _, c := range f.Charts {
		for _, s := range c.Series {
			if !slices.Contains(names, s.Name) {
				names = append(names, s.Name)
			}
		}
	}
	for _, n := range names {
		for _, c := range f.Charts {
			if slices.ContainsFunc(c.Series, func(s Series) bool { return s.Name == n }) {
				shown = append(shown, n)
				break
			}
		}
	}
	return names, shown
}

func colour(names []string, name string) string {
	for i, n := range names {
		if n == name {
			return palette[i%len(palette)]
		}
	}
	return "#000"
}

// svg is a writer whose first error sticks, so that drawing code stays flat.
type svg struct {
	w   io.Writer
	err error
}

func (s *svg) printf(format string, args ...any) {
	if s.err == nil {
		_, s.err = fmt.Fprintf(s.w, format, args...)
	}
}

func (s *svg) text(x, y float64, anchor string, size int, weight, fill, text string) {
	s.printf(`<text x="%.1f" y="%.1f" text-anchor="%s" font-size="%d" font-weight="%s" fill="%s">%s</text>`+"\n",
		x, y, anchor, size, weight, fill, escape(text))
}

func (s *svg) legend(names, shown []string, cx, y float64) {
	const box, gap = 12.0, 22.0
	widths := make([]float64, len(shown))
	total := 0.0
	for i, n := range shown {
		widths[i] = box + 6 + textWidth(n, 12)
		total += widths[i]
	}
	total += gap * float64(max(0, len(shown)-1))
	x := cx - total/2
	for i, n := range shown {
		s.printf(`<rect x="%.1f" y="%.1f" width="%.0f" height="%.0f" fill="%s"/>`+"\n", x, y-box+2, box, box, colour(names, n))
		s.text(x+box+6, y, "start", 12, "normal", "#222", n)
		x += widths[i] + gap
	}
}

// axis maps values to pixels on a linear or log10 scale.
type axis struct {
	lo, hi float64 // in scale units: values, or log10 of values
	log    bool
	top    float64 // pixel of hi
	bottom float64 // pixel of lo
}

func (a axis) px(v float64) float64 {
	if a.log {
		v = math.Log10(v)
	}
	return a.bottom - (v-a.lo)/(a.hi-a.lo)*(a.bottom-a.top)
}

// drawable reports whether v has a place on the axis.
func (a axis) drawable(v float64) bool {
	return !math.IsNaN(v) && !math.IsInf(v, 0) && (!a.log || v > 0)
}

// fit sets the axis range to hold values and returns the tick values.
func (a *axis) fit(values []float64) []float64 {
	if a.log {
		lo, hi := math.Inf(1), math.Inf(-1)
		for _, v := range values {
			if a.drawable(v) {
				lo, hi = math.Min(lo, v), math.Max(hi, v)
			}
		}
		if math.IsInf(lo, 0) {
			lo, hi = 1, 10
		}
		// Halving the minimum keeps the smallest bar at least a factor of
		// two tall above the axis.
		a.lo, a.hi = math.Floor(math.Log10(lo/2)), math.Ceil(math.Log10(hi))
		if a.hi == a.lo {
			a.hi++
		}
		var ticks []float64
		for e := a.lo; e <= a.hi; e++ {
			ticks = append(ticks, math.Pow(10, e))
			if a.hi-a.lo <= 2 && e < a.hi {
				ticks = append(ticks, 2*math.Pow(10, e), 5*math.Pow(10, e))
			}
		}
		return ticks
	}
	hi := 0.0
	for _, v := range values {
		if a.drawable(v) {
			hi = math.Max(hi, v)
		}
	}
	if hi <= 0 {
		hi = 1
	}
	step := niceStep(hi / 5)
	a.lo, a.hi = 0, math.Ceil(hi*1.08/step)*step
	var ticks []float64
	for i := 0.0; i*step <= a.hi+step/1e6; i++ {
		ticks = append(ticks, i*step)
	}
	return ticks
}

// niceStep rounds x up to 1, 2 or 5 times a power of ten.
func niceStep(x float64) float64 {
	p := math.Pow(10, math.Floor(math.Log10(x)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= x {
			return m * p
		}
	}
	return 10 * p
}

func (s *svg) chart(c Chart, names []string, x0, y0, w, h float64) {
	var all []float64
	for _, sr := range c.Series {
		all = append(all, sr.Values...)
	}
	if c.RefLine != nil {
		all = append(all, *c.RefLine)
	}
	// Long category labels are drawn slanted and need more room below.
	slotW := (w - marginL - marginR) / float64(max(1, len(c.Categories)))
	every := max(1, c.LabelEvery)
	longest := 0.0
	for _, cat := range c.Categories {
		longest = math.Max(longest, textWidth(cat, 11))
	}
	slant := longest > slotW*float64(every)-4
	bottomM := float64(marginB)
	if slant {
		bottomM += longest * 0.55
	}
	leftM := float64(marginL)
	if slant {
		// The first slanted label reaches left of its slot by about its
		// width times cos(35°).
		leftM = math.Max(leftM, longest*0.82-slotW/2+8)
	}
	left, right := x0+leftM, x0+w-marginR
	slotW = (right - left) / float64(max(1, len(c.Categories)))
	a := axis{log: c.LogY, top: y0 + marginT, bottom: y0 + h - bottomM}
	ticks := a.fit(all)

	s.text((left+right)/2, y0+16, "middle", 14, "bold", "#222", c.Title)
	for _, t := range ticks {
		py := a.px(t)
		s.printf(`<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#e4e4e4"/>`+"\n", left, py, right, py)
		s.text(left-6, py+4, "end", 11, "normal", "#444", Compact(t))
	}
	s.printf(`<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#444"/>`+"\n", left, a.top, left, a.bottom)
	s.printf(`<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#444"/>`+"\n", left, a.bottom, right, a.bottom)
	ylabel := c.YLabel
	if c.LogY {
		ylabel += " (log scale)"
	}
	ly := (a.top + a.bottom) / 2
	s.printf(`<text x="%.1f" y="%.1f" text-anchor="middle" font-size="12" fill="#222" transform="rotate(-90 %.1f %.1f)">%s</text>`+"\n",
		x0+16, ly, x0+16, ly, escape(ylabel))
	s.text((left+right)/2, y0+h-8, "middle", 12, "normal", "#222", c.XLabel)

	slotX := func(i int) float64 { return left + slotW*(float64(i)+0.5) }
	for _, b := range c.Bands {
		from, to := max(0, b.From), min(len(c.Categories)-1, b.To)
		if from > to {
			continue
		}
		bx := left + slotW*float64(from)
		s.printf(`<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="#f2c4c4" fill-opacity="0.45"><title>%s</title></rect>`+"\n",
			bx, a.top, slotW*float64(to-from+1), a.bottom-a.top, escape(b.Label))
		s.text(bx+1, a.top+9, "start", 8, "normal", "#a33", b.Label)
	}
	for i, cat := range c.Categories {
		if i%every != 0 {
			continue
		}
		x, y := slotX(i), a.bottom+16
		if slant {
			s.printf(`<text x="%.1f" y="%.1f" text-anchor="end" font-size="11" fill="#222" transform="rotate(-35 %.1f %.1f)">%s</text>`+"\n",
				x, y, x, y, escape(cat))
		} else {
			s.text(x, y, "middle", 11, "normal", "#222", cat)
		}
	}

	if c.Lines {
		s.lines(c, names, a, slotX)
	} else {
		s.bars(c, names, a, slotW, slotX)
	}
	if c.RefLine != nil && a.drawable(*c.RefLine) {
		py := a.px(*c.RefLine)
		s.printf(`<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#222" stroke-dasharray="5 4"/>`+"\n", left, py, right, py)
	}
}

func (s *svg) bars(c Chart, names []string, a axis, slotW float64, slotX func(int) float64) {
	n := float64(max(1, len(c.Series)))
	barW := math.Min(48, slotW*0.8/n)
	labels := barW >= 18
	for si, sr := range c.Series {
		col := colour(names, sr.Name)
		for i, v := range sr.Values {
			if i >= len(c.Categories) || !a.drawable(v) {
				continue
			}
			x := slotX(i) - barW*n/2 + barW*float64(si)
			top := math.Min(a.px(v), a.bottom)
			s.printf(`<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s</title></rect>`+"\n",
				x+1, top, barW-2, a.bottom-top, col, escape(sr.Name+" "+c.Categories[i]+": "+Compact(v)))
			if labels {
				s.text(x+barW/2, top-3, "middle", 9, "normal", "#333", Compact(v))
			}
		}
	}
}

func (s *svg) lines(c Chart, names []string, a axis, slotX func(int) float64) {
	for _, sr := range c.Series {
		col := colour(names, sr.Name)
		var pts []string
		for i, v := range sr.Values {
			if i < len(c.Categories) && a.drawable(v) {
				pts = append(pts, fmt.Sprintf("%.1f,%.1f", slotX(i), a.px(v)))
			}
		}
		if len(pts) > 1 {
			s.printf(`<polyline points="%s" fill="none" stroke="%s" stroke-width="2"/>`+"\n", strings.Join(pts, " "), col)
		}
		for i, v := range sr.Values {
			if !c.NoMarkers && i < len(c.Categories) && a.drawable(v) {
				s.printf(`<circle cx="%.1f" cy="%.1f" r="4" fill="%s"><title>%s</title></circle>`+"\n",
					slotX(i), a.px(v), col, escape(sr.Name+" "+c.Categories[i]+": "+Compact(v)))
			}
		}
	}
}

// Compact formats a number in at most about four characters: 950, 1.2k, 35k,
// 1.5M, 0.42.
func Compact(v float64) string {
	abs := math.Abs(v)
	switch {
	case abs >= 1e9:
		return trim(v/1e9) + "G"
	case abs >= 1e6:
		return trim(v/1e6) + "M"
	case abs >= 1e4:
		return trim(v/1e3) + "k"
	case abs >= 100 || v == 0:
		return strconv.FormatFloat(v, 'f', 0, 64)
	default:
		return strconv.FormatFloat(v, 'g', 2, 64)
	}
}

func trim(v float64) string {
	if math.Abs(v) >= 100 {
		return strconv.FormatFloat(v, 'f', 0, 64)
	}
	return strconv.FormatFloat(v, 'g', 3, 64)
}

// wrap breaks text at spaces into lines that fit width pixels.
func wrap(text string, size, width float64) []string {
	var lines []string
	line := ""
	for _, w := range strings.Fields(text) {
		if line != "" && textWidth(line+" "+w, size) > width {
			lines = append(lines, line)
			line = w
			continue
		}
		if line != "" {
			line += " "
		}
		line += w
	}
	return append(lines, line)
}

// textWidth estimates the rendered width of text in a sans-serif font.
func textWidth(s string, size float64) float64 {
	return float64(len([]rune(s))) * size * 0.58
}

func escape(s string) string {
	var b strings.Builder
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}
