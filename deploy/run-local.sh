#!/usr/bin/env bash
# Runs the proxy in front of the Redis at 127.0.0.1:6379, starting a local
# redis-server (with keyspace notifications on) when none answers there, and
# stopping that redis-server when the proxy stops (Ctrl-C, SIGTERM, or an
# error). A Redis it did not start is left alone.
#
#   deploy/run-local.sh [BIN] [CONFIG] [cacheproxy flags...]
#
# REDIS_PORT=6390 uses (or starts) the Redis on that port instead, and points
# the proxy at it with --upstream; flags after CONFIG go to the proxy, e.g.
# --listen 127.0.0.1:6381 --metrics 127.0.0.1:9181.
set -euo pipefail
# Background jobs get process groups of their own, so that Ctrl-C reaches the
# proxy once, through this script, and Redis only after the proxy has stopped.
set -m
bin=${1:-bin/cacheproxy}
config=${2:-deploy/cacheproxy.example.yaml}
shift $(($# < 2 ? $# : 2))
port=${REDIS_PORT:-6379}
args=(--config "$config")
[ -n "${REDIS_PORT:-}" ] && args+=(--upstream "redis://127.0.0.1:$port/0")
args+=("$@")

redis_answers() {
	timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port && printf 'PING\r\n' >&3 && head -c 5 <&3" 2>/dev/null | grep -q PONG
}

proxy_pid="" redis_pid="" redis_dir=""

# cleanup runs on every exit: it stops the proxy if it still runs, then the
# redis-server this script started, if any.
cleanup() {
	if [ -n "$proxy_pid" ] && kill -0 "$proxy_pid" 2>/dev/null; then
		kill -TERM "$proxy_pid" 2>/dev/null || true
		wait "$proxy_pid" 2>/dev/null || true
	fi
	if [ -n "$redis_pid" ]; then
		echo "run-local: stopping the redis-server it started (pid $redis_pid)" >&2
		kill -TERM "$redis_pid" 2>/dev/null || true
		wait "$redis_pid" 2>/dev/null || true
		rm -rf "$redis_dir"
	fi
}
trap cleanup EXIT
# A signal goes to the proxy, which drains its clients and exits; a second
# one stops it at once.
forward() {
	if [ -n "$proxy_pid" ]; then
		kill -"$1" "$proxy_pid" 2>/dev/null || true
	else
		exit 130
	fi
}
trap 'forward INT' INT
trap 'forward TERM' TERM

if ! redis_answers; then
	if ! command -v redis-server >/dev/null 2>&1; then
		echo "run-local: installing redis-server" >&2
		sudo=""; [ "$(id -u)" -ne 0 ] && sudo=sudo
		$sudo apt-get update && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y redis-server
	fi
	redis_dir=$(mktemp -d)
	redis-server --port "$port" --bind 127.0.0.1 --daemonize no --save "" --appendonly no \
		--dir "$redis_dir" --logfile "$redis_dir/redis.log" --notify-keyspace-events KEA &
	redis_pid=$!
	echo "run-local: started redis-server on 127.0.0.1:$port (pid $redis_pid, data in $redis_dir)" >&2
	for _ in $(seq 50); do redis_answers && break; sleep 0.1; done
	if ! redis_answers; then
		echo "run-local: redis-server did not start:" >&2
		cat "$redis_dir/redis.log" >&2 || true
		exit 1
	fi
fi

echo "run-local: starting cacheproxy ${args[*]}; Ctrl-C stops it" >&2
"$bin" "${args[@]}" &
proxy_pid=$!
# wait returns early when a trapped signal arrives; wait again until the proxy
# itself has exited, and exit with its status.
status=0
while :; do
	wait "$proxy_pid" && status=0 || status=$?
	kill -0 "$proxy_pid" 2>/dev/null || break
done
proxy_pid=""
exit "$status"
