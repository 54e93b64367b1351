#!/usr/bin/env python3
"""Idle cost of a courier server: memory per connection and what the server
does while its connections idle.

    python3 scripts/idle_cost.py                    # 10,000 connections, tokio and smol
    python3 scripts/idle_cost.py --conns 1000 --runtime smol --idle 5

For each runtime: starts `courier-bench --role server` (2 workers; each
connection a task), reads its resident memory (VmRSS), connects --conns
clients from a second process (`courier-bench --role idle`: one call per
connection, then silence), reads VmRSS again and reports the difference per
connection. Then, with every connection idle, it counts for --idle seconds
(a) the server threads' context switches (/proc/PID/task/*/status: every
wake-up of a thread is one) and (b) its system calls (`strace -c -f`, if
installed), which would show per-connection timers (timerfd_settime,
epoll_wait returning) firing. Raises the open-file limit to its hard limit
(10,000 connections need 10,000 descriptors on each side).

Needs target/release/courier-bench (cargo build --release -p courier-bench).
Standard library only.
"""

import argparse
import os
import resource
import shutil
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COURIER = os.path.join(REPO, "target", "release", "courier-bench")


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def switches(pid):
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.endswith("ctxt_switches:\t0\n"):
                        continue
                    if "ctxt_switches:" in line:
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def strace_counts(pid, secs):
    """{syscall: calls} of the server over `secs` seconds."""
    if not shutil.which("strace"):
        return None
    res = subprocess.run(["timeout", "-s", "INT", str(secs), "strace", "-c", "-f", "-p", str(pid)],
                         capture_output=True, text=True)
    counts = {}
    for line in res.stderr.splitlines():
        parts = line.split()
        # % time, seconds, usecs/call, calls, [errors], syscall
        if len(parts) >= 5 and parts[0].replace(".", "").isdigit() and parts[-1] != "total":
            try:
                counts[parts[-1]] = int(parts[3])
            except ValueError:
                pass
    return counts


def measure(runtime, conns, idle):
    server = subprocess.Popen([COURIER, "--role", "server", "--runtime", runtime, "--workers", "2"],
                              stdout=subprocess.PIPE, text=True)
    client = None
    try:
        addr = server.stdout.readline().split()[1]
        time.sleep(0.5)
        before = rss_kib(server.pid)
        client = subprocess.Popen([COURIER, "--role", "idle", "--addr", addr, "--conns", str(conns),
                                   "--duration", str(idle * 2 + 30), "--workers", "2"],
                                  stdout=subprocess.PIPE, text=True)
        ready = client.stdout.readline().split()
        if ready != ["ready", str(conns)]:
            raise RuntimeError(f"clients not ready: {ready}")
        time.sleep(1.0)
        after = rss_kib(server.pid)
        s0 = switches(server.pid)
        time.sleep(idle)
        s1 = switches(server.pid)
        calls = strace_counts(server.pid, idle)
        return dict(runtime=runtime, conns=conns, rss_before_kib=before, rss_after_kib=after,
                    per_conn_bytes=(after - before) * 1024 / conns,
                    wakeups=s1 - s0, idle_s=idle, syscalls=calls)
    finally:
        for p in (client, server):
            if p is not None:
                p.kill()
                p.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--conns", type=int, default=10_000)
    ap.add_argument("--runtime", default="tokio,smol")
    ap.add_argument("--idle", type=int, default=10, help="seconds to watch the idle server")
    ap.add_argument("--reps", type=int, default=1)
    args = ap.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < args.conns + 100:
        sys.exit(f"the open-file hard limit ({hard}) is below {args.conns} connections")
    print("| runtime | conns | server RSS before → after | per connection | thread wake-ups in "
          f"{args.idle} s idle | system calls in {args.idle} s idle (strace -c -f) |")
    print("|---|--:|---|--:|--:|---|")
    for rep in range(args.reps):
        for runtime in args.runtime.split(","):
            r = measure(runtime, args.conns, args.idle)
            calls = r["syscalls"]
            calls = "strace not installed" if calls is None else (
                ", ".join(f"{k} {v}" for k, v in sorted(calls.items(), key=lambda kv: -kv[1])) or "none")
            print(f"| {runtime} | {r['conns']:,} | {r['rss_before_kib']:,} KiB → {r['rss_after_kib']:,} KiB "
                  f"| {r['per_conn_bytes']:,.0f} B | {r['wakeups']} | {calls} |", flush=True)


if __name__ == "__main__":
    main()
