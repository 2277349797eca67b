# cacheproxy: `make run` brings the proxy up in front of a local Redis; `make test` runs every test.
GO      ?= go
BIN     := bin/cacheproxy
CONFIG  ?= deploy/cacheproxy.example.yaml

.PHONY: build run test bench soak lint fuzz clean

build:
	$(GO) build -o $(BIN) ./cmd/cacheproxy

# Starts a local redis-server (installing Debian's package if needed) when
# nothing answers at 127.0.0.1:6379, then the proxy on 127.0.0.1:6380; Ctrl-C
# drains the proxy, then stops the redis-server if it was started here.
run: build
	deploy/run-local.sh $(BIN) $(CONFIG)

test:
	$(GO) test -race -count=1 ./...

# The benchmark suite: Redis one network hop away (behind a latency relay), then
# on loopback, the proxy beside direct Redis and twemproxy; about 24
# minutes. Results in bench/results/.
bench: build
	$(GO) run ./bench suite --proxy-bin $(BIN) --out bench/results
	$(GO) run ./bench cluster --proxy-bin $(BIN) --out bench/results

# A long run under faults (not part of test): mixed load through the proxy in
# front of a redis-server, the proxy's upstream through a fault bridge, a fault
# every minute; fails on a wrong reply or a leak. SOAK_DURATION=2m for a quick
# check; report in bench/results/soak/.
SOAK_DURATION ?= 30m
soak: build
	$(GO) run ./bench soak --proxy-bin $(BIN) --duration $(SOAK_DURATION) --out bench/results/soak

lint:
	$(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

# Short runs of every fuzz target (FUZZTIME per target).
FUZZTIME ?= 20s
fuzz:
	$(GO) test ./resp -run '^$$' -fuzz '^FuzzGuard$$' -fuzztime $(FUZZTIME)
	$(GO) test ./resp -run '^$$' -fuzz '^FuzzReplyScanner$$' -fuzztime $(FUZZTIME)
	$(GO) test ./commands -run '^$$' -fuzz '^FuzzKeys$$' -fuzztime $(FUZZTIME)

clean:
	rm -rf bin
