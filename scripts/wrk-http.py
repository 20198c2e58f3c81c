#!/usr/bin/env python3
"""Two Logbook binaries' HTTP servers under the same outside load generator (wrk).

Usage: scripts/wrk-http.py OLD_BINARY NEW_BINARY [--runs R] [--seconds S]
                           [--connections C] [--keys K] [--auth off|on]

For each of R rounds, and in each round for OLD then NEW (alternating, so a neighbour's load
hits both), starts `BINARY serve` on a fresh data directory, creates the stream and table
view of `logbook bench http` and preloads K keys (as scripts/callgrind-http.py does), then
runs wrk (Debian package `wrk`; one thread, C keep-alive connections, S seconds) twice:
single-record appends (fsync always) and view-row reads, the requests of `bench http`. Per
run it records wrk's requests/s and p50/p99 latency and the server process's CPU time
(user + system, from /proc/PID/stat) per request. Prints one JSON object: every run, the
medians per binary and the ratios NEW/OLD.

Why: `logbook bench http` runs its load generator in the server's process, so its CPU per
request mixes the client's work with the server's, and a change to the benchmark itself
moves the figure. Here the load generator is one outside program, the same for both
binaries, and the server's CPU is read from outside.

A binary that predates `--auth` is started without it when `--auth off` is asked.
"""

import argparse
import asyncio
import importlib.util
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location("cg", os.path.join(HERE, "callgrind-http.py"))
cg = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cg)

LUA = {
    "read": """
counter = 0
request = function()
  counter = counter + 1
  local key = (counter * 7919) %% %(keys)d
  return wrk.format("GET", "/v1/views/%(view)s/rows/k" .. key)
end
""",
    "append": """
counter = 0
request = function()
  counter = counter + 1
  local key = (counter * 7919) %% %(keys)d
  local body = '{"key":"k' .. key .. '","value":{"i":' .. counter .. ',"pad":"%(pad)s"}}'
  return wrk.format("POST", "/v1/streams/%(stream)s/records",
                    {["content-type"] = "application/json"}, body)
end
""",
}


def cpu_seconds(pid):
    """User + system CPU seconds of process `pid` so far (USER_HZ = 100 on Linux)."""
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) / 100.0


def supports_auth(binary):
    out = subprocess.run([binary, "serve", "--help"], capture_output=True, text=True)
    return "--auth" in out.stdout


def wrk(port, op, a, auth, workdir):
    script = os.path.join(workdir, f"{op}.lua")
    with open(script, "w") as f:
        f.write(LUA[op] % {"keys": a.keys, "view": cg.VIEW, "stream": cg.STREAM, "pad": cg.PAD})
    cmd = ["wrk", "-t1", f"-c{a.connections}", f"-d{a.seconds}s", "--latency", "-s", script]
    if auth:
        cmd += ["-H", auth.strip()]
    out = subprocess.run(cmd + [f"http://127.0.0.1:{port}"], capture_output=True, text=True,
                         check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)

    def quantile(q):
        m = re.search(rf"\s{q}%\s+([\d.]+)(us|ms|s)\b", out)
        scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]
        return round(float(m.group(1)) * scale, 3)

    return {"requests": total, "per_s": rate, "p50_ms": quantile(50), "p99_ms": quantile(99),
            "errors": int(errors.group(1)) if errors else 0}


def one_run(binary, a):
    data = tempfile.mkdtemp(prefix="logbook-wrk-")
    port = cg.free_port()
    host = f"127.0.0.1:{port}"
    cmd = [binary, "serve", "--data-dir", data, "--listen", host]
    if supports_auth(binary):
        cmd += ["--auth", a.auth]
    elif a.auth == "on":
        sys.exit(f"{binary} has no --auth")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        cg.wait_ready(port, proc)
        auth = ""
        if a.auth == "on":
            with open(os.path.join(data, "admin.token")) as f:
                auth = f"authorization: Bearer {f.read().strip()}\r\n"
        asyncio.run(cg.setup(port, host, auth, a.keys))
        result = {}
        for op in ("append", "read"):
            before = cpu_seconds(proc.pid)
            r = wrk(port, op, a, auth, data)
            r["server_cpu_us_per_request"] = round(
                (cpu_seconds(proc.pid) - before) * 1e6 / max(r["requests"], 1), 1)
            result[op] = r
        return result
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(data, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--keys", type=int, default=1000)
    ap.add_argument("--auth", choices=["on", "off"], default="off")
    a = ap.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (Debian: apt-get install -y wrk)")
    runs = {"old": [], "new": []}
    loads = []
    for i in range(a.runs):
        for which in ("old", "new"):
            runs[which].append(one_run(getattr(a, which), a))
            with open("/proc/loadavg") as f:
                loads.append(float(f.read().split()[0]))
            print(f"round {i + 1} {which}: {json.dumps(runs[which][-1])}", file=sys.stderr)
    medians = {
        which: {op: {k: statistics.median(r[op][k] for r in rs)
                     for k in ("per_s", "p50_ms", "p99_ms", "server_cpu_us_per_request")}
                for op in ("append", "read")}
        for which, rs in runs.items()
    }
    ratios = {op: {k: round(medians["new"][op][k] / medians["old"][op][k], 3)
                   for k in medians["new"][op]}
              for op in ("append", "read")}
    print(json.dumps({
        "parameters": {"old": a.old, "new": a.new, "runs": a.runs, "seconds": a.seconds,
                       "connections": a.connections, "keys": a.keys, "auth": a.auth,
                       "load_generator": "wrk -t1", "loadavg_1m_after_each_run": loads},
        "runs": runs, "medians": medians, "ratios_new_over_old": ratios,
    }, indent=1))


if __name__ == "__main__":
    main()
