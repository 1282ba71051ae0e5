#!/usr/bin/env python3
"""Markdown tables from the raw results bench/run.sh collects (stdlib only).

    report.py RESULTS_DIR [--capacity 200] [--queue-timeout 1s] [--wrk-timeout 10s]

RESULTS_DIR holds tab-separated files written by run.sh:

  scenarios.tsv  name, kind (http|proxy|https|h2|overload|idle), connection counts
                 (kind h2: h2load loads, CONNSxSTREAMS), stacks, title
  labels.tsv     stack, label
  runs.tsv       scenario, stack, conns, run, requests, seconds, req/s, p50 ms, p99 ms
                 (kind h2: h2load's mean and max time for request, it gives no percentiles),
                 non-2xx, connect+write+timeout errors, read errors, timeouts, status counts (code:n,...),
                 server CPU s, wrk CPU s, CPU s of everything else on the two CPUs,
                 CPU s of the stack's front (its last session; proxy scenarios),
                 CPU s of the stack's edge (its portico and nginx processes, without
                 the app servers behind them; django-cache, django-gzip)
  rss.tsv        scenario, stack, conns, RSS KiB after the runs
  failed.tsv     scenario, stack, reason
  responses.tsv  scenario, stack, status, body bytes, Content-Length, Content-Encoding, X-Cache
                 (one answer to the scenario's request, before timing; django-cache, django-gzip)
  tls.tsv        scenario, stack, the TLS version and cipher curl agreed on (HTTPS and HTTP/2 scenarios)
  idle.tsv       stack, asked, established, failed, seconds to open, RSS KiB before, RSS KiB holding,
                 held (ss), answer code, answer seconds, alive after the hold, kernel slab growth KiB

It prints a "Results" section (one table per scenario, with the ratio of each
portico stack to every other stack) and a "Targets" section (the targets of
issue 3, of issue 10 for the proxy scenarios, of issue 13 for the cache
and compression ones and of issue 14 for HTTPS and HTTP/2, met or missed).
"""

import argparse
import os
import statistics
import sys
from collections import defaultdict


def read_tsv(path):
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n").split("\t") for line in f if line.strip()]


def num(s):
    try:
        return float(s)
    except (TypeError, ValueError):
        return None


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(v, digits=0, suffix=""):
    if v is None:
        return "—"
    return f"{v:,.{digits}f}{suffix}"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def conn_key(s):
    """A connection count (wrk), or an h2load load "CONNSxSTREAMS" kept as text."""
    return int(s) if s.isdigit() else s


def conn_text(c):
    """How a connection count or an h2load load reads in a table."""
    if isinstance(c, str) and "x" in c:
        conns, streams = c.split("x", 1)
        return f"{conns} × {streams} stream{'' if streams == '1' else 's'}"
    return str(c)


def conn_label(c):
    """A connection count or an h2load load, in a target's scenario cell."""
    if isinstance(c, str) and "x" in c:
        conns, streams = c.split("x", 1)
        return f"{conns} conns × {streams} stream{'' if streams == '1' else 's'}"
    return f"{c} conns"


def fmt_ratio(r):
    return "—" if r is None else f"{r:.2f}×"


class Stat:
    """The figures of one stack at one connection count, over its runs."""

    def __init__(self, runs, rss_kib):
        self.runs = runs
        rps = [num(r["rps"]) for r in runs]
        self.rps = median(rps)
        self.rps_min = min((v for v in rps if v is not None), default=None)
        self.rps_max = max((v for v in rps if v is not None), default=None)
        self.p50 = median(num(r["p50"]) for r in runs)
        self.p99 = median(num(r["p99"]) for r in runs)
        per_req, front_per_req, edge_per_req = [], [], []
        srv, wrk, others = [], [], []
        for r in runs:
            req, secs, cpu = num(r["requests"]), num(r["secs"]), num(r["cpu"])
            if req and cpu is not None:
                per_req.append(cpu / req * 1e6)
            if req and num(r.get("front_cpu")) is not None:
                front_per_req.append(num(r["front_cpu"]) / req * 1e6)
            if req and num(r.get("edge_cpu")) is not None:
                edge_per_req.append(num(r["edge_cpu"]) / req * 1e6)
            if secs and cpu is not None:
                srv.append(cpu / secs * 100)
            if secs and num(r["wrk_cpu"]) is not None:
                wrk.append(num(r["wrk_cpu"]) / secs * 100)
            if secs and num(r.get("others")) is not None:
                others.append(num(r["others"]) / secs * 100)
        self.cpu_us = median(per_req)
        self.front_us = median(front_per_req)
        self.edge_us = median(edge_per_req)
        self.srv_pct = median(srv)
        self.wrk_pct = median(wrk)
        self.others_pct = median(others)
        self.errors = sum(int(num(r["non2xx"]) or 0) + int(num(r["sockerr"]) or 0) for r in runs)
        self.closes = sum(int(num(r["readerr"]) or 0) for r in runs)
        self.timeouts = sum(int(num(r["timeouts"]) or 0) for r in runs)
        self.rss_mib = rss_kib / 1024 if rss_kib is not None else None
        # Overload: status mix and goodput.
        self.requests = sum(int(num(r["requests"]) or 0) for r in runs)
        self.statuses = defaultdict(int)
        for r in runs:
            if r["statuses"] not in ("", "-"):
                for item in r["statuses"].split(","):
                    code, n = item.split(":")
                    self.statuses[code] += int(n)
        ok = [
            (sum(int(n) for c, n in (i.split(":") for i in r["statuses"].split(",")) if c.startswith("2")) / num(r["secs"]))
            for r in runs
            if r["statuses"] not in ("", "-") and num(r["secs"])
        ]
        self.ok_rps = median(ok)


RUN_FIELDS = [
    "scenario", "stack", "conns", "run", "requests", "secs", "rps", "p50", "p99",
    "non2xx", "sockerr", "readerr", "timeouts", "statuses", "cpu", "wrk_cpu", "others", "front_cpu",
    "edge_cpu",
]


def load(results):
    scenarios = read_tsv(os.path.join(results, "scenarios.tsv"))
    labels = dict((row[0], row[1]) for row in read_tsv(os.path.join(results, "labels.tsv")))
    runs = defaultdict(list)
    for row in read_tsv(os.path.join(results, "runs.tsv")):
        r = dict(zip(RUN_FIELDS, row))
        runs[(r["scenario"], r["stack"], conn_key(r["conns"]))].append(r)
    rss = {(row[0], row[1], conn_key(row[2])): num(row[3]) for row in read_tsv(os.path.join(results, "rss.tsv"))}
    failed = {(row[0], row[1]): row[2] for row in read_tsv(os.path.join(results, "failed.tsv"))}
    idle = {row[0]: row for row in read_tsv(os.path.join(results, "idle.tsv"))}
    responses = {(row[0], row[1]): row[2:] for row in read_tsv(os.path.join(results, "responses.tsv"))}
    tls = {(row[0], row[1]): row[2] for row in read_tsv(os.path.join(results, "tls.tsv"))}
    stats = {key: Stat(rs, rss.get(key)) for key, rs in runs.items()}
    return scenarios, labels, stats, failed, idle, responses, tls


def is_portico(stack):
    return "portico" in stack


# Rows whose runs shared the CPUs with more than this much other work (in % of
# one CPU) are flagged: their absolute figures, and ratios to them, are suspect.
BUSY_OTHERS_PCT = 25


# Scenarios whose tables add the edge's CPU per request: that of the portico
# and nginx processes alone, without the app servers behind them (portico's
# Python workers, uWSGI), which is where caching and compression cost.
EDGE_SCENARIOS = ("django-cache", "django-gzip")


def http_table(out, name, conns, stacks, labels, stats, failed, front=False, edge=False, h2=False):
    """One row per stack and connection count; front adds the front's own
    CPU per request (proxy scenarios: the stack's CPU less its upstream's),
    edge the CPU per request of its portico and nginx processes; h2 (h2load's
    runs) names the latency columns after what h2load gives, mean and max."""
    porticos = [s for s in stacks if is_portico(s)]
    latency = ["mean ms", "max ms"] if h2 else ["p50 ms", "p99 ms"]
    head = ["stack", "conns × streams" if h2 else "conns", "req/s", "min–max"] + latency + ["CPU µs/req"]
    head += ["front µs/req"] if front else []
    head += ["edge µs/req"] if edge else []
    head += ["srv CPU %", "wrk CPU %", "others %", "RSS MiB", "errors", "closes"]
    what = "req/s, CPU/req, front CPU/req" if front else "req/s, CPU/req, edge CPU/req" if edge else "req/s, CPU/req"
    head += [f"{labels.get(p, p)} ÷ ({what})" for p in porticos]
    out.append("| " + " | ".join(head) + " |")
    out.append("|" + "|".join(["---"] * 2 + ["--:"] * (len(head) - 2)) + "|")
    for c in conns:
        for s in stacks:
            label = labels.get(s, s)
            st = stats.get((name, s, c))
            if st is None:
                cells = [label, conn_text(c)] + ["—"] * (len(head) - 2)
                cells[head.index("errors")] = "failed" if (name, s) in failed else "not run"
                out.append("| " + " | ".join(cells) + " |")
                continue
            flag = " ⚠" if st.others_pct is not None and st.others_pct > BUSY_OTHERS_PCT else ""
            row = [label + flag, conn_text(c), fmt(st.rps), f"{fmt(st.rps_min)}–{fmt(st.rps_max)}", fmt(st.p50, 2), fmt(st.p99, 2), fmt(st.cpu_us, 1)]
            row += [fmt(st.front_us, 1)] if front else []
            row += [fmt(st.edge_us, 1)] if edge else []
            row += [fmt(st.srv_pct), fmt(st.wrk_pct), fmt(st.others_pct), fmt(st.rss_mib, 1), str(st.errors), str(st.closes)]
            for p in porticos:
                pst = stats.get((name, p, c))
                if p == s or pst is None:
                    row.append("—")
                    continue
                cell = f"{fmt_ratio(ratio(pst.rps, st.rps))} / {fmt_ratio(ratio(pst.cpu_us, st.cpu_us))}"
                if front:
                    cell += f" / {fmt_ratio(ratio(pst.front_us, st.front_us))}"
                if edge:
                    cell += f" / {fmt_ratio(ratio(pst.edge_us, st.edge_us))}"
                row.append(cell)
            out.append("| " + " | ".join(row) + " |")


def responses_table(out, name, stacks, labels, responses):
    """What each stack answered to the scenario's request once, before timing."""
    rows = [(s, responses[(name, s)]) for s in stacks if (name, s) in responses]
    if not rows:
        return
    out.append("")
    out.append("One answer of each stack to the same request, before the runs (curl, with the scenario's request headers):")
    out.append("")
    out.append("| stack | status | Content-Encoding | X-Cache | bytes per response (body) | Content-Length |")
    out.append("|---|--:|---|---|--:|--:|")
    for s, (code, body, length, encoding, xcache) in rows:
        out.append(f"| {labels.get(s, s)} | {code} | {encoding} | {xcache} | {fmt(num(body))} | {length} |")


# django-gzip: (who, the stack that compresses, the same stack without compression).
COMPRESSION_PAIRS = (("portico", "portico", "portico-nocompress"), ("nginx", "nginx-uwsgi-gzip", "nginx-uwsgi"))


def compression_costs(stats, conns):
    """Per connection count and pair: CPU µs/req with compression less
    without, of the edge (portico's or nginx's processes alone) and of the
    whole stack (with the Django workers, whose milliseconds make it noisy)."""
    costs = []
    for c in conns:
        for who, on, off in COMPRESSION_PAIRS:
            a, b = stats.get(("django-gzip", on, c)), stats.get(("django-gzip", off, c))
            if a is None or b is None:
                continue
            edge = a.edge_us - b.edge_us if a.edge_us is not None and b.edge_us is not None else None
            stack = a.cpu_us - b.cpu_us if a.cpu_us is not None and b.cpu_us is not None else None
            costs.append((c, who, edge, stack))
    return costs


def compression_summary(out, conns, stats, responses):
    costs = compression_costs(stats, conns)
    if not costs:
        return
    out.append("")
    out.append("**Compression cost per request** (CPU µs/req with compression less without, the edge's: portico's or "
               "nginx's processes alone; in brackets the whole stack's, Django workers included, which their milliseconds "
               "per request make noisy):")
    out.append("")
    for c, who, edge, stack in costs:
        out.append(f"- {c} conns, {who}: {fmt(edge, 1, ' µs')} ({fmt(stack, 1, ' µs')})")
    sizes = {s: num(r[1]) for (scn, s), r in responses.items() if scn == "django-gzip"}
    plain = sizes.get("portico-nocompress") or sizes.get("nginx-uwsgi")
    parts = []
    for who, on, _ in COMPRESSION_PAIRS:
        if sizes.get(on) is not None:
            share = f" ({100 * sizes[on] / plain:.1f} % of {fmt(plain)})" if plain else ""
            parts.append(f"{who} {fmt(sizes[on])} bytes{share}")
    if parts:
        out.append(f"- bytes per response: {', '.join(parts)}")


def overload_table(out, name, conns, stacks, labels, stats, failed, capacity):
    head = ["stack", "conns", "req/s (all answers)", "2xx/s", "2xx ÷ capacity", "503 share", "other non-2xx",
            "p50 ms", "p99 ms", "wrk timeouts", "socket errors", "CPU µs/req", "RSS MiB"]
    out.append("| " + " | ".join(head) + " |")
    out.append("|" + "|".join(["---"] * 2 + ["--:"] * (len(head) - 2)) + "|")
    for c in conns:
        for s in stacks:
            label = labels.get(s, s)
            st = stats.get((name, s, c))
            if st is None:
                out.append(f"| {label} | {c} | " + " | ".join(["—"] * (len(head) - 2)) + " |")
                continue
            total = sum(st.statuses.values())
            n503 = st.statuses.get("503", 0)
            other = sum(n for code, n in st.statuses.items() if not code.startswith("2") and code != "503")
            sockerr = sum(int(num(r["sockerr"]) or 0) + int(num(r["readerr"]) or 0) for r in st.runs)
            out.append("| " + " | ".join([
                label, str(c), fmt(st.rps), fmt(st.ok_rps), fmt_ratio(ratio(st.ok_rps, capacity)),
                fmt(100 * n503 / total if total else None, 1, " %"), str(other),
                fmt(st.p50, 1), fmt(st.p99, 1), str(st.timeouts), str(sockerr), fmt(st.cpu_us, 1), fmt(st.rss_mib, 1),
            ]) + " |")


IDLE_FIELDS = ["stack", "asked", "established", "failed", "open_s", "before", "after", "held", "code", "answer_s", "alive", "slab"]


def idle_rows(idle):
    rows = {}
    for stack, row in idle.items():
        r = dict(zip(IDLE_FIELDS, row))
        est = int(num(r["established"]) or 0)
        before, after = num(r["before"]), num(r["after"])
        r["kib_per_conn"] = (after - before) / est if est and before is not None and after is not None else None
        # Both ends of every connection are sockets on this machine.
        r["slab_per_socket"] = num(r["slab"]) / (2 * est) if est and num(r["slab"]) is not None else None
        rows[stack] = r
    return rows


def idle_table(out, stacks, labels, idle):
    rows = idle_rows(idle)
    head = ["stack", "asked", "established", "held (ss)", "opened in s", "RSS before MiB", "RSS holding MiB",
            "KiB RSS / connection", "answer while holding", "still open at the end", "kernel slab KiB / socket"]
    out.append("| " + " | ".join(head) + " |")
    out.append("|" + "|".join(["---"] + ["--:"] * (len(head) - 1)) + "|")
    for s in stacks:
        r = rows.get(s)
        label = labels.get(s, s)
        if r is None:
            out.append(f"| {label} | " + " | ".join(["—"] * (len(head) - 1)) + " |")
            continue
        answer = f"{r['code']} in {1000 * (num(r['answer_s']) or 0):.0f} ms"
        out.append("| " + " | ".join([
            label, fmt(num(r["asked"])), fmt(num(r["established"])), fmt(num(r["held"])), r["open_s"],
            fmt(num(r["before"]) / 1024, 1), fmt(num(r["after"]) / 1024, 1), fmt(r["kib_per_conn"], 2),
            answer, fmt(num(r["alive"])), fmt(r["slab_per_socket"], 2),
        ]) + " |")
    p = rows.get("portico")
    if p and p["kib_per_conn"] is not None:
        user = p["kib_per_conn"]
        kern = p["slab_per_socket"] or 4.5
        total_gib = 1e6 * (user + kern) / 1024 / 1024
        out.append("")
        out.append(
            "**1,000,000 idle connections, on paper** (from the portico row): "
            f"{user:.2f} KiB of portico RSS each → {1e6 * user / 1024 / 1024:.1f} GiB, plus ≈ {kern:.1f} KiB of kernel "
            f"socket memory each (measured here as slab growth per socket) → {1e6 * kern / 1024 / 1024:.1f} GiB; "
            f"≈ {total_gib:.1f} GiB in all on the server. Beyond memory it takes: RLIMIT_NOFILE ≥ 1,000,100 for "
            "portico (the hard limit here is 20,000 and cannot be raised from inside; fs.nr_open must allow it, default "
            "1,048,576) and fs.file-max above that; clients from many addresses, since one client address reaches one "
            "server address:port through at most the ephemeral port range (32768–60999 here, 28,232 ports): ≥ 36 "
            "client addresses, or ≥ 16 with ip_local_port_range 1024–65535, or several listening ports; "
            "net.core.somaxconn and the accept backlog for the connection rate; and conntrack (nf_conntrack_max) "
            "sized for 1,000,000 entries if the firewall tracks connections."
        )


def targets(out, scenarios, labels, stats, idle, responses, capacity, queue_timeout_ms):
    """The targets of issues 3, 10, 13 and 14, each met or missed, at every connection count measured."""
    out.append("| scenario | target | measured | met |")
    out.append("|---|---|---|---|")
    names = {s[0] for s in scenarios}
    conns_of = {s[0]: [conn_key(c) for c in s[2].split()] for s in scenarios}

    def rps_target(scn, num_stack, den_stack, minimum, text):
        for c in conns_of.get(scn, []):
            a, b = stats.get((scn, num_stack, c)), stats.get((scn, den_stack, c))
            if a is None or b is None:
                continue
            r = ratio(a.rps, b.rps)
            cpu = ratio(a.cpu_us, b.cpu_us)
            met = "—" if minimum is None else ("yes" if r is not None and r >= minimum else "no")
            out.append(f"| {scn} ({conn_label(c)}) | {text} | {fmt_ratio(r)} req/s, {fmt_ratio(cpu)} CPU/req | {met} |")

    if "hello" in names:
        rps_target("hello", "portico", "nginx-uwsgi", 1.2, "portico ≥ 1.2× nginx → uWSGI")
        rps_target("hello", "portico", "gunicorn-sync", 3.0, "portico ≥ 3× gunicorn sync")
        rps_target("hello", "portico", "gunicorn-gthread", 3.0, "portico ≥ 3× gunicorn gthread")
        rps_target("hello", "portico", "uwsgi", None, "close the gap to uWSGI --http-socket (no figure set)")
        rps_target("hello", "nginx-portico", "nginx-uwsgi", 1.0, "nginx → portico ≥ 1.0× nginx → uWSGI")
    if "django-json" in names:
        rps_target("django-json", "portico", "uwsgi", 1.0, "portico ≥ 1.0× uWSGI")
    if "django-template" in names:
        for c in conns_of["django-template"]:
            p = stats.get(("django-template", "portico", c))
            others = [(s, st) for (scn, s, cc), st in stats.items() if scn == "django-template" and cc == c and s != "portico" and st.rps]
            if p is None or not others:
                continue
            best_stack, best = max(others, key=lambda x: x[1].rps)
            r = ratio(p.rps, best.rps)
            met = "yes" if r is not None and r >= 0.97 and p.p99 is not None and best.p99 is not None and p.p99 <= best.p99 else "no"
            out.append(
                f"| django-template ({c} conns) | portico within 3% of the best ({labels.get(best_stack, best_stack)}), p99 no worse | "
                f"{fmt_ratio(r)} req/s; p99 {fmt(p.p99, 1)} ms vs {fmt(best.p99, 1)} ms | {met} |"
            )
    if "overload" in names:
        for c in conns_of["overload"]:
            p = stats.get(("overload", "portico", c))
            if p is None:
                continue
            total = sum(p.statuses.values())
            share = 100 * p.statuses.get("503", 0) / total if total else 0
            bounded = p.p99 is not None and p.p99 <= queue_timeout_ms * 1.1 + 50
            out.append(f"| overload ({c} conns) | bounded p99 (queue timeout {queue_timeout_ms:.0f} ms) | p99 {fmt(p.p99, 0)} ms | {'yes' if bounded else 'no'} |")
            out.append(f"| overload ({c} conns) | 503s instead of timeouts | {share:.1f} % 503, {p.timeouts} wrk timeouts | {'yes' if p.timeouts == 0 and share > 0 else 'no'} |")
            r = ratio(p.ok_rps, capacity)
            out.append(f"| overload ({c} conns) | throughput stays at capacity ({capacity:.0f} req/s) | {fmt(p.ok_rps)} 2xx/s = {fmt_ratio(r)} | {'yes' if r is not None and r >= 0.9 else 'no'} |")
    if "idle" in names:
        r = idle_rows(idle).get("portico")
        if r is not None:
            held = int(num(r["held"]) or 0)
            asked = int(num(r["asked"]) or 0)
            out.append(f"| idle | hold {asked:,} while serving | {held:,} held, answer {r['code']} | {'yes' if held >= asked and r['code'] == '200' else 'no'} |")
            k = r["kib_per_conn"]
            out.append(f"| idle | ≤ 2 KiB of RSS per connection | {fmt(k, 2)} KiB | {'yes' if k is not None and k <= 2 else 'no'} |")

    # Issue 10: the proxy at least as fast as nginx in front of the same
    # upstream, p99 no worse; CPU per request (the whole stack's and the
    # front's own) reported, with no figure set.
    def proxy_target(scn, num_stack, den_stack, text, minimum=1.0):
        for c in conns_of.get(scn, []):
            a, b = stats.get((scn, num_stack, c)), stats.get((scn, den_stack, c))
            if a is None or b is None:
                continue
            r = ratio(a.rps, b.rps)
            measured = (f"{fmt_ratio(r)} req/s; p99 {fmt(a.p99, 2)} ms vs {fmt(b.p99, 2)} ms; "
                        f"{fmt_ratio(ratio(a.cpu_us, b.cpu_us))} CPU/req, {fmt_ratio(ratio(a.front_us, b.front_us))} front CPU/req")
            if minimum is None:
                met = "—"
            else:
                ok = r is not None and r >= minimum and a.p99 is not None and b.p99 is not None and a.p99 <= b.p99
                met = "yes" if ok else "no"
            out.append(f"| {scn} ({c} conns) | {text} | {measured} | {met} |")

    if "proxy-http" in names:
        proxy_target("proxy-http", "portico-http", "nginx-http", "portico ≥ 1.0× nginx proxy_pass (keepalive 64), p99 no worse")
        proxy_target("proxy-http", "portico-http", "caddy-http", "portico vs Caddy reverse_proxy (no figure set)", None)
    if "proxy-uwsgi" in names:
        proxy_target("proxy-uwsgi", "portico-uwsgi", "nginx-uwsgi-tcp", "portico ≥ 1.0× nginx uwsgi_pass, p99 no worse")
    if "proxy-php" in names:
        proxy_target("proxy-php", "portico-php", "nginx-php", "portico ≥ 1.0× nginx fastcgi_pass (keepalive 8), p99 no worse")

    # Issue 13: the cache's hits at least as fast as nginx's uwsgi_cache; the
    # cost of compressing the page next to nginx's gzip on, no figure set.
    if "django-cache" in names:
        rps_target("django-cache", "portico-cache", "nginx-uwsgi-cache", 1.0, "portico --cache ≥ 1.0× nginx uwsgi_cache (cache hits)")
        rps_target("django-cache", "portico-cache", "portico", None, "portico --cache vs the same without cache (no figure set)")
    if "django-gzip" in names:
        sizes = {s: r[1] for (scn, s), r in responses.items() if scn == "django-gzip"}
        for c, who, edge, stack in compression_costs(stats, conns_of["django-gzip"]):
            on = dict((w, o) for w, o, _ in COMPRESSION_PAIRS)[who]
            out.append(f"| django-gzip ({c} conns) | compression cost per request, {who} (no figure set) | "
                       f"{fmt(edge, 1, ' µs')} edge CPU/req ({fmt(stack, 1, ' µs')} whole stack), "
                       f"{fmt(num(sizes.get(on)))} bytes per response | — |")
        rps_target("django-gzip", "portico", "nginx-uwsgi-gzip", None, "portico compressing vs nginx gzip on (no figure set)")

    # Issue 14: static files over HTTPS and HTTP/2 at least as fast as nginx
    # with ssl (and http2) on the same certificate; the hello app over TLS is
    # reported next to nginx → uWSGI with no figure set (the plain hello
    # scenario carries issue 3's ≥ 1.2×).
    if "static-https" in names:
        rps_target("static-https", "portico-static", "nginx-file", 1.0, "portico ≥ 1.0× nginx ssl")
    if "static-h2" in names:
        rps_target("static-h2", "portico-static", "nginx-file", 1.0, "portico ≥ 1.0× nginx ssl http2")
    if "hello-https" in names:
        rps_target("hello-https", "portico", "nginx-uwsgi", None, "portico vs nginx ssl → uWSGI (no figure set)")
    if "hello-h2" in names:
        rps_target("hello-h2", "portico", "nginx-uwsgi", None, "portico vs nginx ssl http2 → uWSGI (no figure set)")


def duration_ms(s):
    s = s.strip()
    for unit, mult in (("ms", 1), ("s", 1000), ("m", 60000)):
        if s.endswith(unit):
            return float(s[: -len(unit)]) * mult
    return float(s) * 1000


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results")
    ap.add_argument("--capacity", type=float, default=200, help="overload scenario capacity, req/s")
    ap.add_argument("--queue-timeout", default="1s", help="portico --queue-timeout in the overload scenario")
    ap.add_argument("--wrk-timeout", default="10s", help="wrk --timeout of the runs")
    args = ap.parse_args(argv)

    scenarios, labels, stats, failed, idle, responses, tls = load(args.results)
    out = ["## Results", ""]
    for name, kind, conns, stacks, title in scenarios:
        stacks = stacks.split()
        conns = [conn_key(c) for c in conns.split()]
        out.append(f"### {name}: {title}")
        out.append("")
        if kind in ("http", "proxy", "https", "h2"):
            http_table(out, name, conns, stacks, labels, stats, failed, front=kind == "proxy", edge=name in EDGE_SCENARIOS,
                       h2=kind == "h2")
            responses_table(out, name, stacks, labels, responses)
            if name == "django-gzip":
                compression_summary(out, conns, stats, responses)
            agreed = [f"{labels.get(s, s)} {tls[(name, s)]}" for s in stacks if (name, s) in tls]
            if agreed:
                out.append("")
                out.append("TLS agreed with curl (OpenSSL, as wrk; h2load offers TLS 1.3's AES-128-GCM first): " + "; ".join(agreed) + ".")
            if any(st.others_pct is not None and st.others_pct > BUSY_OTHERS_PCT
                   for (scn, _, _), st in stats.items() if scn == name):
                out.append("")
                out.append(f"⚠: other work used more than {BUSY_OTHERS_PCT}% of a CPU during these runs (others %); "
                           "their figures are less reliable.")
        elif kind == "overload":
            out.append(f"Capacity: {args.capacity:.0f} req/s. portico answers 503 past its queue timeout ({args.queue_timeout}); "
                       f"gunicorn has no bound, so the wait grows with the number of clients (wrk's timeout: {args.wrk_timeout}).")
            out.append("")
            overload_table(out, name, conns, stacks, labels, stats, failed, args.capacity)
        elif kind == "idle":
            idle_table(out, stacks, labels, idle)
        for s in stacks:
            if (name, s) in failed:
                out.append("")
                out.append(f"- {labels.get(s, s)} failed: {failed[(name, s)]}")
        out.append("")
    out.append("## Targets (issues 3, 10, 13 and 14)")
    out.append("")
    targets(out, scenarios, labels, stats, idle, responses, args.capacity, duration_ms(args.queue_timeout))
    print("\n".join(out))


if __name__ == "__main__":
    main(sys.argv[1:])
