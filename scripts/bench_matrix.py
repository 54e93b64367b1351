#!/usr/bin/env python3
"""Builds courier-bench and the peer benchmarks (bench/peers: tarpc, tonic,
raw sockets), runs them alternately and writes the table with courier's
ratios against tarpc, tonic and the raw floor.

    python3 scripts/bench_matrix.py                 # unpinned, 3 reps x 5 s
    python3 scripts/bench_matrix.py --pin 0         # everything on vCPU 0
    python3 scripts/bench_matrix.py --pin both      # one matrix each way
    python3 scripts/bench_matrix.py --reps 1 --duration 2   # a quick look
    python3 scripts/bench_matrix.py --quick         # smoke test, ~1 min
    python3 scripts/bench_matrix.py --only tonic-stream,courier-stream,courier-bidi

Stream rows: `courier-stream` (courier-bench --mode stream) against the
peers' `tonic-stream`, and `courier-bidi` (--mode bidi), TCP only, at
--stream-configs (default 1x16,64x16,1x4096,64x4096; calls/s = items/s).
They run in a second pass of the runner after the unary cells, alternated
among themselves.

The alternating, the wait for a quiet machine and the per-run CPU accounting
are the peers' runner (bench/peers/scripts/run_matrix.py); courier joins it
with --peer. Results go to bench/results/ (a JSON line per run, the runner's
median table, and a summary with ratios), and the summary is printed.
Compare numbers only within one matrix: the machine is noisy.

Connection rows (`--conns-rows`): client and server of courier in
separate processes (`courier-bench --role server` / `--role client
--conns N`, tokio and smol, 2 workers each), at 1, 8, 64 and 512
connections with --conns-conc calls in flight per connection (default 8),
beside tarpc and tonic at the same rows (tarpc-bench and tonic-bench have
the same --role/--addr flags: `tarpc-2proc`, `tonic-2proc`). The `-1proc`
rows run server and clients of courier (tokio), tarpc and tonic in one
process with --conns N (2 workers in all). Alternated per round, starting
point rotated.

--peers-dir builds and runs another copy of the peer workspace instead (e.g.
a reference checkout, to check the in-repo peers against it); for a
read-only copy give --peers-target, a writable target directory.

Standard library only.
"""

import argparse
import resource
import datetime
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
PEERS = os.path.join(REPO, "bench", "peers")
RUNNER = os.path.join(PEERS, "scripts", "run_matrix.py")
COURIER = os.path.join(REPO, "target", "release", "courier-bench")
RESULTS = os.path.join(REPO, "bench", "results")

STREAM_LABELS = ("tonic-stream", "courier-stream", "courier-bidi")
DEFAULT_LABELS = "tarpc,tarpc-bytebuf,tonic,raw,raw-single,courier," + ",".join(STREAM_LABELS)
STREAM_CONFIGS = "1x16,64x16,1x4096,64x4096"
QUICK = dict(reps=1, duration=1.0, warmup=0.5, configs="64x16", stream_configs="1x16",
             only="tarpc,tonic,tonic-stream,raw,raw-single,courier,courier-stream")


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def build(peers_dir, peers_target):
    log("building courier-bench (release)...")
    subprocess.run(["cargo", "build", "--release", "-p", "courier-bench"], cwd=REPO, check=True)
    log(f"building the peer benchmarks in {os.path.relpath(peers_dir, REPO)} (release)...")
    env = dict(os.environ, CARGO_TARGET_DIR=peers_target)
    subprocess.run(["cargo", "build", "--release"], cwd=peers_dir, env=env, check=True)


def machine():
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()
    return f"{os.cpu_count()} vCPUs ({model}), Linux {platform.release()}, loopback; {rustc}"


def load_runs(path):
    runs = []
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            if not r.get("discarded") and r.get("calls_per_s"):
                runs.append(r)
    return runs


def medians(runs):
    """{(label, transport, conc, payload): {metric: median, 'runs': [...]}}"""
    cells = {}
    for r in runs:
        key = (r["label"], r["transport"], int(r["conc"]), int(r["payload"]))
        cells.setdefault(key, []).append(r)
    out = {}
    for key, rs in cells.items():
        out[key] = {
            "calls_per_s": statistics.median(float(r["calls_per_s"]) for r in rs),
            "p50_us": statistics.median(float(r["p50_us"]) for r in rs),
            "p99_us": statistics.median(float(r["p99_us"]) for r in rs),
            "runs": rs,
        }
    return out


def per_round(runs, a, b, metric):
    """Ratio a/b within each round (rep) where both ran."""
    by = {}
    for r in runs:
        key = (r["label"], r["transport"], int(r["conc"]), int(r["payload"]))
        by.setdefault((key, r["rep"]), float(r[metric]))
    out = []
    reps = sorted({r["rep"] for r in runs})
    for rep in reps:
        if (a, rep) in by and (b, rep) in by and by[(b, rep)] > 0:
            out.append(by[(a, rep)] / by[(b, rep)])
    return out


# (what, courier cell, peer cell, metric, goal, higher ratio is better)
TARGETS = [
    ("TCP conc=64 16 B: calls/s vs tarpc", ("courier", "tcp", 64, 16), ("tarpc", "tcp", 64, 16), "calls_per_s", 3.0, True),
    ("TCP conc=64 16 B: calls/s vs raw", ("courier", "tcp", 64, 16), ("raw", "tcp", 64, 16), "calls_per_s", 0.5, True),
    ("TCP conc=64 4096 B: calls/s vs tarpc", ("courier", "tcp", 64, 4096), ("tarpc", "tcp", 64, 4096), "calls_per_s", 2.0, True),
    ("TCP conc=1 16 B: p50 vs raw-single", ("courier", "tcp", 1, 16), ("raw-single", "tcp", 1, 16), "p50_us", 1.3, False),
    ("mem conc=64 16 B: calls/s vs tarpc mem", ("courier", "mem", 64, 16), ("tarpc", "mem", 64, 16), "calls_per_s", 2.0, True),
]

# Streams: (what, courier cell, tonic cell, goal); items/s, higher is better.
STREAM_TARGETS = [
    (f"TCP {c} stream{'s' if c > 1 else ''} {b} B items: items/s {label} vs tonic-stream",
     (label, "tcp", c, b), ("tonic-stream", "tcp", c, b), goal)
    for label in ("courier-stream", "courier-bidi")
    for c, b in [(1, 16), (64, 16), (1, 4096), (64, 4096)]
    for goal in [(2.0 if b == 16 else 1.0) if label == "courier-stream" else None]
]

EXTRA = [
    ("TCP conc=64 4096 B: calls/s vs tarpc-bytebuf", ("courier", "tcp", 64, 4096), ("tarpc-bytebuf", "tcp", 64, 4096), "calls_per_s"),
    ("TCP conc=64 16 B: calls/s vs raw-single", ("courier", "tcp", 64, 16), ("raw-single", "tcp", 64, 16), "calls_per_s"),
    ("TCP conc=64 4096 B: calls/s vs raw", ("courier", "tcp", 64, 4096), ("raw", "tcp", 64, 4096), "calls_per_s"),
    ("TCP conc=1 16 B: calls/s vs tarpc", ("courier", "tcp", 1, 16), ("tarpc", "tcp", 1, 16), "calls_per_s"),
    ("mem conc=64 4096 B: calls/s vs tarpc mem", ("courier", "mem", 64, 4096), ("tarpc", "mem", 64, 4096), "calls_per_s"),
    ("mem conc=1 16 B: p50 vs tarpc mem", ("courier", "mem", 1, 16), ("tarpc", "mem", 1, 16), "p50_us"),
    ("TCP conc=64 16 B: calls/s vs tonic", ("courier", "tcp", 64, 16), ("tonic", "tcp", 64, 16), "calls_per_s"),
    ("TCP conc=64 4096 B: calls/s vs tonic", ("courier", "tcp", 64, 4096), ("tonic", "tcp", 64, 4096), "calls_per_s"),
    ("TCP conc=1 16 B: p50 vs tonic", ("courier", "tcp", 1, 16), ("tonic", "tcp", 1, 16), "p50_us"),
    ("mem conc=64 16 B: calls/s vs tonic mem", ("courier", "mem", 64, 16), ("tonic", "mem", 64, 16), "calls_per_s"),
]


def ratio_rows(med, runs):
    rows = ["| ratio | courier | peer | ratio of medians | per round | target | holds |",
            "|---|--:|--:|--:|---|--:|---|"]

    def row(what, a, b, metric, goal=None, higher=True):
        if a not in med or b not in med:
            return
        x, y = med[a][metric], med[b][metric]
        if y <= 0:
            return
        r = x / y
        rounds = " / ".join(f"{v:.2f}" for v in per_round(runs, a, b, metric))
        if goal is None:
            target, holds = "", ""
        elif higher:
            target, holds = f"≥ {goal:g}", "yes" if r >= goal else "**no**"
        else:
            target, holds = f"≤ {goal:g}", "yes" if r <= goal else "**no**"
        fmt = (lambda v: f"{v:,.1f} µs") if metric == "p50_us" else (lambda v: f"{v:,.0f}/s")
        rows.append(f"| {what} | {fmt(x)} | {fmt(y)} | {r:.2f} | {rounds} | {target} | {holds} |")

    for what, a, b, metric, goal, higher in TARGETS:
        row(what, a, b, metric, goal, higher)
    for what, a, b, metric in EXTRA:
        row(what, a, b, metric)
    for what, a, b, goal in STREAM_TARGETS:
        row(what, a, b, "calls_per_s", goal, True)
    return rows


def run_matrix(args, pin, stamp):
    tag = f"{stamp}-pin{pin}" if pin else f"{stamp}-unpinned"
    jsonl = os.path.join(RESULTS, f"runs-{tag}.jsonl")
    table = os.path.join(RESULTS, f"table-{tag}.md")
    courier_cmd = shlex.quote(COURIER) + (" " + args.courier_args if args.courier_args else "")
    labels = args.only.split(",")
    passes = [  # (labels, configs, table file): unary cells, then stream cells
        ([l for l in labels if l not in STREAM_LABELS], args.configs, table),
        ([l for l in labels if l in STREAM_LABELS], args.stream_configs, table + ".streams"),
    ]
    tables = []
    for only, configs, md in passes:
        if not only:
            continue
        argv = [sys.executable, RUNNER, "--reps", str(args.reps), "--duration", str(args.duration),
                "--warmup", str(args.warmup), "--only", ",".join(only),
                "--bin-dir", os.path.join(args.peers_target, "release"),
                "--peer", f"courier;{args.transports};{courier_cmd}",
                "--peer", f"courier-stream;tcp;{courier_cmd} --mode stream",
                "--peer", f"courier-bidi;tcp;{courier_cmd} --mode bidi",
                "--jsonl", jsonl, "--md", md]
        for extra in args.peer:
            argv += ["--peer", extra]
        if configs:
            argv += ["--configs", configs]
        if pin:
            argv += ["--pin", pin]
        log("running: " + " ".join(shlex.quote(a) for a in argv))
        subprocess.run(argv, check=True)
        with open(md) as f:
            tables.append(f.read().strip())
    runs = load_runs(jsonl)
    med = medians(runs)
    median_table = "\n\n".join(tables)
    view = f"pinned to vCPU {pin} (`taskset -c {pin}`)" if pin else "unpinned (2 vCPUs)"
    lines = [f"### {view}", "",
             f"Runs {runs[0]['ts'] if runs else '?'} .. {runs[-1]['ts'] if runs else '?'}; "
             f"raw runs: `{os.path.relpath(jsonl, REPO)}`.", "",
             median_table, "", *ratio_rows(med, runs), ""]
    return "\n".join(lines)


CONNS_ROWS = "1,8,64,512"


def parse_result(line):
    """The result line's key=value fields."""
    out = {}
    for part in line.split()[1:]:
        k, _, v = part.partition("=")
        out[k] = v
    return out


def run_one(cmd, timeout):
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    lines = [l for l in res.stdout.splitlines() if "calls_per_s=" in l]
    if res.returncode != 0 or not lines:
        log(f"failed ({res.returncode}): {' '.join(cmd)}\n{res.stderr[-2000:]}")
        return None
    return parse_result(lines[-1])


def run_split(binary, flags, common, timeout):
    """`binary --role server` in one process, `--role client` in another,
    each with `flags` (courier-bench, tarpc-bench and tonic-bench have the
    roles)."""
    server = subprocess.Popen([binary, "--role", "server", *flags],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        first = server.stdout.readline().split()
        if len(first) != 2 or first[0] != "listening":
            log(f"server did not start: {first}")
            return None
        return run_one([binary, "--role", "client", *flags, "--addr", first[1], *common], timeout)
    finally:
        server.kill()
        server.wait()


def conns_matrix(args):
    """The connection rows; returns the markdown section."""
    # 512 connections in one process are 1,024 sockets and more.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    bins = os.path.join(args.peers_target, "release")
    benches = {
        "courier-tokio-2proc": lambda common: run_split(
            COURIER, ["--runtime", "tokio", "--workers", "2"], common, args.timeout),
        "courier-smol-2proc": lambda common: run_split(
            COURIER, ["--runtime", "smol", "--workers", "2"], common, args.timeout),
        "tarpc-2proc": lambda common: run_split(
            os.path.join(bins, "tarpc-bench"), ["--workers", "2", "--nodelay", "1"], common, args.timeout),
        "tonic-2proc": lambda common: run_split(
            os.path.join(bins, "tonic-bench"), ["--workers", "2"], common, args.timeout),
        "courier-tokio-1proc": lambda common: run_one(
            [COURIER, "--runtime", "tokio", "--workers", "2", *common], args.timeout),
        "tarpc-1proc": lambda common: run_one(
            [os.path.join(bins, "tarpc-bench"), "--workers", "2", "--nodelay", "1", *common], args.timeout),
        "tonic-1proc": lambda common: run_one(
            [os.path.join(bins, "tonic-bench"), "--workers", "2", *common], args.timeout),
    }
    names = [n for n in benches if not args.conns_only or n in args.conns_only.split(",")]
    rows = [int(c) for c in args.conns_rows.split(",")]
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    jsonl = os.path.join(RESULTS, f"conns-{stamp}.jsonl")
    results = {}
    cells = [(n, c) for c in rows for n in names]
    for rep in range(args.reps):
        order = cells[rep % len(cells):] + cells[:rep % len(cells)]
        for name, conns in order:
            common = ["--transport", "tcp", "--concurrency", str(args.conns_conc), "--payload", "16",
                      "--conns", str(conns), "--duration", str(args.duration), "--warmup", str(args.warmup)]
            r = benches[name](common)
            log(f"rep {rep} {name} conns={conns}: {r}")
            if r is None:
                continue
            r.update(label=name, conns=conns, rep=rep)
            with open(jsonl, "a") as f:
                f.write(json.dumps(r) + "\n")
            results.setdefault((name, conns), []).append(r)
    med = lambda rs, k: statistics.median(float(r[k]) for r in rs)
    lines = [f"### Connections: {args.conns_conc} calls in flight per connection, 16 B echo, TCP", "",
             f"{args.reps} rounds x {args.duration:g} s ({args.warmup:g} s warm-up), alternated; "
             f"raw runs: `{os.path.relpath(jsonl, REPO)}`. `2proc`: server and client in separate "
             "processes, 2 workers each; `1proc`: one process, 2 workers in all.", "",
             "| bench | conns | calls/s (median) | p50 µs | p99 µs | p99/p50 | calls/s per round |",
             "|---|--:|--:|--:|--:|--:|---|"]
    for conns in rows:
        for name in names:
            rs = results.get((name, conns))
            if not rs:
                lines.append(f"| {name} | {conns} | failed | | | | |")
                continue
            p50, p99 = med(rs, "p50_us"), med(rs, "p99_us")
            per = " / ".join(f"{float(r['calls_per_s']):,.0f}" for r in rs)
            lines.append(f"| {name} | {conns} | {med(rs, 'calls_per_s'):,.0f} | {p50:,.1f} | {p99:,.1f} "
                         f"| {p99 / p50 if p50 else 0:.1f} | {per} |")
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--duration", type=float, default=5)
    ap.add_argument("--warmup", type=float, default=1)
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: 1 rep x 1 s, conc 64 x 16 B only, tonic-stream too (~1 min)")
    ap.add_argument("--pin", default="", help="'' (unpinned), a vCPU list for taskset, or 'both' (unpinned, then 0)")
    ap.add_argument("--only", default=DEFAULT_LABELS, help=f"labels to run (default {DEFAULT_LABELS})")
    ap.add_argument("--transports", default="tcp,mem", help="courier's transports (default tcp,mem)")
    ap.add_argument("--configs", default="", help="e.g. '1x16,64x16,64x4096' (runner default)")
    ap.add_argument("--stream-configs", default=STREAM_CONFIGS,
                    help=f"configs of the stream rows (default {STREAM_CONFIGS})")
    ap.add_argument("--courier-args", default="", help="extra flags for courier-bench, e.g. '--runtime tokio'")
    ap.add_argument("--peer", action="append", default=[], help="more --peer specs for the runner")
    ap.add_argument("--no-build", action="store_true", help="use the binaries as they are")
    ap.add_argument("--peers-dir", default=PEERS,
                    help="peer benchmark workspace to build and run (default bench/peers)")
    ap.add_argument("--peers-target", default="",
                    help="its cargo target directory (default <peers-dir>/target)")
    ap.add_argument("--out", default="", help="summary file (default bench/results/summary-<time>.md)")
    ap.add_argument("--conns-rows", nargs="?", const=CONNS_ROWS, default="",
                    help=f"run only the connection rows (default rows {CONNS_ROWS})")
    ap.add_argument("--conns-conc", type=int, default=8, help="calls in flight per connection (8)")
    ap.add_argument("--conns-only", default="", help="benches of the connection rows to run")
    ap.add_argument("--timeout", type=float, default=120, help="seconds per run before it counts as failed")
    if "--quick" in sys.argv[1:]:
        ap.set_defaults(**QUICK)  # flags given explicitly still win
    args = ap.parse_args()
    args.peers_dir = os.path.abspath(args.peers_dir)
    args.peers_target = os.path.abspath(args.peers_target or os.path.join(args.peers_dir, "target"))

    if not os.path.exists(os.path.join(args.peers_dir, "Cargo.toml")):
        sys.exit(f"peer benchmarks not found at {args.peers_dir}")
    if not args.no_build:
        build(args.peers_dir, args.peers_target)
    os.makedirs(RESULTS, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    if args.conns_rows:
        section = conns_matrix(args)
        out = args.out or os.path.join(RESULTS, f"conns-{stamp}.md")
        with open(out, "w") as f:
            f.write(section)
        print(section)
        log(f"written to {os.path.relpath(out, REPO)}")
        return
    pins = ["", "0"] if args.pin == "both" else [args.pin]
    cmd = "python3 scripts/bench_matrix.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    parts = [f"## Matrix {stamp}", "",
             f"- Machine: {machine()}.",
             f"- Command: `{cmd.strip()}` ({args.reps} reps x {args.duration:g} s, "
             f"{args.warmup:g} s warm-up, one connection, alternated by the peers' runner; "
             f"peers built from `{os.path.relpath(args.peers_dir, REPO)}`).",
             "- Cells: median of the reps; `per round` = the ratio within each round.", ""]
    for pin in pins:
        parts.append(run_matrix(args, pin, stamp))
    summary = "\n".join(parts)
    out = args.out or os.path.join(RESULTS, f"summary-{stamp}.md")
    with open(out, "w") as f:
        f.write(summary + "\n")
    print(summary)
    log(f"summary written to {os.path.relpath(out, REPO)}")


if __name__ == "__main__":
    main()
