package main

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// version is the release, set at build time:
//
//	go build -ldflags "-X main.version=v1.2.0" ./cmd/cacheproxy
//
// Empty, the module version the Go toolchain stamped into the binary stands
// in (a pseudo-version from the VCS when built in a checkout, "(devel)" when
// not known).
var version string

// versionString is what --version prints: the version, the VCS revision the
// binary was built from when known (with "+dirty" for uncommitted changes), and
// the Go version.
func versionString() string {
	v, rev := version, ""
	if bi, ok := debug.ReadBuildInfo(); ok {
		if v == "" {
			v = bi.Main.Version
		}
		modified := false
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
		if len(rev) > 12 {
			rev = rev[:12]
		}
		if rev != "" && modified {
			rev += "+dirty"
		}
	}
	if v == "" {
		v = "(devel)"
	}
	if rev != "" {
		return fmt.Sprintf("cacheproxy %s (revision %s, %s)", v, rev, runtime.Version())
	}
	return fmt.Sprintf("cacheproxy %s (%s)", v, runtime.Version())
}
