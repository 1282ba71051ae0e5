#!/usr/bin/env bash
# bench/static/run.sh: Portico's static files against nginx and Caddy (issue 4).
#
#   ./bench/static/run.sh                                  # ~8 minutes
#   BENCH_DURATION=3 BENCH_RUNS=1 ./bench/static/run.sh    # a quick look
#   BENCH_PROFILE=/tmp/static.prof ./bench/static/run.sh   # also a CPU profile of portico on the 1 KiB file
#
# What it does: builds portico; writes a 1 KiB and a 1 MiB file of random
# bytes (application/octet-stream: no server compresses them) under
# $TMP/www/static/; serves that directory with each server in turn, pinned
# to CPU 0 with taskset, on a loopback port:
#   portico  portico run --static /static/=DIR --workers 1 --access-log off examples/hello/app.py
#            (GOMAXPROCS follows the affinity: 1)
#   nginx    worker_processes 1, sendfile on, tcp_nopush on, open_file_cache on,
#            access_log off, keepalive_requests 1000000 (its default of 1000
#            would make wrk reconnect; Portico and Caddy do not limit it)
#   caddy    file_server, logs off (Debian's package)
# and runs wrk pinned to CPU 1 (taskset -c 1 wrk -t1 --latency) BENCH_RUNS
# times per file and connection count; each figure is the median of the
# runs. Servers are stopped by PID. Prints a markdown table and writes it to
# bench/static/RESULTS.md (BENCH_OUT=none to skip).
#
# Environment (defaults in brackets):
#   BENCH_DURATION [10]    seconds per wrk run
#   BENCH_RUNS [3]         runs per server, file and connection count
#   BENCH_CONNS ["64 256"] wrk connection counts
#   BENCH_PORT [18300]     first loopback port
#   BENCH_OUT [bench/static/RESULTS.md]
#   BENCH_PROFILE []       if set, a file for portico's CPU profile of a
#                          1 KiB run at the last connection count; `go tool
#                          pprof -top` of it is printed
#   BENCH_KEEP [0]         1 keeps the temp dir
#   BENCH_SERVERS ["nginx caddy portico"]  the servers to measure, in order
#                          (nginx first: the ratios are against it; a
#                          server left out shows as 0 in the table)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
cd "$REPO"
if ! command -v go >/dev/null 2>&1 && [[ -x /usr/local/go/bin/go ]]; then
	export PATH="$PATH:/usr/local/go/bin"
fi

DURATION=${BENCH_DURATION:-10}
RUNS=${BENCH_RUNS:-3}
CONNS=${BENCH_CONNS:-64 256}
PORT=${BENCH_PORT:-18300}
OUT=${BENCH_OUT:-$HERE/RESULTS.md}
PROFILE=${BENCH_PROFILE:-}
SERVER_CPU=0
CLIENT_CPU=1

need=()
for cmd in nginx caddy wrk taskset curl python3; do
	command -v "$cmd" >/dev/null 2>&1 || need+=("$cmd")
done
if ((${#need[@]})); then
	pkgs=()
	for c in "${need[@]}"; do
		case $c in taskset) pkgs+=(util-linux) ;; python3) pkgs+=(python3) ;; *) pkgs+=("$c") ;; esac
	done
	echo "installing ${pkgs[*]}" >&2
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null
fi

TMP=$(mktemp -d /tmp/portico-static-bench.XXXXXX)
chmod 755 "$TMP"
SERVER_PID=
cleanup() {
	stop_server
	if [[ ${BENCH_KEEP:-0} == 1 ]]; then echo "kept $TMP" >&2; else rm -rf "$TMP"; fi
}
trap cleanup EXIT

go build -o "$TMP/portico" ./cmd/portico
mkdir -p "$TMP/www/static" "$TMP/nginx" "$TMP/caddy"
head -c 1024 /dev/urandom >"$TMP/www/static/1k.bin"
head -c 1048576 /dev/urandom >"$TMP/www/static/1m.bin"
chmod -R a+rX "$TMP/www"

# --- servers: start_<name> PORT starts it in the background, sets SERVER_PID
start_portico() {
	env ${PORTICO_ENV:-} taskset -c $SERVER_CPU "$TMP/portico" run --bind "127.0.0.1:$1" --workers 1 \
		--access-log off --static "/static/=$TMP/www/static" examples/hello/app.py \
		>"$TMP/portico.log" 2>&1 &
	SERVER_PID=$!
}

start_nginx() {
	cat >"$TMP/nginx/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log warn;
events { worker_connections 4096; }
http {
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    access_log off;
    keepalive_requests 1000000;
    open_file_cache max=1000 inactive=60s;
    open_file_cache_valid 1s;
    client_body_temp_path $TMP/nginx;
    proxy_temp_path $TMP/nginx;
    fastcgi_temp_path $TMP/nginx;
    uwsgi_temp_path $TMP/nginx;
    scgi_temp_path $TMP/nginx;
    server {
        listen 127.0.0.1:$1;
        root $TMP/www;
    }
}
CONF
	taskset -c $SERVER_CPU nginx -c "$TMP/nginx/nginx.conf" -e "$TMP/nginx/error.log" >"$TMP/nginx/out.log" 2>&1 &
	SERVER_PID=$!
}

start_caddy() {
	cat >"$TMP/caddy/Caddyfile" <<CONF
{
	admin off
	auto_https off
}
http://127.0.0.1:$1 {
	root * $TMP/www
	file_server
}
CONF
	HOME=$TMP/caddy XDG_DATA_HOME=$TMP/caddy XDG_CONFIG_HOME=$TMP/caddy \
		taskset -c $SERVER_CPU caddy run --config "$TMP/caddy/Caddyfile" --adapter caddyfile >"$TMP/caddy/out.log" 2>&1 &
	SERVER_PID=$!
}

stop_server() {
	if [[ -n ${SERVER_PID:-} ]]; then
		kill -TERM "$SERVER_PID" 2>/dev/null || true
		wait "$SERVER_PID" 2>/dev/null || true
		SERVER_PID=
	fi
}

wait_ready() { # URL
	for _ in $(seq 1 100); do
		if [[ $(curl -s -o /dev/null -w '%{http_code}' "$1" || true) == 200 ]]; then return 0; fi
		sleep 0.1
	done
	echo "server did not answer $1" >&2
	return 1
}

# busy_ticks CPU: user+nice+system+irq+softirq+steal clock ticks of that CPU.
busy_ticks() {
	awk -v c="cpu$1" '$1 == c { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat
}

# wrk_run URL CONNS → "req/s bytes/s p99_ms server_cpu_% client_cpu_%" on
# stdout; the CPU figures are how busy CPU 0 (the server) and CPU 1 (wrk)
# were during the run: a server below 100% is not what limits the run.
wrk_run() {
	local out s0 c0 s1 c1 t0 t1
	s0=$(busy_ticks $SERVER_CPU)
	c0=$(busy_ticks $CLIENT_CPU)
	t0=$(date +%s%N)
	out=$(taskset -c $CLIENT_CPU wrk -t1 -c"$2" -d"${DURATION}s" --latency "$1")
	t1=$(date +%s%N)
	s1=$(busy_ticks $SERVER_CPU)
	c1=$(busy_ticks $CLIENT_CPU)
	echo "$out" >>"$TMP/wrk.log"
	python3 - "$out" "$((s1 - s0))" "$((c1 - c0))" "$((t1 - t0))" "$(getconf CLK_TCK)" <<'PY'
import re, sys
out = sys.argv[1]
srv_ticks, cli_ticks, ns, hz = map(int, sys.argv[2:6])
wall = ns / 1e9
def dur_ms(s):
    m = re.match(r"([\d.]+)(us|ms|s|m)", s)
    v, u = float(m.group(1)), m.group(2)
    return v * {"us": 0.001, "ms": 1, "s": 1000, "m": 60000}[u]
def size_b(s):
    m = re.match(r"([\d.]+)([KMGT]?B)", s)
    return float(m.group(1)) * {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}[m.group(2)]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
tput = size_b(re.search(r"Transfer/sec:\s+(\S+)", out).group(1))
p99 = dur_ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
errs = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
if errs:
    sys.exit("wrk: %s non-2xx responses" % errs.group(1))
print(rps, tput, p99, 100 * srv_ticks / hz / wall, 100 * cli_ticks / hz / wall)
PY
}

read -r -a SERVERS <<<"${BENCH_SERVERS:-nginx caddy portico}"
declare -A RESULT # key "server file conns" → "rps tput p99" (medians)
for server in "${SERVERS[@]}"; do
	port=$PORT
	PORT=$((PORT + 1))
	"start_$server" "$port"
	wait_ready "http://127.0.0.1:$port/static/1k.bin"
	taskset -c $CLIENT_CPU wrk -t1 -c64 -d1s "http://127.0.0.1:$port/static/1k.bin" >/dev/null # warm-up
	for file in 1k.bin 1m.bin; do
		for c in $CONNS; do
			runs=()
			for _ in $(seq 1 "$RUNS"); do
				runs+=("$(wrk_run "http://127.0.0.1:$port/static/$file" "$c")")
			done
			RESULT["$server $file $c"]=$(printf '%s\n' "${runs[@]}" | python3 -c '
import sys, statistics
rows = [list(map(float, l.split())) for l in sys.stdin if l.strip()]
print(*[statistics.median(col) for col in zip(*rows)])')
			echo "$server $file c=$c: ${RESULT["$server $file $c"]}" >&2
		done
	done
	stop_server
done

if [[ -n $PROFILE ]]; then
	last=${CONNS##* }
	port=$PORT
	PORTICO_ENV="PORTICO_CPUPROFILE=$PROFILE" start_portico "$port"
	wait_ready "http://127.0.0.1:$port/static/1k.bin"
	taskset -c $CLIENT_CPU wrk -t1 -c"$last" -d"${DURATION}s" "http://127.0.0.1:$port/static/1k.bin" >/dev/null
	stop_server
	go tool pprof -top -nodecount=40 "$TMP/portico" "$PROFILE" 2>/dev/null | head -50 >&2
fi

versions() {
	echo "- portico: $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown) (working tree), $(go version | cut -d' ' -f3)"
	echo "- nginx: $(nginx -v 2>&1 | sed 's/.*nginx\///')"
	echo "- caddy: $(caddy version 2>/dev/null | cut -d' ' -f1)"
	echo "- wrk: $(wrk -v 2>&1 | head -1 | cut -d' ' -f2)"
	echo "- machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(uname -r)"
}

table() {
	echo "| file | conns | server | req/s | throughput (MiB/s) | p99 (ms) | server CPU % | wrk CPU % | req/s vs nginx | req/s vs Caddy | p99 vs nginx |"
	echo "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
	for file in 1k.bin 1m.bin; do
		for c in $CONNS; do
			read -r nr _ np _ <<<"${RESULT["nginx $file $c"]:-0 0 0 0 0}"
			read -r cr _ <<<"${RESULT["caddy $file $c"]:-0 0 0 0 0}"
			for server in "${SERVERS[@]}"; do
				read -r r tp p sc cc <<<"${RESULT["$server $file $c"]}"
				python3 -c '
import sys
f, c, s, r, t, p, sc, cc, nr, cr, np = sys.argv[1:]
r, t, p, sc, cc, nr, cr, np = map(float, (r, t, p, sc, cc, nr, cr, np))
label = {"1k.bin": "1 KiB", "1m.bin": "1 MiB"}[f]
ratio = lambda a, b: f"{a/b:.2f}" if b else "-"
print(f"| {label} | {c} | {s} | {r:,.0f} | {t/1048576:,.1f} | {p:.2f} | {sc:.0f} | {cc:.0f} | {ratio(r, nr)} | {ratio(r, cr)} | {ratio(p, np)} |")
' "$file" "$c" "$server" "$r" "$tp" "$p" "$sc" "$cc" "$nr" "$cr" "$np"
			done
		done
	done
}

report=$(
	echo "## Static files: Portico vs nginx vs Caddy"
	echo
	echo "Measured $(date -u +%Y-%m-%d) by bench/static/run.sh in one run: each server pinned to CPU $SERVER_CPU, wrk -t1 pinned to CPU $CLIENT_CPU, loopback, ${DURATION}s per run, median of $RUNS runs. Throughput is wrk's Transfer/sec (headers included). Server and wrk CPU %: how busy CPU $SERVER_CPU and CPU $CLIENT_CPU were during the runs (median); where the server is well below 100% the client, copying the bytes, is the limit and the ratio says little about the server. Ratios above 1 favour Portico for req/s, below 1 for p99."
	echo
	versions
	echo
	table
)
echo "$report"
if [[ $OUT != none ]]; then
	echo "$report" >"$OUT"
	echo "wrote $OUT" >&2
fi
