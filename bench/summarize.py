#!/usr/bin/env python3
"""Medians per scenario and broker from compare-rabbitmq.sh's results, and brook/RabbitMQ
ratios, as a Markdown table. Usage: summarize.py results.jsonl"""
import json
import statistics
import sys
from collections import defaultdict

rows = [json.loads(line) for line in open(sys.argv[1])]
by = defaultdict(lambda: defaultdict(list))
for r in rows:
    by[r["args"]][r["broker_name"]].append(r["result"])


def med(results, f):
    vals = [v for v in (f(x) for x in results) if v is not None]
    return statistics.median(vals) if vals else None


def fmt(v, unit):
    if v is None:
        return "-"
    if unit == "msg/s":
        return f"{v / 1e6:.2f} M" if v >= 1e6 else f"{v / 1e3:.0f} k"
    if unit == "MB/s":
        return f"{v:.0f}"
    if unit in ("µs",):
        return f"{v:.0f}"
    if unit == "MiB":
        return f"{v / 2**20:.1f}"
    return f"{v:.3f}"


metrics = [
    ("throughput", "msg/s", lambda x: x["msg_per_sec"], "higher"),
    ("throughput", "MB/s", lambda x: x["mb_per_sec"], "higher"),
    ("p50 latency", "µs", lambda x: (x.get("latency_us") or {}).get("p50"), "lower"),
    ("p99 latency", "µs", lambda x: (x.get("latency_us") or {}).get("p99"), "lower"),
    ("p99.9 latency", "µs", lambda x: (x.get("latency_us") or {}).get("p999"), "lower"),
    ("broker CPU per M msgs", "s", lambda x: x["broker_cpu_seconds"] / (x["messages"] / 1e6) if x.get("broker_cpu_seconds") is not None and x["messages"] else None, "lower"),
    ("broker peak RSS", "MiB", lambda x: x.get("broker_peak_rss_bytes"), "lower"),
]

print("| scenario | metric | RabbitMQ | brook | brook/RabbitMQ |")
print("|---|---|---|---|---|")
for args, brokers in by.items():
    r, b = brokers.get("rabbitmq", []), brokers.get("brook", [])
    for name, unit, f, better in metrics:
        rv, bv = med(r, f), med(b, f)
        if rv is None and bv is None:
            continue
        if name == "throughput" and unit == "MB/s" and "size 12" in args:
            continue
        ratio = f"{bv / rv:.2f}×" if rv and bv is not None else "-"
        print(f"| `{args}` | {name} ({unit}) | {fmt(rv, unit)} | {fmt(bv, unit)} | {ratio} |")
runs = max((len(v) for b in by.values() for v in b.values()), default=0)
print(f"\nMedians of {runs} run(s) per broker and scenario, run alternately.")
