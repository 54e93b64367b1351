#!/usr/bin/env python3
"""Runs the peer benchmark matrix, alternating benchmarks, and prints medians.

Every benchmark binary speaks the same CLI
(--transport --concurrency --payload --duration --warmup, see README.md) and
prints one result line on stdout:

    <name> transport=T conc=N payload=B calls_per_s=X p50_us=Y p99_us=Z [k=v ...]

Round r runs every (bench, config) cell once; cells are visited in a rotated
order each round so that no cell always runs first/last. Before each run the
script waits (up to --quiet-wait s) for the machine to be quiet, and it records
how much CPU other processes used during each run ("foreign" cores), because
this machine is shared. A run with foreign > --max-foreign is discarded and
retried at the end of its round (up to --retries times); discarded runs stay
in the jsonl with "discarded": true.

Add a new framework side by side with --peer (repeatable):

    --peer 'newrpc;tcp,mem;/path/to/newrpc-bench --some-extra-flag'

Standard library only.
"""

import argparse
import json
import os
import resource
import shlex
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
REL = os.path.join(ROOT, "target", "release")  # --bin-dir

CONFIGS = [(1, 16), (64, 16), (64, 4096)]  # (concurrency, payload)


def default_benches(rel):
    t = os.path.join(rel, "tarpc-bench")
    r = os.path.join(rel, "raw-bench")
    g = os.path.join(rel, "tonic-bench")
    return [
        # label, transports, argv prefix
        ("tarpc", ["tcp", "mem"], [t]),  # tcp: Nagle on (tarpc default)
        ("tarpc+nodelay", ["tcp"], [t, "--nodelay", "1"]),
        ("tarpc-bytebuf", ["tcp"], [t, "--echo", "bytebuf"]),  # serde_bytes echo
        ("tonic", ["tcp", "mem"], [g]),  # unary gRPC, tonic defaults (TCP_NODELAY on)
        # conc = concurrent server-streaming calls; calls/s = items/s,
        # p50/p99 = gap between consecutive items of one call
        ("tonic-stream", ["tcp"], [g, "--mode", "stream"]),
        ("raw", ["tcp"], [r]),  # writer thread + reader thread
        ("raw-single", ["tcp"], [r, "--client", "single"]),  # 1 client thread
    ]


def cpu_times():
    """(busy, steal, total) jiffies over all CPUs from /proc/stat.
    busy excludes idle, iowait and steal."""
    with open("/proc/stat") as f:
        parts = f.readline().split()[1:]
    vals = [int(x) for x in parts[:8]]
    idle = vals[3] + vals[4]  # idle + iowait
    steal = vals[7]
    total = sum(vals)
    return total - idle - steal, steal, total


def busy_cores(interval):
    b0, _, t0 = cpu_times()
    time.sleep(interval)
    b1, _, t1 = cpu_times()
    ncpu = os.cpu_count() or 1
    return (b1 - b0) / max(1, t1 - t0) * ncpu


def wait_quiet(threshold, max_wait, log):
    """Waits until other load is below `threshold` cores; returns last sample."""
    start = time.time()
    while True:
        b = busy_cores(0.5)
        if b <= threshold or time.time() - start >= max_wait:
            if b > threshold:
                log(f"  (still busy: {b:.2f} cores after {max_wait}s; running anyway)")
            return b
        time.sleep(0.5)


def parse_line(line):
    parts = line.split()
    out = {"name": parts[0]}
    for p in parts[1:]:
        k, _, v = p.partition("=")
        try:
            out[k] = float(v) if "." in v else int(v)
        except ValueError:
            out[k] = v
    return out


def shown(arg):
    """An argument as recorded: absolute paths become relative to this folder,
    so that result files carry no machine-specific paths."""
    return os.path.relpath(arg, ROOT) if os.path.isabs(arg) else arg


def run_one(argv, timeout):
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    b0, s0, t0 = cpu_times()
    w0 = time.time()
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    wall = time.time() - w0
    b1, s1, t1 = cpu_times()
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    hz = os.sysconf("SC_CLK_TCK")
    machine_cores = (b1 - b0) / hz / wall if wall > 0 else 0.0
    own = (ru1.ru_utime - ru0.ru_utime + ru1.ru_stime - ru0.ru_stime) / wall
    lines = [l for l in p.stdout.splitlines() if l.strip()]
    if p.returncode != 0 or not lines:
        raise RuntimeError(f"{argv} failed rc={p.returncode}\n{p.stdout}\n{p.stderr}")
    res = parse_line(lines[-1])
    res["own_cores"] = round(own, 2)
    res["foreign_cores"] = round(max(0.0, machine_cores - own), 2)
    # vCPU time taken by the hypervisor for other guests (noisy neighbours).
    res["steal_cores"] = round((s1 - s0) / hz / wall, 2) if wall > 0 else 0.0
    res["stderr"] = p.stderr.strip()
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--duration", type=float, default=5)
    ap.add_argument("--warmup", type=float, default=1)
    ap.add_argument("--peer", action="append", default=[],
                    help="'label;transports(comma);command ...' run with the same flags")
    ap.add_argument("--only", default="", help="comma list of labels to run (default: all)")
    ap.add_argument("--configs", default="", help="e.g. '1x16,64x16,64x4096' (conc x payload)")
    ap.add_argument("--quiet-threshold", type=float, default=0.3,
                    help="max busy cores before a run (default 0.3)")
    ap.add_argument("--quiet-wait", type=float, default=30, help="max seconds to wait for quiet")
    ap.add_argument("--max-foreign", type=float, default=0.15,
                    help="a run during which other processes used more cores than this is "
                         "discarded and retried at the end of its round (default 0.15)")
    ap.add_argument("--retries", type=int, default=3, help="retries per run for --max-foreign")
    ap.add_argument("--pin", default="",
                    help="run every benchmark under 'taskset -c PIN' (e.g. 0: one vCPU, "
                         "no cross-vCPU wake-ups; see README 'Noise')")
    ap.add_argument("--bin-dir", default=REL,
                    help="where tarpc-bench, raw-bench and tonic-bench are (default target/release "
                         "here; e.g. another build of the peers to compare with)")
    ap.add_argument("--jsonl", default=os.path.join(ROOT, "results", "runs.jsonl"))
    ap.add_argument("--md", default="", help="also write the median table here")
    args = ap.parse_args()

    benches = default_benches(args.bin_dir)
    for spec in args.peer:
        label, transports, cmd = spec.split(";", 2)
        benches.append((label, transports.split(","), shlex.split(cmd)))
    if args.only:
        keep = set(args.only.split(","))
        benches = [b for b in benches if b[0] in keep]
    configs = CONFIGS
    if args.configs:
        configs = [tuple(int(x) for x in c.split("x")) for c in args.configs.split(",")]

    cells = []
    for label, transports, prefix in benches:
        for tr in transports:
            for conc, payload in configs:
                cells.append((label, tr, conc, payload, prefix))

    os.makedirs(os.path.dirname(args.jsonl), exist_ok=True)
    log = lambda m: print(m, file=sys.stderr, flush=True)
    est = len(cells) * args.reps * (args.duration + args.warmup + 1)
    log(f"{len(cells)} cells x {args.reps} reps, ~{est/60:.1f} min plus quiet waits")

    results = {}
    with open(args.jsonl, "a") as jf:
        for rep in range(args.reps):
            k = (rep * len(cells)) // max(1, args.reps)
            queue = [(c, 0) for c in cells[k:] + cells[:k]]
            while queue:
                (label, tr, conc, payload, prefix), tries = queue.pop(0)
                bg = wait_quiet(args.quiet_threshold, args.quiet_wait, log)
                pin = ["taskset", "-c", args.pin] if args.pin else []
                argv = pin + prefix + ["--transport", tr, "--concurrency", str(conc),
                                 "--payload", str(payload), "--duration", str(args.duration),
                                 "--warmup", str(args.warmup)]
                res = run_one(argv, timeout=args.duration + args.warmup + 60)
                dirty = res["foreign_cores"] > args.max_foreign
                res.update(label=label, rep=rep + 1, pin=args.pin, pre_busy_cores=round(bg, 2),
                           ts=time.strftime("%Y-%m-%dT%H:%M:%S"), argv=[shown(a) for a in argv],
                           discarded=bool(dirty and tries < args.retries))
                jf.write(json.dumps(res) + "\n")
                jf.flush()
                log(f"[{rep+1}/{args.reps}] {label:14s} {tr} conc={conc:<3d} payload={payload:<5d} "
                    f"calls/s={res['calls_per_s']:>9} p50={res['p50_us']:>8} p99={res['p99_us']:>8} "
                    f"own={res['own_cores']} foreign={res['foreign_cores']} steal={res['steal_cores']}"
                    + ("  -> discarded, retry later in this round" if res["discarded"] else ""))
                if res["discarded"]:
                    queue.append(((label, tr, conc, payload, prefix), tries + 1))
                    continue
                results.setdefault((label, tr, conc, payload), []).append(res)

    hdr = ("| bench | transport | conc | payload | calls/s (median) | p50 µs (median) | p99 µs (median) "
           "| calls/s per run | max foreign / steal cores |")
    rows = [hdr, "|" + "---|" * 9]
    for (label, tr, conc, payload), rs in results.items():
        med = lambda k: statistics.median(r[k] for r in rs)
        per_run = " / ".join(f"{r['calls_per_s']:,}" for r in rs)
        rows.append(f"| {label} | {tr} | {conc} | {payload} | {med('calls_per_s'):,.0f} | "
                    f"{med('p50_us'):.1f} | {med('p99_us'):.1f} | {per_run} | "
                    f"{max(r['foreign_cores'] for r in rs):.2f} / "
                    f"{max(r['steal_cores'] for r in rs):.2f} |")
    table = "\n".join(rows)
    print(table)
    if args.md:
        with open(args.md, "w") as f:
            f.write(table + "\n")


if __name__ == "__main__":
    main()
