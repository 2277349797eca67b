package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
)

const progressEvery = 250 * time.Millisecond

// progress rewrites one status line in place with a carriage return. A nil
// *progress shows nothing.
type progress struct {
	w  io.Writer
	mu sync.Mutex // guards width and writes to w
	// width of the line on screen, so that a shorter one blanks its tail.
	width int
}

// newProgress returns a progress line on w when w is a terminal or force is
// set, and nil otherwise.
func newProgress(w io.Writer, force bool) *progress {
	if !force {
		f, ok := w.(*os.File)
		if !ok {
			return nil
		}
		fi, err := f.Stat()
		if err != nil || fi.Mode()&os.ModeCharDevice == 0 {
			return nil
		}
	}
	return &progress{w: w}
}

// track shows label, elapsed time and the rate of done() until the returned
// stop is called; stop clears the line and returns once the updater is gone.
func (p *progress) track(label string, d time.Duration, done func() int64) (stop func()) {
	if p == nil {
		return func() {}
	}
	start := time.Now()
	quit, finished := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(finished)
		tick := time.NewTicker(progressEvery)
		defer tick.Stop()
		for {
			select {
			case <-quit:
				p.show("")
				return
			case <-tick.C:
				el := time.Since(start)
				p.show(fmt.Sprintf("%s  %4.1fs/%.0fs  %9.0f ops/s", label, el.Seconds(), d.Seconds(), float64(done())/el.Seconds()))
			}
		}
	}()
	return func() { close(quit); <-finished }
}

// note shows a status line that stays until the next one.
func (p *progress) note(line string) {
	if p != nil {
		p.show(line)
	}
}

func (p *progress) show(line string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	pad := max(0, p.width-len(line))
	fmt.Fprintf(p.w, "\r%s%s", line, strings.Repeat(" ", pad))
	if line == "" {
		fmt.Fprint(p.w, "\r")
	}
	p.width = len(line)
}
