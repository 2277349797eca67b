#!/usr/bin/env bash
# Runs the proxy in front of the Redis at 127.0.0.1:6379, starting a local
# redis-server (with keyspace notifications on) when none answers there.
set -euo pipefail
bin=${1:-bin/cacheproxy}
config=${2:-deploy/cacheproxy.example.yaml}

redis_answers() {
	timeout 1 bash -c 'exec 3<>/dev/tcp/127.0.0.1/6379 && printf "PING\r\n" >&3 && head -c 5 <&3' 2>/dev/null | grep -q PONG
}

if ! redis_answers; then
	if ! command -v redis-server >/dev/null 2>&1; then
		echo "run-local: installing redis-server" >&2
		sudo=""; [ "$(id -u)" -ne 0 ] && sudo=sudo
		$sudo apt-get update && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y redis-server
	fi
	dir=$(mktemp -d)
	echo "run-local: starting redis-server on 127.0.0.1:6379 (data in $dir)" >&2
	redis-server --port 6379 --bind 127.0.0.1 --daemonize yes --save "" --appendonly no \
		--dir "$dir" --logfile "$dir/redis.log" --notify-keyspace-events KEA
	for _ in $(seq 50); do redis_answers && break; sleep 0.1; done
	redis_answers || { echo "run-local: redis-server did not start; see $dir/redis.log" >&2; exit 1; }
fi
echo "run-local: cacheproxy on 127.0.0.1:6380, metrics on http://127.0.0.1:9180/metrics" >&2
exec "$bin" --config "$config"
