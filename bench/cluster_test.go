package main

import (
	"context"
	"io"
	"strings"
	"testing"
)

// TestClusterNeedsProxyBin: the cluster suite refuses to start without the
// proxy to put in front of the cluster.
func TestClusterNeedsProxyBin(t *testing.T) {
	t.Parallel()
	err := cli(context.Background(), []string{"cluster"}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "--proxy-bin") {
		t.Fatalf("bench cluster without --proxy-bin: %v", err)
	}
}
