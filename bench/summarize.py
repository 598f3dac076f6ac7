#!/usr/bin/env python3
"""Medians per scenario and broker from compare-rabbitmq.sh's (or compare-builds.sh's) results,
and the ratios of the two, as a Markdown table.

Usage: summarize.py results.jsonl [BASE OTHER]   (default: rabbitmq brook, with issue #6's
targets; any other pair, e.g. `before after`, gets the table only)"""
import json
import statistics
import sys
from collections import defaultdict

rows = [json.loads(line) for line in open(sys.argv[1])]
base, other = (sys.argv[2], sys.argv[3]) if len(sys.argv) > 3 else ("rabbitmq", "brook")
labels = {"rabbitmq": "RabbitMQ"}
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

B, O = labels.get(base, base), labels.get(other, other)
print(f"| scenario | metric | {B} | {O} | {O}/{B} |")
print("|---|---|---|---|---|")
for args, brokers in by.items():
    r, b = brokers.get(base, []), brokers.get(other, [])
    for name, unit, f, better in metrics:
        rv, bv = med(r, f), med(b, f)
        if not rv and not bv:
            continue
        if name == "throughput" and unit == "MB/s" and ("size 12" in args or not rv or rv < 1):
            continue
        ratio = f"{bv / rv:.2f}×" if rv and bv is not None else "-"
        print(f"| `{args}` | {name} ({unit}) | {fmt(rv, unit)} | {fmt(bv, unit)} | {ratio} |")
    # What a scenario measures beyond messages (connections, streams): every other number.
    known = {"messages", "message_size", "seconds", "msg_per_sec", "mb_per_sec",
             "broker_cpu_seconds", "broker_peak_rss_bytes", "errors", "time_to_first_ms"}
    extra = [k for x in r + b for k, v in x.items()
             if k not in known and isinstance(v, (int, float)) and not isinstance(v, bool)]
    if any(x.get("messages") == 0 for x in r + b):
        extra.insert(0, "broker_cpu_seconds")
    for key in dict.fromkeys(extra):
        rv, bv = med(r, lambda x: x.get(key)), med(b, lambda x: x.get(key))
        ratio = f"{bv / rv:.2f}×" if rv and bv is not None else "-"
        show = lambda v: "-" if v is None else (f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}")
        print(f"| `{args}` | {key.replace('_', ' ')} | {show(rv)} | {show(bv)} | {ratio} |")
runs = max((len(v) for b in by.values() for v in b.values()), default=0)
print(f"\nMedians of {runs} run(s) per broker and scenario, run alternately.")
if (base, other) != ("rabbitmq", "brook") or not any(a.startswith("publish --messages 2000000") for a in by):
    sys.exit(0)  # issue #6's targets apply to the default scenarios only


def pick(prefix, broker):
    for args, brokers in by.items():
        if args.startswith(prefix):
            return brokers.get(broker, [])
    return []


def ratio(prefix, f):
    r, b = med(pick(prefix, "rabbitmq"), f), med(pick(prefix, "brook"), f)
    return (b / r) if r and b is not None else None


def cpu_per_million(broker):
    cpu = msgs = 0.0
    for prefix in ("publish --messages 2000000", "consume --messages 2000000"):
        c = med(pick(prefix, broker), lambda x: x.get("broker_cpu_seconds"))
        m = med(pick(prefix, broker), lambda x: x["messages"])
        if c is None or not m:
            return None
        cpu, msgs = cpu + c, msgs + m
    return cpu / (msgs / 1e6)


def peak_rss(broker):
    vals = [r["result"].get("broker_peak_rss_bytes") or 0 for r in rows if r["broker_name"] == broker]
    return max(vals) if vals else None


def check(name, value, target, ok):
    shown = "-" if value is None else f"{value:.3g}"
    verdict = "-" if value is None else ("met" if ok(value) else "NOT met")
    print(f"| {name} | {shown} | {target} | {verdict} |")


p99 = lambda x: (x.get("latency_us") or {}).get("p99")
rate = lambda x: x["msg_per_sec"]
mbs = lambda x: x["mb_per_sec"]
print("\n| target (issue #6) | measured | wanted | |")
print("|---|---|---|---|")
check("publish 12 B, throughput brook/RabbitMQ", ratio("publish --messages 2000000", rate), "≥ 3", lambda v: v >= 3)
check("publish 12 B, p99 confirm latency brook/RabbitMQ", ratio("publish --messages 2000000", p99), "≤ 0.333", lambda v: v <= 1 / 3)
check("consume 2 M from first, throughput brook/RabbitMQ", ratio("consume --messages 2000000", rate), "≥ 3", lambda v: v >= 3)
check("e2e 50k msg/s, p99 latency brook/RabbitMQ", ratio("e2e", p99), "≤ 0.333", lambda v: v <= 1 / 3)
cb, cr = cpu_per_million("brook"), cpu_per_million("rabbitmq")
check("broker CPU s per M msgs published+consumed, brook/RabbitMQ", cb / cr if cb is not None and cr else None, "≤ 0.2", lambda v: v <= 0.2)
rb, rr = peak_rss("brook"), peak_rss("rabbitmq")
check("broker peak RSS over all runs, brook/RabbitMQ", rb / rr if rb and rr else None, "≤ 0.1", lambda v: v <= 0.1)
check("publish 1 KiB, brook MB/s", med(pick("publish --messages 300000", "brook"), mbs), "≥ 300", lambda v: v >= 300)
check("consume 1 KiB, brook MB/s", med(pick("consume --messages 300000", "brook"), mbs), "≥ 1000", lambda v: v >= 1000)
