#!/usr/bin/env bash
# bench/run.sh: Portico side by side with nginx, uWSGI and gunicorn (issue 3).
#
#   ./bench/run.sh                                   # everything, ~20 minutes
#   BENCH_DURATION=3 BENCH_RUNS=1 ./bench/run.sh     # a quick pass, ~4 minutes
#   BENCH_SCENARIOS="hello idle" ./bench/run.sh      # some scenarios only
#
# What it does:
#   1. installs what is missing from Debian (nginx, uwsgi, uwsgi-plugin-python3,
#      gunicorn, caddy, php-fpm, python3-django, wrk, nghttp2-client, openssl, curl) with apt-get;
#   2. builds portico (plain go build) and bench/idleconns into a temp dir;
#   3. for each scenario and each stack: starts the stack pinned to CPU 0, in
#      its own session, on its own loopback port; waits until it answers 200;
#      warms up; runs wrk pinned to CPU 1 (-t1) BENCH_RUNS times for each
#      connection count (h2load for the HTTP/2 scenarios, per CONNSxSTREAMS load),
#      measuring the server's CPU time (utime+stime of every
#      process of its sessions, from /proc) around each run and its RSS after;
#      stops the stack by its own process group;
#   4. prints one markdown table per scenario and writes BENCHMARKS.md (machine,
#      versions, settings, tables, targets of issues 3, 10, 13 and 14, the exact
#      commands); with BENCH_SCENARIOS, the other scenarios are carried over
#      from the BENCHMARKS.md it replaces (bench/carry.py).
#
# Environment (defaults in brackets):
#   BENCH_DURATION [10]   seconds per wrk run
#   BENCH_RUNS [3]        wrk runs per stack and connection count (median, min, max)
#   BENCH_WARMUP [2]      seconds of wrk warm-up after a stack answers
#   BENCH_CONNS ["64 256"] wrk connection counts
#   BENCH_WRK_TIMEOUT [10s] wrk --timeout: a response slower than this counts as a
#                         timeout and not in the latency figures (wrk's own 2 s
#                         default would hide the slow tail of the Django and
#                         overload scenarios, and make the sync servers collapse)
#   BENCH_SCENARIOS [all] space- or comma-separated scenario names (see SCENARIOS below)
#   BENCH_STACKS [all]    only these stacks (for a quick look at one stack)
#   BENCH_IDLE_CONNS [18000]    idle keep-alive connections in the "idle" scenario
#   BENCH_OVERLOAD_CONNS [400]  wrk connections in the "overload" scenario
#   BENCH_PORT [18100]    first loopback port; each stack takes the next free one
#   BENCH_OUT [BENCHMARKS.md at the repository root]  where to write the report; "none" skips it
#   BENCH_KEEP [0]        1 keeps the temp dir (logs, configs, raw wrk output)
#   BENCH_PORTICO []      a portico binary to use instead of building ./cmd/portico
#   BENCH_H2_LOADS ["64x10 64x1"]  h2load loads of static-h2: CONNSxSTREAMS (-c CONNS -m STREAMS)
#   BENCH_H2_HELLO_LOADS ["64x10"] the same for hello-h2
#   BENCH_PROFILE []      a directory: every portico process writes a CPU profile
#                         there (PORTICO_CPUPROFILE), named SCENARIO-STACK.prof
#
# Adding a scenario is one line in SCENARIOS (and an app under bench/apps or
# bench/ if it needs one); adding a stack is one start_<stack> function plus a
# line in STACK_LABEL.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)
cd "$REPO"

if ! command -v go >/dev/null 2>&1 && [[ -x /usr/local/go/bin/go ]]; then
	export PATH="$PATH:/usr/local/go/bin"
fi

DURATION=${BENCH_DURATION:-10}
RUNS=${BENCH_RUNS:-3}
WARMUP=${BENCH_WARMUP:-2}
CONNS=${BENCH_CONNS:-64 256}
WRK_TIMEOUT=${BENCH_WRK_TIMEOUT:-10s}
IDLE_CONNS=${BENCH_IDLE_CONNS:-18000}
OVERLOAD_CONNS=${BENCH_OVERLOAD_CONNS:-400}
NEXT_PORT=${BENCH_PORT:-18100}
OUT=${BENCH_OUT:-$REPO/BENCHMARKS.md}
SCENARIO_FILTER=${BENCH_SCENARIOS:-}
STACK_FILTER=${BENCH_STACKS:-}

PYTHON=/usr/bin/python3 # Debian's: the one python3-django, gunicorn and the uwsgi plugin are built for
SERVER_CPU=0
CLIENT_CPU=1
WORKERS=2
OVERLOAD_SLEEP_MS=10 # bench/apps/sleepy.py
QUEUE_TIMEOUT=1s     # portico's --queue-timeout in the overload scenario
# nginx's idle connections kept to php-fpm in proxy-php (upstream keepalive N
# with fastcgi_keep_conn on); 0: a connection per request. A kept connection
# holds a php-fpm child while it idles in nginx's cache, so with more
# connections than children requests stall in php-fpm's backlog (see bench/README.md).
FPM_KEEPALIVE=${BENCH_FPM_KEEPALIVE:-8}

# The settings every stack shares: 2 worker processes of 1 thread, logging
# off, nginx with 1 worker process (pinned to CPU 0 with its upstream).
unset DJANGO_DEBUG # DEBUG off in every Django scenario

# ---------------------------------------------------------------------------
# Scenarios: name|app (directory under the app copies)|module:callable|URL path|kind|title
#   kind: http (wrk at $CONNS), proxy (http, and the front's own CPU apart from
#   its upstream's), overload (wrk at $OVERLOAD_CONNS, status counts), idle (idleconns)
# and, in SCENARIO_STACKS, the stacks each scenario runs, in table order.
SCENARIOS=(
	"hello|hello|app:application|/|http|Hello-world WSGI app (examples/hello); the nginx → portico row is issue 3's \"Portico behind nginx\""
	"django-json|djangoproject|mysite.wsgi:application|/api/hello|http|Django 3.2 JSON view (examples/djangoproject /api/hello, DEBUG off, SQLite)"
	"django-template|djangobench|benchsite.wsgi:application|/rows|http|Django 3.2 template page with a 100-row loop (bench/djangobench /rows)"
	"overload|sleepy|sleepy:application|/|overload|2x overload: 10 ms requests, 2 workers (capacity 200 req/s)"
	"idle|hello|app:application|/|idle|Idle keep-alive connections"
	"proxy-http|hello|-|/|proxy|Reverse proxy to one HTTP upstream (an nginx of 1 worker answering \"Hello, World!\" with keep-alive), the same behind every front"
	"proxy-uwsgi|hello|app:application|/|proxy|Reverse proxy to uWSGI --socket over TCP (examples/hello, 2 processes)"
	"proxy-php|php|-|/index.php|proxy|Reverse proxy to php-fpm over TCP (bench/php/index.php, pm static, 2 children)"
	"django-cache|djangobench|benchsite.wsgi:application|/rows-public|http|Django 3.2 template page the same for every visitor (bench/djangobench /rows-public: /rows without its CSRF form), micro-cached for 1 s"
	"django-gzip|djangobench|benchsite.wsgi:application|/rows|http|The django-template page (bench/djangobench /rows, 9.8 kB of HTML) asked for with Accept-Encoding: gzip"
	"static-https|hello|app:application|/s/1k.bin|https|Static 1 KiB file over HTTPS with HTTP/1.1 (wrk), the same self-signed certificate for every stack"
	"static-h2|hello|app:application|/s/1k.bin|h2|Static 1 KiB file over HTTP/2 (h2load -c CONNS -m STREAMS), the same certificate"
	"hello-https|hello|app:application|/|https|Hello-world WSGI app (examples/hello, 2 workers) over HTTPS with HTTP/1.1 (wrk)"
	"hello-h2|hello|app:application|/|h2|Hello-world WSGI app (examples/hello, 2 workers) over HTTP/2 (h2load)"
)
declare -A SCENARIO_STACKS=(
	[hello]="portico uwsgi nginx-uwsgi gunicorn-sync gunicorn-gthread nginx-gunicorn nginx-portico"
	[django-json]="portico uwsgi nginx-uwsgi gunicorn-sync"
	[django-template]="portico uwsgi nginx-uwsgi gunicorn-sync"
	[overload]="portico gunicorn-sync"
	[idle]="portico nginx-static"
	[proxy-http]="portico-http nginx-http caddy-http"
	[proxy-uwsgi]="portico-uwsgi nginx-uwsgi-tcp"
	[proxy-php]="portico-php nginx-php"
	[django-cache]="portico-cache portico nginx-uwsgi-cache"
	[django-gzip]="portico portico-nocompress nginx-uwsgi-gzip nginx-uwsgi"
	[static-https]="portico-static nginx-file"
	[static-h2]="portico-static nginx-file"
	[hello-https]="portico nginx-uwsgi"
	[hello-h2]="portico nginx-uwsgi"
)
# h2load loads (kind h2): CONNSxSTREAMS, h2load -c CONNS -m STREAMS, per scenario.
declare -A H2_LOADS=(
	[static-h2]="${BENCH_H2_LOADS:-64x10 64x1}"
	[hello-h2]="${BENCH_H2_HELLO_LOADS:-64x10}"
)
# Extra portico flags per scenario, and per stack (start_portico's variants).
declare -A PORTICO_EXTRA=(
	[overload]="--queue-timeout $QUEUE_TIMEOUT"
)
CACHE_SIZE=256MiB # the cached stacks' memory: portico --cache, nginx uwsgi_cache_path max_size
CACHE_TTL=1s      # micro-caching: portico --cache-ttl (default_ttl), nginx uwsgi_cache_valid 200
declare -A PORTICO_STACK_EXTRA=(
	[portico-cache]="--cache $CACHE_SIZE --cache-ttl $CACHE_TTL"
	[portico-nocompress]="--compress=false"
)
# Extra request headers of wrk (and of the checks' curl) per scenario.
declare -A WRK_HEADER=(
	[django-gzip]="Accept-Encoding: gzip"
)

declare -A STACK_LABEL=(
	[portico]="portico"
	[uwsgi]="uWSGI --http-socket"
	[nginx-uwsgi]="nginx → uWSGI (unix socket)"
	[gunicorn-sync]="gunicorn sync"
	[gunicorn-gthread]="gunicorn gthread"
	[nginx-gunicorn]="nginx → gunicorn (unix socket)"
	[nginx-portico]="nginx → portico --uwsgi-socket"
	[nginx-static]="nginx (return 200)"
	[portico-http]="portico → nginx"
	[nginx-http]="nginx proxy_pass → nginx"
	[caddy-http]="Caddy reverse_proxy → nginx"
	[portico-uwsgi]="portico → uWSGI (TCP)"
	[nginx-uwsgi-tcp]="nginx uwsgi_pass → uWSGI (TCP)"
	[portico-php]="portico → php-fpm (TCP)"
	[nginx-php]="nginx fastcgi_pass → php-fpm (TCP)"
	[portico-cache]="portico --cache $CACHE_SIZE --cache-ttl $CACHE_TTL"
	[nginx-uwsgi-cache]="nginx uwsgi_cache (1 s) → uWSGI"
	[portico-nocompress]="portico --compress=false"
	[nginx-uwsgi-gzip]="nginx gzip on (level 1) → uWSGI"
	[portico-static]="portico --static"
	[nginx-file]="nginx (sendfile, open_file_cache)"
)

# ---------------------------------------------------------------------------
# Plumbing.

WORK=$(mktemp -d /tmp/portico-bench.XXXXXX)
chmod 755 "$WORK"
RESULTS=$WORK/results
LOGS=$WORK/logs
RUNDIR=$WORK/run
APPS=$WORK/apps
mkdir -p "$RESULTS" "$LOGS" "$RUNDIR" "$APPS"
: >"$RESULTS/runs.tsv"
: >"$RESULTS/rss.tsv"
: >"$RESULTS/failed.tsv"
: >"$RESULTS/idle.tsv"
: >"$RESULTS/commands.md"
: >"$RESULTS/scenarios.tsv"
: >"$RESULTS/responses.tsv"
: >"$RESULTS/tls.tsv"

ALL_SIDS=()   # every session this script started (each a stack's process group leader)
STACK_SIDS=() # the sessions of the stack that is running
STACK_CMDS=() # their command lines, for the report
IDLE_PID=""   # the idleconns client while it runs
# Set per scenario (section 3) for the TLS kinds, https and h2:
TLS_LISTEN=""  # nginx's listen options: "ssl", "ssl http2"
PORTICO_TLS=() # portico's --tls-cert/--tls-key
CURL_TLS=()    # curl's: the run's self-signed certificate, HTTP/1.1 or HTTP/2
CLIENT_PID="" # wrk while it runs

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}

# proc_fields PID: sets F to the fields of /proc/PID/stat after the command
# name (F[0] is field 3, state; F[3] session; F[11] utime; F[12] stime).
proc_fields() {
	local line
	{ read -r line <"/proc/$1/stat"; } 2>/dev/null || return 1
	line=${line##*) }
	read -r -a F <<<"$line"
}

# session_pids SID...: the live (not zombie) processes of those sessions.
session_pids() {
	local want=" $* " p pid
	for p in /proc/[0-9]*; do
		pid=${p#/proc/}
		proc_fields "$pid" || continue
		[[ ${F[0]} != Z && $want == *" ${F[3]} "* ]] && echo "$pid"
	done
	return 0
}

# cpu_ticks SID...: utime+stime, in clock ticks, of every live process of those sessions.
cpu_ticks() {
	local total=0 pid
	for pid in $(session_pids "$@"); do
		proc_fields "$pid" || continue
		total=$((total + F[11] + F[12]))
	done
	echo "$total"
}

# edge_ticks SID...: utime+stime, in clock ticks, of the processes of those
# sessions that are the edge server, named portico or nginx, apart from the
# app servers behind them (portico's Python workers, uWSGI): what compression
# and caching cost the server that does them.
edge_ticks() {
	local total=0 pid comm
	for pid in $(session_pids "$@"); do
		{ read -r comm <"/proc/$pid/comm"; } 2>/dev/null || continue
		[[ $comm == portico || $comm == nginx ]] || continue
		proc_fields "$pid" || continue
		total=$((total + F[11] + F[12]))
	done
	echo "$total"
}

# rss_kib SID...: the sum of VmRSS of every live process of those sessions.
rss_kib() {
	local total=0 pid kib
	for pid in $(session_pids "$@"); do
		kib=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
		total=$((total + ${kib:-0}))
	done
	echo "$total"
}

# cpus_busy: user+nice+system+steal clock ticks of the server's and the
# client's CPUs (/proc/stat), to tell how much else ran on them during a run. Steal is the time the hypervisor gave our virtual CPUs to
# someone else: on a shared VM it skews a run as much as a local process.
cpus_busy() {
	awk -v a="cpu$SERVER_CPU" -v b="cpu$CLIENT_CPU" '$1 == a || $1 == b { s += $2 + $3 + $4 + $9 } END { print s }' /proc/stat
}

# children_cpu FILE0 FILE1: seconds of CPU this shell's reaped children used
# between two outputs of the "times" builtin (which must run in this shell: in
# a $(...) subshell it would report the subshell's own children).
children_cpu() {
	awk 'FNR == 2 { n = split($0, t, " "); s = 0
			for (i = 1; i <= n; i++) { split(t[i], ms, "m"); s += ms[1] * 60 + ms[2] }
			v[++k] = s }
		END { printf "%.3f\n", v[2] - v[1] }' "$1" "$2"
}

# stop_sessions SID...: SIGTERM to each session's process group (the leader's
# children that made their own process groups are stopped by their leader),
# wait up to 20 s for every process of the sessions, then SIGKILL what is left.
stop_sessions() {
	local sid i left
	for sid in "$@"; do
		kill -TERM -- "-$sid" 2>/dev/null || true
	done
	for ((i = 0; i < 200; i++)); do
		[[ -z $(session_pids "$@") ]] && break
		sleep 0.1
	done
	left=$(session_pids "$@")
	if [[ -n $left ]]; then
		log "killing what did not stop within 20 s: ${left//$'\n'/ }"
		# shellcheck disable=SC2086
		kill -KILL $left 2>/dev/null || true
	fi
	for sid in "$@"; do
		wait "$sid" 2>/dev/null || true
	done
}

cleanup() {
	local status=$?
	trap - EXIT INT TERM
	if [[ -n $CLIENT_PID ]]; then
		kill -TERM "$CLIENT_PID" 2>/dev/null || true
		wait "$CLIENT_PID" 2>/dev/null || true
	fi
	if [[ -n $IDLE_PID ]]; then
		kill -TERM "$IDLE_PID" 2>/dev/null || true
		wait "$IDLE_PID" 2>/dev/null || true
	fi
	if ((${#ALL_SIDS[@]} > 0)); then
		stop_sessions "${ALL_SIDS[@]}"
		local left
		left=$(session_pids "${ALL_SIDS[@]}")
		if [[ -n $left ]]; then
			log "server processes left over: ${left//$'\n'/ }"
			status=1
		else
			log "no server process left over"
		fi
	fi
	if [[ ${BENCH_KEEP:-0} == 1 ]]; then
		log "kept $WORK"
	else
		rm -rf "$WORK"
	fi
	exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# free_port: the next loopback TCP port nobody listens on, in PORT.
free_port() {
	while [[ -n $(ss -Htln "sport = :$NEXT_PORT") ]]; do
		NEXT_PORT=$((NEXT_PORT + 1))
	done
	PORT=$NEXT_PORT
	NEXT_PORT=$((NEXT_PORT + 1))
}

# spawn NAME CMD...: start CMD pinned to CPU 0 in a new session (so it leads its
# own process group and its whole tree can be measured and stopped), with its
# output in $LOGS. setsid does not fork here (a background job of a
# non-interactive shell is no process group leader), so $! is the server's PID.
spawn() {
	local name=$1
	shift
	setsid taskset -c "$SERVER_CPU" "$@" >"$LOGS/$CUR-$name.log" 2>&1 </dev/null &
	STACK_SIDS+=("$!")
	ALL_SIDS+=("$!")
	STACK_CMDS+=("$(printf '%q ' taskset -c "$SERVER_CPU" "$@" | sed "s|$WORK|\$TMP|g")")
}

# wait_answer URL: wait up to 60 s until URL answers 200, while every process
# of the stack lives.
wait_answer() {
	local url=$1 i code sid
	for ((i = 0; i < 240; i++)); do
		code=$(curl -s "${CURL_TLS[@]}" -o /dev/null -w '%{http_code}' --max-time 2 "$url" || true)
		[[ $code == 200 ]] && return 0
		for sid in "${STACK_SIDS[@]}"; do
			if ! proc_fields "$sid" || [[ ${F[0]} == Z ]]; then
				log "$CUR: a process of the stack exited (last answer: $code)"
				return 1
			fi
		done
		sleep 0.25
	done
	log "$CUR: no 200 from $url within 60 s (last answer: $code)"
	return 1
}

# env_flags FLAG: "FLAG KEY=VALUE" for each entry of APP_ENV, in FLAGS.
env_flags() {
	FLAGS=()
	local kv
	for kv in "${APP_ENV[@]}"; do
		FLAGS+=("$1" "$kv")
	done
}

# upstream_port: a second free port, for a stack's upstream, in UP (PORT,
# the front's, is left as it is).
upstream_port() {
	local front=$PORT
	free_port
	UP=$PORT
	PORT=$front
}

# wait_listen PORT: wait up to 60 s until something listens on 127.0.0.1:PORT
# (an upstream, before its front is started: a front's first request must not
# fail and take the upstream out of rotation), while every process of the stack lives.
wait_listen() {
	local i sid
	for ((i = 0; i < 240; i++)); do
		[[ -n $(ss -Htln "sport = :$1") ]] && return 0
		for sid in "${STACK_SIDS[@]}"; do
			if ! proc_fields "$sid" || [[ ${F[0]} == Z ]]; then
				log "$CUR: an upstream exited before listening on :$1"
				return 1
			fi
		done
		sleep 0.25
	done
	log "$CUR: nothing listens on :$1 after 60 s"
	return 1
}

# portico_env: in PENV, "env PORTICO_CPUPROFILE=..." when BENCH_PROFILE is set.
portico_env() {
	PENV=()
	[[ -n ${BENCH_PROFILE:-} ]] && PENV=(env "PORTICO_CPUPROFILE=$BENCH_PROFILE/$CUR.prof")
	return 0
}

# show_config LANG FILE: FILE in the report's commands section.
show_config() {
	{
		printf '\n<details><summary>%s: %s</summary>\n\n```%s\n' "$CUR" "${2##*/}" "$1"
		sed "s|$WORK|\$TMP|g" "$2"
		printf '```\n\n</details>\n'
	} >>"$RESULTS/commands-extra.md"
}

# ---------------------------------------------------------------------------
# Stacks: start_<stack> APP_DIR MODULE:CALLABLE PORT. Each starts its
# processes with spawn (upstream first) and returns; the caller waits for an
# answer on 127.0.0.1:PORT.

start_portico() {
	env_flags --env
	portico_env
	# shellcheck disable=SC2086
	spawn portico "${PENV[@]}" "$PORTICO" run --bind "127.0.0.1:$3" --workers "$WORKERS" --threads 1 \
		--access-log off --python "$PYTHON" --chdir "$1" "${FLAGS[@]}" ${PORTICO_EXTRA[$SCENARIO]:-} \
		${PORTICO_STACK_EXTRA[$STACK]:-} "${PORTICO_TLS[@]}" "$2"
}

# Static files (static-https, static-h2): the 1 KiB file under /s/, the app
# (examples/hello, 1 worker as in bench/static) only because run needs one;
# over TLS on the run's certificate.
start_portico-static() {
	portico_env
	spawn portico "${PENV[@]}" "$PORTICO" run --bind "127.0.0.1:$3" --workers 1 --threads 1 \
		--access-log off --python "$PYTHON" --chdir "$1" "${PORTICO_TLS[@]}" --static "/s=$WWW/s" "$2"
}

# nginx serving the same file as bench/static's: sendfile, tcp_nopush,
# open_file_cache (with TLS, and no kTLS, nginx reads the file and encrypts
# it in user space: sendfile does not apply).
start_nginx-file() {
	start_nginx "$3" "root $WWW;" "" "include /etc/nginx/mime.types; default_type application/octet-stream;
	    sendfile on; tcp_nopush on; open_file_cache max=1000 inactive=60s; open_file_cache_valid 1s;"
}

# The same, with a shared cache of $CACHE_SIZE that keeps answers without
# freshness information for $CACHE_TTL (the route's cache.default_ttl).
start_portico-cache() { start_portico "$@"; }

# The same, without compression of the app's answers (on by default).
start_portico-nocompress() { start_portico "$@"; }

start_uwsgi() {
	env_flags --env
	spawn uwsgi uwsgi --plugin python3 --master --processes "$WORKERS" --disable-logging --die-on-term \
		--need-app --listen 1024 --http-socket "127.0.0.1:$3" --chdir "$1" "${FLAGS[@]}" --module "$2"
}

start_gunicorn-sync() {
	env_flags --env
	spawn gunicorn gunicorn --workers "$WORKERS" --worker-class sync --bind "127.0.0.1:$3" \
		--log-level warning --chdir "$1" "${FLAGS[@]}" "$2"
}

start_gunicorn-gthread() {
	env_flags --env
	spawn gunicorn gunicorn --workers "$WORKERS" --worker-class gthread --threads 1 --bind "127.0.0.1:$3" \
		--log-level warning --chdir "$1" "${FLAGS[@]}" "$2"
}

# start_uwsgi_unix APP_DIR MODULE:CALLABLE: uWSGI on the unix socket $SOCK,
# the settings of every Django stack (2 processes, 1 thread, no logging).
start_uwsgi_unix() {
	SOCK=$RUNDIR/$CUR-uwsgi.sock
	env_flags --env
	spawn uwsgi uwsgi --plugin python3 --master --processes "$WORKERS" --disable-logging --die-on-term \
		--need-app --listen 1024 --socket "$SOCK" --chmod-socket=666 --chdir "$1" "${FLAGS[@]}" --module "$2"
}

start_nginx-uwsgi() {
	start_uwsgi_unix "$1" "$2"
	start_nginx "$3" "include /etc/nginx/uwsgi_params; uwsgi_pass unix:$SOCK;"
}

# nginx's micro-cache in front of uWSGI: answers kept $CACHE_TTL, one request
# at a time to uWSGI per key (cache_lock), the others served the stale copy
# while it is refreshed in the background: the closest to portico's coalescing.
# uwsgi_cache_key has no default; this is proxy_cache_key's.
start_nginx-uwsgi-cache() {
	start_uwsgi_unix "$1" "$2"
	start_nginx "$3" "include /etc/nginx/uwsgi_params; uwsgi_pass unix:$SOCK;
	        uwsgi_cache django; uwsgi_cache_key \$scheme\$host\$request_uri; uwsgi_cache_valid 200 $CACHE_TTL;
	        uwsgi_cache_lock on; uwsgi_cache_use_stale updating; uwsgi_cache_background_update on;
	        add_header X-Cache \$upstream_cache_status;" "" \
		"uwsgi_cache_path $WORK/uwsgi-cache-$CUR levels=1:2 keys_zone=django:10m max_size=${CACHE_SIZE%iB}; # nginx's size units: k, m, g"
}

# nginx's gzip at its default level (1) in front of uWSGI; text/html is
# always in gzip_types; the others are portico's compressible types.
start_nginx-uwsgi-gzip() {
	start_uwsgi_unix "$1" "$2"
	start_nginx "$3" "include /etc/nginx/uwsgi_params; uwsgi_pass unix:$SOCK;
	        gzip on; gzip_comp_level 1; gzip_min_length 1024; gzip_vary on;
	        gzip_types text/plain text/css text/xml text/javascript application/javascript application/json application/xml image/svg+xml application/wasm;"
}

start_nginx-gunicorn() {
	local sock=$RUNDIR/$CUR-gunicorn.sock
	env_flags --env
	spawn gunicorn gunicorn --workers "$WORKERS" --worker-class sync --bind "unix:$sock" \
		--log-level warning --chdir "$1" "${FLAGS[@]}" "$2"
	start_nginx "$3" "proxy_set_header Host \$http_host; proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for; proxy_pass http://unix:$sock;"
}

start_nginx-portico() {
	local sock=$RUNDIR/$CUR-portico.sock
	env_flags --env
	portico_env
	# shellcheck disable=SC2086
	spawn portico "${PENV[@]}" "$PORTICO" run --uwsgi-socket "unix:$sock" --workers "$WORKERS" --threads 1 \
		--access-log off --python "$PYTHON" --chdir "$1" "${FLAGS[@]}" ${PORTICO_EXTRA[$SCENARIO]:-} "$2"
	# nginx may connect before portico listens; wait_answer retries through the 502s.
	start_nginx "$3" "include /etc/nginx/uwsgi_params; uwsgi_pass unix:$sock;"
}

# nginx alone, answering every request itself: the idle-connection comparison.
start_nginx-static() {
	start_nginx "$3" "default_type text/plain; return 200 \"Hello, World!\\n\";" 20000
}

# Proxy stacks (kind proxy): each starts its own copy of the upstream, with
# the same settings for every front, waits until it listens, then the front.
# Upstream and front are both pinned to CPU 0 and both counted in CPU/req;
# the front's share is measured apart (the last session started).

# start_hello_upstream PORT: the HTTP upstream of proxy-http, an nginx of 1
# worker answering 14 bytes itself with keep-alive (nginx's defaults:
# keepalive_timeout 75s, keepalive_requests 1000).
start_hello_upstream() {
	start_nginx "$1" "default_type text/plain; return 200 \"Hello, World!\\n\";" "" "" upstream
	wait_listen "$1"
}

# start_uwsgi_socket PORT APP_DIR MODULE:CALLABLE: uWSGI speaking the uwsgi
# protocol on 127.0.0.1:PORT, the hello scenario's settings.
start_uwsgi_socket() {
	env_flags --env
	spawn uwsgi uwsgi --plugin python3 --master --processes "$WORKERS" --disable-logging --die-on-term \
		--need-app --listen 1024 --socket "127.0.0.1:$1" --chdir "$2" "${FLAGS[@]}" --module "$3"
	wait_listen "$1"
}

# start_php_fpm PORT: php-fpm with a pool on 127.0.0.1:PORT, pm static with
# $WORKERS children, no access log (php-fpm's default), its own config (no
# system pool); as root it needs -R and a pool user.
start_php_fpm() {
	local dir=$WORK/php-fpm-$CUR root=()
	mkdir -p "$dir"
	{
		cat <<-EOF
			[global]
			pid = $dir/php-fpm.pid
			error_log = $dir/error.log
			daemonize = no
			[bench]
			listen = 127.0.0.1:$1
			listen.backlog = 1024
			pm = static
			pm.max_children = $WORKERS
		EOF
		((EUID == 0)) && printf 'user = root\ngroup = root\n'
	} >"$dir/php-fpm.conf"
	((EUID == 0)) && root=(-R)
	spawn php-fpm "$PHP_FPM" --nodaemonize --fpm-config "$dir/php-fpm.conf" "${root[@]}"
	show_config ini "$dir/php-fpm.conf"
	wait_listen "$1"
}

# start_portico_proxy PORT URL: portico run with one proxy route, "/" to URL.
start_portico_proxy() {
	portico_env
	spawn portico "${PENV[@]}" "$PORTICO" run --bind "127.0.0.1:$1" --access-log off --proxy "/=$2"
}

start_portico-http() {
	upstream_port
	start_hello_upstream "$UP"
	start_portico_proxy "$3" "http://127.0.0.1:$UP"
}

# nginx's standard keep-alive setup toward an HTTP upstream.
start_nginx-http() {
	upstream_port
	start_hello_upstream "$UP"
	start_nginx "$3" "proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_pass http://hello;" "" \
		"upstream hello { server 127.0.0.1:$UP; keepalive 64; }"
}

# Caddy 2 reverse_proxy with its defaults (keep-alive, 32 idle connections per
# upstream), no admin endpoint, no automatic HTTPS, no access log (Caddy logs
# requests only with a log directive), its own log at ERROR.
start_caddy-http() {
	local dir=$WORK/caddy-$CUR
	upstream_port
	start_hello_upstream "$UP"
	mkdir -p "$dir"
	# (Not <<-: Caddy wants the tabs it would strip.)
	cat >"$dir/Caddyfile" <<EOF
{
	admin off
	auto_https off
	log {
		level ERROR
	}
}

http://127.0.0.1:$3 {
	bind 127.0.0.1
	reverse_proxy 127.0.0.1:$UP
}
EOF
	spawn caddy env HOME="$dir" XDG_CONFIG_HOME="$dir/config" XDG_DATA_HOME="$dir/data" \
		caddy run --adapter caddyfile --config "$dir/Caddyfile"
	show_config caddyfile "$dir/Caddyfile"
}

start_portico-uwsgi() {
	upstream_port
	start_uwsgi_socket "$UP" "$1" "$2"
	start_portico_proxy "$3" "uwsgi://127.0.0.1:$UP"
}

# uwsgi_pass has no keep-alive (the uwsgi protocol is one request per connection).
start_nginx-uwsgi-tcp() {
	upstream_port
	start_uwsgi_socket "$UP" "$1" "$2"
	start_nginx "$3" "include /etc/nginx/uwsgi_params; uwsgi_pass 127.0.0.1:$UP;"
}

# The config file is the only way to give a FastCGI route its document root.
start_portico-php() {
	local conf=$WORK/portico-$CUR.toml
	upstream_port
	start_php_fpm "$UP"
	cat >"$conf" <<-EOF
		access_log = "off"
		[[listener]]
		addr = "127.0.0.1:$3"
		[[site]]
		hosts = ["default"]
		[[site.route]]
		path = "/"
		proxy = { upstreams = ["fastcgi://127.0.0.1:$UP"], root = "$1" }
	EOF
	portico_env
	spawn portico "${PENV[@]}" "$PORTICO" serve -c "$conf"
	show_config toml "$conf"
}

# nginx's standard PHP setup with keep-alive to php-fpm.
start_nginx-php() {
	local keep="fastcgi_keep_conn on;" cache="keepalive $FPM_KEEPALIVE;"
	((FPM_KEEPALIVE > 0)) || { keep="" cache=""; }
	upstream_port
	start_php_fpm "$UP"
	start_nginx "$3" "root $1; fastcgi_index index.php; include /etc/nginx/fastcgi_params; fastcgi_param SCRIPT_FILENAME \$document_root\$fastcgi_script_name; $keep fastcgi_pass php_fpm;" "" \
		"upstream php_fpm { server 127.0.0.1:$UP; $cache }"
}

# start_nginx PORT LOCATION-BODY [WORKER_CONNECTIONS] [HTTP-BLOCK-EXTRA] [NAME]:
# nginx in the foreground (daemon off), 1 worker process, no access log,
# everything under $WORK/NAME-$CUR (NAME defaults to nginx; a second nginx in a
# stack, such as an upstream, needs its own).
start_nginx() {
	local name=${5:-nginx}
	local dir=$WORK/$name-$CUR conns=${3:-4096} listen="" tls=""
	# The front of a TLS scenario (https, h2): ssl (and http2) on the run's
	# certificate; TLS 1.2 and 1.3 as portico (nginx 1.22's default stops at
	# 1.2; 1.23.4 added 1.3); keepalive_requests as the static benchmark's
	# nginx, since h2load does not reconnect a connection nginx closes after
	# its default of 1000 requests, and wrk would pay a handshake per 1000
	# (portico sets no limit).
	if [[ $name == nginx && -n $TLS_LISTEN ]]; then
		listen=" $TLS_LISTEN"
		tls="ssl_certificate $CERT; ssl_certificate_key $KEY; ssl_protocols TLSv1.2 TLSv1.3; keepalive_requests 1000000;"
	fi
	mkdir -p "$dir"
	{
		# As root, nginx would switch its worker to nobody; keep it root like every other server here.
		((EUID == 0)) && echo "user root;"
		cat <<-EOF
			worker_processes 1;
			worker_rlimit_nofile $((conns + 100));
			pid $dir/nginx.pid;
			error_log $dir/error.log warn;
			events { worker_connections $conns; }
			http {
			    access_log off;
			    client_body_temp_path $dir/client_body;
			    proxy_temp_path $dir/proxy;
			    fastcgi_temp_path $dir/fastcgi;
			    uwsgi_temp_path $dir/uwsgi;
			    scgi_temp_path $dir/scgi;
			    ${4:-}
			    server {
			        listen 127.0.0.1:$1$listen;
			        $tls
			        location / { $2 }
			    }
			}
		EOF
	} >"$dir/nginx.conf"
	spawn "$name" nginx -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf" -g "daemon off;"
	{
		printf '\n<details><summary>%s: %s nginx.conf</summary>\n\n```nginx\n' "$CUR" "$name"
		sed "s|$WORK|\$TMP|g" "$dir/nginx.conf"
		printf '```\n\n</details>\n'
	} >>"$RESULTS/commands-extra.md"
}

# ---------------------------------------------------------------------------
# Measurements.

# parse_wrk FILE: "requests seconds rps p50_ms p99_ms non2xx errors readerrors timeouts statuses",
# errors being wrk's connect, write and timeout errors; read errors are counted
# apart because a server that closes every connection (uWSGI's --http-socket)
# makes one per request.
parse_wrk() {
	awk '
		function ms(v) {
			if (v ~ /us$/) return v / 1000
			if (v ~ /ms$/) return v + 0
			if (v ~ /m$/) return v * 60000
			if (v ~ /s$/) return v * 1000
			return v + 0
		}
		BEGIN { req = 0; secs = 0; rps = 0; p50 = "-"; p99 = "-"; non2xx = 0; errs = 0; rerrs = 0; timeouts = 0; st = "" }
		/ requests in / { req = $1; secs = $4; sub(/s,?$/, "", secs) }
		/^Requests\/sec:/ { rps = $2 }
		/^ +50%/ { p50 = ms($2) }
		/^ +99%/ { p99 = ms($2) }
		/Non-2xx or 3xx responses:/ { non2xx = $NF }
		/Socket errors:/ { gsub(/,/, ""); errs = $4 + $8 + $10; rerrs = $6; timeouts = $10 }
		/^status [0-9]+ [0-9]+$/ { st = st (st == "" ? "" : ",") $2 ":" $3 }
		END { printf "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", req, secs, rps, p50, p99, non2xx, errs, rerrs, timeouts, (st == "" ? "-" : st) }
	' "$1"
}

# quiesce: wait (up to 15 s) until the stack uses no CPU for 0.3 s, so that
# requests still queued from the previous run (a sync server works through its
# backlog after wrk has gone) are not billed to the next one.
quiesce() {
	local a b i
	a=$(cpu_ticks "${STACK_SIDS[@]}")
	for ((i = 0; i < 50; i++)); do
		sleep 0.3
		b=$(cpu_ticks "${STACK_SIDS[@]}")
		((b - a <= 1)) && return 0
		a=$b
	done
	log "  $CUR still busy after 15 s"
}

# client OUTFILE CMD...: run a load generator in the background, its output in
# OUTFILE, and wait for it. wrk catches SIGINT and exits 0, so in the
# foreground it would swallow a Ctrl-C; "wait" returns at once on a trapped
# signal, and cleanup stops CLIENT_PID. (The output is redirected inside, not
# on the call, so that the trap's own messages are not redirected with it.)
client() {
	local out=$1
	shift
	"$@" >"$out" 2>&1 &
	CLIENT_PID=$!
	wait "$CLIENT_PID" || true
	CLIENT_PID=""
}

# parse_h2load FILE: parse_wrk's fields from h2load's output. h2load gives no
# percentiles: the p50 and p99 fields carry the mean and the max of its "time
# for request"; non-2xx are its 3xx, 4xx and 5xx; requests are those done; errors are the
# failed, errored and timed-out requests; no status counts.
parse_h2load() {
	awk '
		function ms(v) {
			if (v ~ /us$/) return v / 1000
			if (v ~ /ms$/) return v + 0
			if (v ~ /s$/) return v * 1000
			return v + 0
		}
		BEGIN { req = 0; secs = 0; rps = 0; mean = "-"; max = "-"; non2xx = 0; errs = 0; timeouts = 0 }
		/^finished in / { secs = $3; sub(/s,?$/, "", secs); rps = $4 }
		/^requests: / { req = $6; errs = $10 + $12 + $14; timeouts = $14 }
		/^status codes: / { non2xx = $5 + $7 + $9 }
		/^time for request:/ { max = ms($5); mean = ms($6) }
		END { printf "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", req, secs, rps, mean, max, non2xx, errs, 0, timeouts, "-" }
	' "$1"
}

# bench_http URL LOAD...: warm up, then RUNS runs per load: wrk at LOAD
# connections, or (kind h2) h2load at LOAD = CONNSxSTREAMS.
bench_http() {
	local url=$1 c run out t0 t1 f0 f1 e0 e1 b0 b1 wrkargs=() gen
	shift
	[[ $KIND == overload ]] && wrkargs=(-s "$BENCH_DIR/status.lua")
	[[ -n ${WRK_HEADER[$SCENARIO]:-} ]] && wrkargs+=(-H "${WRK_HEADER[$SCENARIO]}")
	if [[ $KIND == h2 ]]; then
		client /dev/null taskset -c "$CLIENT_CPU" h2load -t1 -c64 -m10 -D "$WARMUP" "$url"
	else
		client /dev/null taskset -c "$CLIENT_CPU" wrk -t1 -c64 -d"${WARMUP}s" --timeout "$WRK_TIMEOUT" "${wrkargs[@]}" "$url"
	fi
	quiesce
	for c in "$@"; do
		for ((run = 1; run <= RUNS; run++)); do
			out=$LOGS/$CUR-wrk-c$c-run$run.txt
			t0=$(cpu_ticks "${STACK_SIDS[@]}")
			f0=$(cpu_ticks "${STACK_SIDS[-1]}")
			e0=$(edge_ticks "${STACK_SIDS[@]}")
			b0=$(cpus_busy)
			times >"$WORK/times0"
			if [[ $KIND == h2 ]]; then
				client "$out" taskset -c "$CLIENT_CPU" h2load -t1 -c"${c%x*}" -m"${c#*x}" -D "$DURATION" "$url"
			else
				client "$out" taskset -c "$CLIENT_CPU" wrk -t1 -c"$c" -d"${DURATION}s" --timeout "$WRK_TIMEOUT" --latency "${wrkargs[@]}" "$url"
			fi
			times >"$WORK/times1"
			b1=$(cpus_busy)
			t1=$(cpu_ticks "${STACK_SIDS[@]}")
			f1=$(cpu_ticks "${STACK_SIDS[-1]}")
			e1=$(edge_ticks "${STACK_SIDS[@]}")
			quiesce
			local r srv wrk
			gen=parse_wrk
			[[ $KIND == h2 ]] && gen=parse_h2load
			r=$($gen "$out")
			srv=$(awk -v t=$((t1 - t0)) -v hz="$CLK_TCK" 'BEGIN { printf "%.3f", t / hz }')
			wrk=$(children_cpu "$WORK/times0" "$WORK/times1")
			# The last columns: the CPU seconds of the stack's last session (its
			# front), and of its portico and nginx processes (its edge).
			printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$SCENARIO" "$STACK" "$c" "$run" "$r" "$srv" "$wrk" \
				"$(awk -v b=$((b1 - b0)) -v hz="$CLK_TCK" -v s="$srv" -v w="$wrk" 'BEGIN { o = b / hz - s - w; printf "%.3f", (o < 0 ? 0 : o) }')" \
				"$(awk -v t=$((f1 - f0)) -v hz="$CLK_TCK" 'BEGIN { printf "%.3f", t / hz }')" \
				"$(awk -v t=$((e1 - e0)) -v hz="$CLK_TCK" 'BEGIN { printf "%.3f", t / hz }')" >>"$RESULTS/runs.tsv"
			log "  c=$c run $run: $(awk -F'\t' '{ printf "%s req/s, p50 %s ms, p99 %s ms, non-2xx %s, socket errors %s (+ %s read)", $3, $4, $5, $6, $7, $8 }' <<<"$r")"
		done
		printf '%s\t%s\t%s\t%s\n' "$SCENARIO" "$STACK" "$c" "$(rss_kib "${STACK_SIDS[@]}")" >>"$RESULTS/rss.tsv"
	done
}

# probe URL: one GET with the scenario's request header, as wrk sends it;
# sets P_CODE, P_BYTES (body bytes on the wire), P_LENGTH (Content-Length),
# P_ENCODING (Content-Encoding) and P_XCACHE (X-Cache), "-" when absent;
# P_HTTP the HTTP version it was answered in (1.1, 2).
probe() {
	local hdr=() head=$WORK/probe-head
	[[ -n ${WRK_HEADER[$SCENARIO]:-} ]] && hdr=(-H "${WRK_HEADER[$SCENARIO]}")
	read -r P_CODE P_BYTES P_HTTP < <(curl -s "${CURL_TLS[@]}" -o /dev/null -D "$head" -w '%{http_code} %{size_download} %{http_version}\n' --max-time 10 "${hdr[@]}" "$1" || echo "000 0 -")
	P_LENGTH=$(head_field "$head" content-length)
	P_ENCODING=$(head_field "$head" content-encoding)
	P_XCACHE=$(head_field "$head" x-cache)
}

# head_field FILE NAME: the value of header NAME in the response head FILE
# (curl -D), "-" when absent.
head_field() {
	tr -d '\r' <"$1" | awk -v h="$2" 'BEGIN { h = tolower(h) }
		{ n = index($0, ":") } n && tolower(substr($0, 1, n - 1)) == h { v = substr($0, n + 1); sub(/^ +/, "", v) }
		END { print (v == "" ? "-" : v) }'
}

# check_response URL: before timing, what the stack answers to the
# scenario's request (status, body bytes, Content-Encoding, X-Cache) goes
# to responses.tsv; in django-cache a cached stack (*-cache) must answer
# X-Cache: HIT to a second request, and in django-gzip the stacks that
# compress must answer gzip and the others must not. Prints why not and
# returns 1 if not.
check_response() {
	local url=$1 want=""
	case $SCENARIO in
	django-cache | django-gzip) ;;
	static-https | static-h2 | hello-https | hello-h2)
		# The TLS scenarios: the answer comes in the protocol the load
		# generator will speak (curl offers the same ALPN: h2 for h2load,
		# none for wrk), and the static file whole.
		probe "$url"
		local proto=1.1
		[[ $KIND == h2 ]] && proto=2
		[[ $P_HTTP == "$proto" ]] || want="HTTP/$proto (got HTTP/$P_HTTP)"
		[[ $SCENARIO != static-* || $P_BYTES == 1024 ]] || want="the 1024-byte file (got $P_BYTES bytes)"
		[[ $P_CODE == 200 ]] || want="200 (got $P_CODE)"
		# What TLS the stack agrees on with an OpenSSL client as wrk's.
		local tls
		tls=$(curl -sv "${CURL_TLS[@]}" -o /dev/null --max-time 10 "$url" 2>&1 | sed -n 's/^\* SSL connection using //p' | head -n 1)
		printf '%s\t%s\t%s\n' "$SCENARIO" "$STACK" "${tls:-?}" >>"$RESULTS/tls.tsv"
		log "  answer: $P_CODE, HTTP/$P_HTTP, $P_BYTES bytes, ${tls:-?}"
		if [[ -n $want ]]; then
			CHECK_REASON="expected $want"
			return 1
		fi
		return 0
		;;
	*) return 0 ;;
	esac
	probe "$url"
	if [[ $SCENARIO == django-cache && $STACK == *-cache ]]; then
		probe "$url" # the second request: within the TTL, a hit
		[[ $P_XCACHE == HIT ]] || want="X-Cache: HIT on a second request (got X-Cache: $P_XCACHE, status $P_CODE)"
	fi
	if [[ $SCENARIO == django-gzip ]]; then
		case $STACK in
		portico | nginx-uwsgi-gzip) [[ $P_ENCODING == gzip ]] || want="Content-Encoding: gzip (got: $P_ENCODING)" ;;
		*) [[ $P_ENCODING == - ]] || want="no Content-Encoding (got: $P_ENCODING)" ;;
		esac
	fi
	[[ $P_CODE == 200 ]] || want="200 (got $P_CODE)"
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$SCENARIO" "$STACK" "$P_CODE" "$P_BYTES" "$P_LENGTH" "$P_ENCODING" "$P_XCACHE" >>"$RESULTS/responses.tsv"
	log "  answer: $P_CODE, $P_BYTES bytes, Content-Length $P_LENGTH, Content-Encoding $P_ENCODING, X-Cache $P_XCACHE"
	if [[ -n $want ]]; then
		CHECK_REASON="expected $want"
		return 1
	fi
}

# bench_idle ADDR: hold IDLE_CONNS keep-alive connections, measure RSS before
# and while holding, kernel slab growth, and whether a request still gets an answer.
bench_idle() {
	local addr=$1 out=$LOGS/$CUR-idleconns.txt before after slab0 slab1 i code secs established failed opensecs alive held
	sleep 1
	before=$(rss_kib "${STACK_SIDS[@]}")
	slab0=$(awk '/^Slab:/ {print $2}' /proc/meminfo)
	"$IDLECONNS" -addr "$addr" -n "$IDLE_CONNS" -per-child 5000 >"$out" 2>"$LOGS/$CUR-idleconns.err" &
	IDLE_PID=$!
	for ((i = 0; i < 1200; i++)); do
		grep -qs '^established' "$out" && break
		kill -0 "$IDLE_PID" 2>/dev/null || break
		sleep 0.1
	done
	read -r _ established _ failed _ opensecs < <(grep '^established' "$out" || echo "established 0 failed $IDLE_CONNS seconds 0")
	sleep 5 # let the server settle: Portico parks connections idle for 1 s and
	        # returns the memory of a burst to the OS a second after the last park
	after=$(rss_kib "${STACK_SIDS[@]}")
	slab1=$(awk '/^Slab:/ {print $2}' /proc/meminfo)
	held=$(ss -Htn state established "( sport = :${addr##*:} )" | wc -l)
	read -r code secs < <(curl -s -o /dev/null -w '%{http_code} %{time_total}\n' --max-time 5 "http://$addr/" || echo "000 5")
	kill -TERM "$IDLE_PID" 2>/dev/null || true
	wait "$IDLE_PID" 2>/dev/null || true
	IDLE_PID=""
	alive=$(awk '/^alive/ {print $2}' "$out")
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$STACK" "$IDLE_CONNS" "$established" "$failed" "$opensecs" \
		"$before" "$after" "$held" "$code" "$secs" "${alive:-0}" "$((slab1 - slab0))" >>"$RESULTS/idle.tsv"
	log "  held $held of $IDLE_CONNS (failed $failed), RSS $before -> $after KiB, answer $code in ${secs}s, alive at the end ${alive:-0}"
}

# ---------------------------------------------------------------------------
# 1. Packages.

PACKAGES=(nginx uwsgi uwsgi-plugin-python3 gunicorn caddy php-fpm python3-django wrk nghttp2-client openssl curl)
missing=()
for pkg in "${PACKAGES[@]}"; do
	status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
	[[ $status == "install ok installed" ]] || missing+=("$pkg")
done
if ((${#missing[@]} > 0)); then
	log "installing: ${missing[*]}"
	command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install these by hand: ${missing[*]}"
	sudo=()
	((EUID == 0)) || sudo=(sudo)
	"${sudo[@]}" apt-get update
	"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
fi
# Debian's php-fpm names its binary after the PHP version (php-fpm8.2).
PHP_FPM=$(command -v php-fpm || compgen -G '/usr/sbin/php-fpm[0-9]*' | sort -V | tail -n 1 || true)
for cmd in nginx uwsgi gunicorn caddy "${PHP_FPM:-php-fpm}" wrk h2load openssl curl taskset setsid ss go "$PYTHON"; do
	command -v "$cmd" >/dev/null 2>&1 || die "$cmd not found"
done
(($(nproc) >= 2)) || die "need 2 CPUs (server on CPU $SERVER_CPU, wrk on CPU $CLIENT_CPU)"
CLK_TCK=$(getconf CLK_TCK)

# ---------------------------------------------------------------------------
# 2. Builds and app copies (so no server writes into the checkout).

log "building ${BENCH_PORTICO:+(taking portico from $BENCH_PORTICO) }portico and idleconns into $WORK"
PORTICO=$WORK/portico
IDLECONNS=$WORK/idleconns
if [[ -n ${BENCH_PORTICO:-} ]]; then
	cp "$BENCH_PORTICO" "$PORTICO"
else
	go build -o "$PORTICO" ./cmd/portico
fi
go build -o "$IDLECONNS" ./bench/idleconns

cp -a examples/hello "$APPS/hello"
cp -a bench/djangobench "$APPS/djangobench"
cp -a bench/apps "$APPS/sleepy"
cp -a bench/php "$APPS/php"
mkdir -p "$APPS/djangoproject"
(cd examples/djangoproject && tar --exclude=db.sqlite3 --exclude=staticfiles --exclude=__pycache__ -cf - .) |
	(cd "$APPS/djangoproject" && tar -xf -)
declare -A APP_ENVS=(
	[djangoproject]="DJANGO_DB=$APPS/djangoproject/db.sqlite3"
)

# The TLS scenarios' certificate, one for every stack: self-signed, ECDSA
# P-256 (the default of most ACME clients), for 127.0.0.1; and their static
# file, 1 KiB of random bytes (application/octet-stream: nobody compresses it)
# as in bench/static.
CERT=$WORK/tls/cert.pem
KEY=$WORK/tls/key.pem
mkdir -p "$WORK/tls"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=127.0.0.1 \
	-addext subjectAltName=IP:127.0.0.1 -keyout "$KEY" -out "$CERT" 2>"$LOGS/openssl.log" ||
	die "openssl could not make the certificate: $(cat "$LOGS/openssl.log")"
chmod 644 "$KEY" "$CERT"
WWW=$WORK/www
mkdir -p "$WWW/s"
head -c 1024 /dev/urandom >"$WWW/s/1k.bin"
chmod -R a+rX "$WWW"

selected() { # selected NAME FILTER: FILTER empty or NAME in it
	[[ -z $2 ]] && return 0
	[[ " ${2//,/ } " == *" $1 "* ]]
}

# ---------------------------------------------------------------------------
# 3. The runs.

CHECKS_FAILED=() # stacks whose answer was not what their scenario checks (check_response)
START_TIME=$(date -u '+%Y-%m-%d %H:%M UTC')
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
SECONDS=0
for entry in "${SCENARIOS[@]}"; do
	IFS='|' read -r SCENARIO APP MODULE URLPATH KIND TITLE <<<"$entry"
	selected "$SCENARIO" "$SCENARIO_FILTER" || continue
	case $KIND in
	http | proxy | https) conns=$CONNS ;;
	h2) conns=${H2_LOADS[$SCENARIO]} ;;
	overload) conns=$OVERLOAD_CONNS ;;
	idle) conns=$IDLE_CONNS ;;
	esac
	scheme=http TLS_LISTEN="" PORTICO_TLS=() CURL_TLS=()
	case $KIND in
	https) scheme=https TLS_LISTEN=ssl CURL_TLS=(--cacert "$CERT" --http1.1) ;;
	h2) scheme=https TLS_LISTEN="ssl http2" CURL_TLS=(--cacert "$CERT" --http2) ;;
	esac
	[[ $scheme == https ]] && PORTICO_TLS=(--tls-cert "$CERT" --tls-key "$KEY")
	stacks=()
	for STACK in ${SCENARIO_STACKS[$SCENARIO]}; do
		selected "$STACK" "$STACK_FILTER" && stacks+=("$STACK")
	done
	((${#stacks[@]} > 0)) || continue
	printf '%s\t%s\t%s\t%s\t%s\n' "$SCENARIO" "$KIND" "$conns" "${stacks[*]}" "$TITLE" >>"$RESULTS/scenarios.tsv"
	log "scenario $SCENARIO: $TITLE"
	read -r -a APP_ENV <<<"${APP_ENVS[$APP]:-}"
	if [[ $APP == djangoproject && ! -e $APPS/djangoproject/db.sqlite3 ]]; then
		(cd "$APPS/djangoproject" && env "${APP_ENV[@]}" "$PYTHON" manage.py migrate --noinput -v0)
	fi
	printf '\n### %s\n\n' "$SCENARIO" >>"$RESULTS/commands.md"
	: >"$RESULTS/commands-extra.md"
	for STACK in "${stacks[@]}"; do
		CUR=$SCENARIO-$STACK
		STACK_SIDS=()
		STACK_CMDS=()
		free_port
		log "$CUR on 127.0.0.1:$PORT"
		url=$scheme://127.0.0.1:$PORT$URLPATH
		"start_$STACK" "$APPS/$APP" "$MODULE" "$PORT" || true # a failed upstream shows in wait_answer
		if ! wait_answer "$url"; then
			printf '%s\t%s\t%s\n' "$SCENARIO" "$STACK" "did not answer 200 (log: $(tail -n 3 "$LOGS/$CUR-"*.log | tr '\n\t' '  ' | cut -c1-300))" >>"$RESULTS/failed.tsv"
			tail -n 20 "$LOGS/$CUR-"*.log >&2 || true
		elif ! check_response "$url"; then
			log "error: $CUR: $CHECK_REASON; not timed"
			printf '%s\t%s\t%s\n' "$SCENARIO" "$STACK" "$CHECK_REASON" >>"$RESULTS/failed.tsv"
			CHECKS_FAILED+=("$CUR: $CHECK_REASON")
		else
			case $KIND in
			idle) bench_idle "127.0.0.1:$PORT" ;;
			*) # shellcheck disable=SC2086
				bench_http "$url" $conns ;;
			esac
		fi
		# Stop in the reverse order of start (nginx before its upstream).
		for ((i = ${#STACK_SIDS[@]} - 1; i >= 0; i--)); do
			stop_sessions "${STACK_SIDS[$i]}"
		done
		{
			printf -- '- %s:\n\n  ```sh\n' "${STACK_LABEL[$STACK]}"
			for cmd in "${STACK_CMDS[@]}"; do printf '  %s\n' "$cmd"; done
			printf '  ```\n'
		} >>"$RESULTS/commands.md"
	done
	cat "$RESULTS/commands-extra.md" >>"$RESULTS/commands.md"
done
ELAPSED=$SECONDS

# ---------------------------------------------------------------------------
# 4. The report.

for s in "${!STACK_LABEL[@]}"; do printf '%s\t%s\n' "$s" "${STACK_LABEL[$s]}"; done >"$RESULTS/labels.tsv"

TABLES=$("$PYTHON" "$BENCH_DIR/report.py" "$RESULTS" --capacity $((WORKERS * 1000 / OVERLOAD_SLEEP_MS)) \
	--queue-timeout "$QUEUE_TIMEOUT" --wrk-timeout "$WRK_TIMEOUT")
printf '\n%s\n' "$TABLES"

if [[ $OUT != none ]]; then
	version_of() { "$@" 2>&1 | head -n 1 || true; }
	portico_rev=$(go version -m "$PORTICO" | awk -F'[\t=]' '$2 == "build" && $3 == "vcs.revision" { r = $4 } $2 == "build" && $3 == "vcs.modified" { m = $4 }
		END { if (r != "") printf "%s%s", substr(r, 1, 12), (m == "true" ? " with uncommitted changes" : "") }')
	{
		cat <<-EOF
			# Benchmarks

			Generated by \`./bench/run.sh\` on $START_TIME in $((ELAPSED / 60)) min $((ELAPSED % 60)) s; do not edit by hand.
			Absolute numbers drift on shared machines; the ratios, measured in one run, are what to compare.

			## Machine

			- CPUs: $(nproc) × $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
			- kernel: $(uname -sr); $(awk -F= '$1 == "PRETTY_NAME" { gsub(/"/, "", $2); print $2 }' /etc/os-release)
			- memory: $(awk '/^MemTotal:/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
			- load average before the run: $LOAD_BEFORE, after: $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine skews absolute numbers)

			## Versions

			- portico: $("$PORTICO" version | paste -sd " " -)${portico_rev:+ (commit $portico_rev)}
			- $(version_of nginx -v)
			- uWSGI $(version_of uwsgi --version), plugin python3 (uwsgi-plugin-python3 $(dpkg-query -W -f='${Version}' uwsgi-plugin-python3 2>/dev/null || echo '?'))
			- $(version_of gunicorn --version)
			- caddy $(version_of caddy version) (Debian's, in proxy-http)
			- $(version_of "$PHP_FPM" -v) (in proxy-php, opcache as Debian ships it)
			- $(version_of "$PYTHON" --version) ($PYTHON)
			- Django $("$PYTHON" -c 'import django; print(django.get_version())')
			- $(version_of wrk -v | cut -d' ' -f1-3)
			- h2load: $(version_of h2load --version) (static-h2, hello-h2); $(version_of openssl version) (the certificate; wrk's and nginx's TLS)

			## Settings

			- Servers pinned to CPU $SERVER_CPU (\`taskset -c $SERVER_CPU\`, nginx and its upstream together), wrk to CPU $CLIENT_CPU:
			  \`taskset -c $CLIENT_CPU wrk -t1 -cC -d${DURATION}s --timeout $WRK_TIMEOUT --latency URL\`, C in {${CONNS// /,}}, runs: $RUNS each, after a ${WARMUP} s warm-up at 64 connections.
			- Every app server: $WORKERS worker processes, 1 thread, logging off; nginx: 1 worker process, stock \`uwsgi_params\`, no access log.
			  uWSGI gets \`--listen 1024\` (its default backlog of 100 drops connections at 256 clients; gunicorn's is 2048, Go's and nginx's follow somaxconn / 511).
			- Python: $PYTHON (Debian's, with Django, gunicorn and the uWSGI plugin); DEBUG off; each Django scenario on a fresh copy of its project.
			- req/s: median of the runs (min–max); p50/p99: median of the runs' wrk latency percentiles;
			  server CPU: utime+stime of every process of the stack (from /proc, all sessions it started) over the run, per request;
			  srv CPU %: that CPU time over the run's duration (100% = CPU $SERVER_CPU saturated; below it the client is the limit);
			  wrk CPU %: wrk's own CPU time over the run (100% = wrk saturated its core);
			  others %: CPU time anything else used on CPUs $SERVER_CPU and $CLIENT_CPU during the run (from /proc/stat: user, system,
			  and steal, the time the hypervisor ran someone else on our virtual CPUs), in % of one CPU: other work on a shared machine;
			  rows with a high figure are suspect;
			  RSS: sum of VmRSS of the stack's processes after the runs at that connection count;
			  errors: non-2xx answers + wrk's connect, write and timeout errors; closes: wrk's read errors, which are the
			  server closing the connection after a response (uWSGI's --http-socket does so after every one; wrk reconnects).
			- Proxy scenarios: every stack starts its own copy of the upstream with the same settings, then the front, both pinned to CPU $SERVER_CPU;
			  CPU µs/req counts both, front µs/req the front alone (the upstream's share is the difference). nginx fronts use the
			  standard keep-alive setups (\`upstream { keepalive 64; }\`, \`proxy_http_version 1.1\`, \`Connection ""\`; \`keepalive $FPM_KEEPALIVE\` (0: none) and
			  \`fastcgi_keep_conn on\` toward php-fpm; uwsgi_pass has none), Caddy its defaults, portico its defaults (least_conn, buffering on).
			- Ratio columns: that portico stack's figure ÷ this row's, at the same connection count: req/s (higher is better for portico), then CPU per request (lower is better for portico).
			- Cache and compression (django-cache, django-gzip, issue 13): the Django stacks' settings; edge µs/req is the CPU of the stack's
			  portico or nginx processes alone, without the Django workers or uWSGI behind them; the compression cost is edge µs/req with
			  compression less without. Before the runs each stack answers once to the scenario's request (the table under each scenario);
			  a cached stack must answer \`X-Cache: HIT\` to a second request, or it is not timed and the run fails.
			  django-gzip's wrk runs send \`-H 'Accept-Encoding: gzip'\`.
			- TLS (static-https, static-h2, hello-https, hello-h2, issue 14): one self-signed ECDSA P-256 certificate for 127.0.0.1, made by the run,
			  for every stack; portico \`--tls-cert --tls-key\` (its defaults: TLS 1.2+, HTTP/2 and HTTP/1.1 by ALPN), nginx \`listen … ssl\` (\`ssl http2\`
			  in the h2 scenarios) with \`ssl_protocols TLSv1.2 TLSv1.3\` (1.22's default stops at TLS 1.2), its default ciphers and \`keepalive_requests 1000000\` (h2load does not reconnect, and
			  portico sets no limit). The static file: 1 KiB of random bytes, portico \`--static /s=DIR\` (1 worker of examples/hello, which run
			  needs), nginx \`root\` with \`sendfile on\`, \`tcp_nopush on\`, \`open_file_cache\` as in bench/static (TLS without kTLS: no sendfile).
			  The https scenarios run wrk on https:// URLs (HTTP/1.1: wrk offers no ALPN); the h2 scenarios run
			  \`taskset -c $CLIENT_CPU h2load -t1 -cC -mM -D $DURATION URL\` for each load C × M (\`static-h2\`: ${H2_LOADS[static-h2]// /, }; \`hello-h2\`: ${H2_LOADS[hello-h2]// /, }),
			  after a ${WARMUP} s warm-up at 64 × 10; h2load gives no percentiles, so their tables give the median of its mean and max time for request.
			  Before the runs each stack must answer the scenario's URL in the protocol its load generator speaks (curl, HTTP/1.1 or HTTP/2), the file whole.

		EOF
		printf '%s\n' "$TABLES"
		printf '\n## Commands\n\nThe exact commands of this run (%s is the temp dir; the apps are copies of examples/hello, examples/djangoproject, bench/djangobench, bench/apps). The load generator:\n\n' "\$TMP"
		# shellcheck disable=SC2016 # $TMP is meant literally
		printf '```sh\ntaskset -c %s wrk -t1 -c64 -d%ss --timeout %s URL                # warm-up\ntaskset -c %s wrk -t1 -cC -d%ss --timeout %s --latency URL      # each run\ntaskset -c %s wrk -t1 -c%s -d%ss --timeout %s --latency -s bench/status.lua URL   # overload\n$TMP/idleconns -addr 127.0.0.1:PORT -n %s -per-child 5000     # idle (built from bench/idleconns)\ntaskset -c %s h2load -t1 -c64 -m10 -D %s URL               # warm-up (static-h2, hello-h2)\ntaskset -c %s h2load -t1 -cC -mM -D %s URL                 # each run (static-h2, hello-h2)\n```\n' \
			"$CLIENT_CPU" "$WARMUP" "$WRK_TIMEOUT" "$CLIENT_CPU" "$DURATION" "$WRK_TIMEOUT" "$CLIENT_CPU" "$OVERLOAD_CONNS" "$DURATION" "$WRK_TIMEOUT" "$IDLE_CONNS" \
			"$CLIENT_CPU" "$WARMUP" "$CLIENT_CPU" "$DURATION"
		for s in "${!WRK_HEADER[@]}"; do
			printf '\n%s: every wrk run (warm-up included) adds `-H \047%s\047`.\n' "$s" "${WRK_HEADER[$s]}"
		done
		cat "$RESULTS/commands.md"
		# Static files have their own script (bench/static/run.sh); its latest
		# table is carried here so that BENCHMARKS.md holds every scenario.
		if [[ -f $REPO/bench/static/RESULTS.md ]]; then
			printf '\n## Static files (from bench/static/RESULTS.md, its own run)\n\n'
			sed -e 's/^#/##/' "$REPO/bench/static/RESULTS.md"
		fi
	} >"$WORK/report.md"
	# A run of some scenarios keeps the others' tables, targets and commands
	# from the report it replaces (bench/carry.py), each marked as carried.
	if [[ -n $SCENARIO_FILTER && -f $OUT ]]; then
		all=()
		for entry in "${SCENARIOS[@]}"; do all+=("${entry%%|*}"); done
		"$PYTHON" "$BENCH_DIR/carry.py" "$OUT" "$WORK/report.md" "${all[@]}"
	fi
	cp "$WORK/report.md" "$OUT"
	log "wrote $OUT"
fi
log "done in $((ELAPSED / 60)) min $((ELAPSED % 60)) s"
if ((${#CHECKS_FAILED[@]} > 0)); then
	for c in "${CHECKS_FAILED[@]}"; do log "check failed: $c"; done
	die "${#CHECKS_FAILED[@]} stack(s) failed their scenario's check and were not timed"
fi
