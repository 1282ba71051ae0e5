#!/usr/bin/env bash
# bench/slowclients.sh: slow clients against `portico run` (issue 12).
#
#   ./bench/slowclients.sh
#
# Starts `portico run` on the hello app (examples/hello, 2 workers) on a free
# loopback port, then runs Debian's slowhttptest twice at once against it:
# slowloris (-H: headers sent a few bytes every few seconds, never ended) and
# slow POST (-B: a body announced and sent a few bytes at a time), with
# SLOW_HEADERS_CONNS and SLOW_BODY_CONNS connections; once they are open,
# bench/slowprobe sends plain GETs (a new connection each, every 50 ms) for
# SLOW_PROBE_SECS seconds. It prints the connections the server held at the
# peak (ss), the probes answered and their p50/p99, and exits 1 if a probe
# failed (not answered 200 within 5 s), or if the slow connections were not
# held. About 40 s in all.
#
# Environment (defaults in brackets):
#   SLOW_HEADERS_CONNS [8000]  slowloris connections
#   SLOW_BODY_CONNS [2000]     slow-POST connections
#   SLOW_PROBE_SECS [15]       how long the probe runs once they are open
#   SLOW_PORTICO []            a portico binary to use instead of building ./cmd/portico
#
# Every connection is on loopback. The open-file limit is raised to the hard
# limit (at most 20,000 here): each process (portico, each slowhttptest)
# holds its own share of the connections.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)
cd "$REPO"

if ! command -v go >/dev/null 2>&1 && [[ -x /usr/local/go/bin/go ]]; then
	export PATH="$PATH:/usr/local/go/bin"
fi

HEADERS_CONNS=${SLOW_HEADERS_CONNS:-8000}
BODY_CONNS=${SLOW_BODY_CONNS:-2000}
PROBE_SECS=${SLOW_PROBE_SECS:-15}

for prog in slowhttptest ss; do
	if ! command -v "$prog" >/dev/null 2>&1; then
		echo "slowclients: $prog not found (Debian packages slowhttptest, iproute2)" >&2
		exit 1
	fi
done

hard=$(ulimit -Hn)
if [[ $hard == unlimited || $hard -gt 20000 ]]; then
	hard=20000
fi
ulimit -n "$hard"
need=$((HEADERS_CONNS + BODY_CONNS + 1000))
if ((need > hard)); then
	echo "slowclients: $need open files needed, the limit is $hard" >&2
	exit 1
fi

TMP=$(mktemp -d)
PIDS=()
cleanup() {
	for pid in "${PIDS[@]}"; do
		kill -TERM -- "-$pid" 2>/dev/null || true
	done
	for pid in "${PIDS[@]}"; do
		for _ in $(seq 100); do
			kill -0 -- "-$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL -- "-$pid" 2>/dev/null || true
	done
	rm -rf "$TMP"
}
trap cleanup EXIT

PORTICO=${SLOW_PORTICO:-}
if [[ -z $PORTICO ]]; then
	go build -o "$TMP/portico" ./cmd/portico
	PORTICO=$TMP/portico
fi
go build -o "$TMP/slowprobe" ./bench/slowprobe

PORT=$(/usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
URL=http://127.0.0.1:$PORT/

# Each in a session of its own, so that cleanup stops it and its children.
spawn() {
	local log=$1
	shift
	setsid "$@" >"$log" 2>&1 &
	PIDS+=($!)
}

spawn "$TMP/portico.log" "$PORTICO" run --bind "127.0.0.1:$PORT" --workers 2 --threads 1 \
	--access-log off --python /usr/bin/python3 --chdir examples/hello app:application
for i in $(seq 200); do
	if /usr/bin/python3 -c "import urllib.request, sys; sys.exit(urllib.request.urlopen('$URL', timeout=1).status != 200)" 2>/dev/null; then
		break
	fi
	if ((i == 200)); then
		echo "slowclients: portico did not answer on $URL" >&2
		cat "$TMP/portico.log" >&2
		exit 1
	fi
	sleep 0.1
done

held() { ss -Htn state established "( sport = :$PORT )" | wc -l; }

# Slowloris: a header line of up to 24 random bytes every 5 s; slow POST:
# 8 KiB announced, up to 24 bytes every 5 s. Both stay under the server's
# 60 s header and body timeouts on purpose: the point is that the server
# holds them and still answers others, not that it cuts them.
length=$((PROBE_SECS + 25))
start=$(date +%s)
spawn "$TMP/slowloris.log" slowhttptest -H -c "$HEADERS_CONNS" -r 2000 -i 5 -x 24 -l "$length" -p 5 -u "$URL"
spawn "$TMP/slowpost.log" slowhttptest -B -c "$BODY_CONNS" -r 1000 -i 5 -x 24 -s 8192 -l "$length" -p 5 -u "$URL"

# Wait until the slow connections are open (or 20 s).
target=$((HEADERS_CONNS + BODY_CONNS))
peak=0
for _ in $(seq 40); do
	n=$(held)
	((n > peak)) && peak=$n
	((n >= target * 95 / 100)) && break
	sleep 0.5
done

"$TMP/slowprobe" -url "$URL" -duration "${PROBE_SECS}s" -every 50ms -timeout 5s >"$TMP/probe.out" 2>"$TMP/probe.err" &
probe=$!
while kill -0 "$probe" 2>/dev/null; do
	n=$(held)
	((n > peak)) && peak=$n
	sleep 1
done
probe_status=0
wait "$probe" || probe_status=$?
after=$(held)
elapsed=$(($(date +%s) - start))

read -r _ sent _ answered _ failed _ p50 _ p99 _ pmax <"$TMP/probe.out" || true
echo "slow clients against portico run (examples/hello, 2 workers) on $URL:"
echo "  slowloris connections: $HEADERS_CONNS, slow-POST connections: $BODY_CONNS (slowhttptest $(slowhttptest -h 2>&1 | sed -n 's/.*version //p' | head -1))"
echo "  connections held by the server at the peak: $peak; still held after the probe: $after"
echo "  probes (plain GET, new connection, every 50 ms, ${PROBE_SECS} s): ${sent:-0} sent, ${answered:-0} answered, ${failed:-?} failed; p50 ${p50:--}, p99 ${p99:--}, max ${pmax:--}"
echo "  elapsed: ${elapsed} s"
if ((probe_status != 0)); then
	echo "slowclients: FAIL: a probe was not answered" >&2
	head -20 "$TMP/probe.err" >&2
	exit 1
fi
if ((peak < target * 9 / 10)); then
	echo "slowclients: FAIL: the server held $peak connections at the peak, want at least 90% of $target" >&2
	tail -5 "$TMP/slowloris.log" "$TMP/slowpost.log" >&2
	exit 1
fi
echo "slowclients: ok"
