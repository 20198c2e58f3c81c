#!/usr/bin/env python3
"""Instructions per HTTP request of a Logbook server, counted by callgrind.

Usage: scripts/callgrind-http.py BINARY OUT_DIR [--auth on|off|none] [--requests N]
                                 [--connections C] [--keys K]

Starts `BINARY serve` under `valgrind --tool=callgrind` on a fresh data directory, creates
the stream and the table view of `logbook bench http` (2 partitions, fsync always), preloads
K keys, then zeroes the counters and sends, over C keep-alive connections (closed loop, one
request in flight each), N single-record appends and dumps the counters, then N view-row
reads and dumps again. The requests are byte for byte those of `bench http`. Prints one JSON
object: instructions per request of each phase (`callgrind_annotate OUT_DIR/callgrind.out.*`
compares them function by function).

`--auth none` is for binaries that predate `--auth` (they have no authentication); `on`
sends the admin token the server wrote into its data directory.

Why instructions and not wall-clock: on a shared 2-core machine wall-clock figures move by
10-20 % with the neighbours' builds, while instruction counts of the same workload repeat
within about 1 %, so a change of a few percent on the request path is visible.
"""

import argparse
import asyncio
import glob
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

STREAM = "bench"
VIEW = "bench_rows"
PAD = "x" * 80  # bench http's default --record-bytes 100, less the JSON around it


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Conn:
    """One HTTP/1.1 keep-alive connection that reads answers by Content-Length."""

    def __init__(self, reader, writer):
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port):
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def call(self, raw):
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        m = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
        body = await self.reader.readexactly(int(m.group(1))) if m else b""
        return status, body


def request(method, path, host, auth, body=None):
    head = f"{method} {path} HTTP/1.1\r\nhost: {host}\r\n{auth}"
    if body is None:
        return (head + "\r\n").encode()
    head += f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
    return head.encode() + body.encode()


def append(n, key):
    return json.dumps({"key": f"k{key}", "value": {"i": n, "pad": PAD}}, separators=(",", ":"))


async def expect(conn, raw, what, ok=range(200, 300)):
    status, body = await conn.call(raw)
    if status not in ok:
        sys.exit(f"{what}: HTTP {status}: {body[:300]!r}")
    return body


async def setup(port, host, auth, keys):
    c = await Conn.open(port)
    spec = json.dumps({"partitions": 2, "fsync": "always"})
    await expect(c, request("PUT", f"/v1/streams/{STREAM}", host, auth, spec), "stream")
    view = json.dumps({"source": STREAM, "kind": "table"})
    await expect(c, request("PUT", f"/v1/views/{VIEW}", host, auth, view), "view")
    token = ""
    for k in range(0, keys, 500):
        recs = [{"key": f"k{i}", "value": {"i": i, "pad": PAD}} for i in range(k, min(k + 500, keys))]
        body = await expect(c, request("POST", f"/v1/streams/{STREAM}/records", host, auth,
                                       json.dumps({"records": recs})), "preload")
        token = json.loads(body).get("token", "")
    q = f"?token={token}&timeout_ms=60000" if token else "?timeout_ms=60000"
    await expect(c, request("GET", f"/v1/views/{VIEW}/rows/k{keys - 1}{q}", host, auth), "catch up")


async def phase(port, host, auth, op, requests, connections, keys):
    conns = [await Conn.open(port) for _ in range(connections)]

    async def run(i, c):
        for n in range(i, requests, connections):
            key = (n * 7919) % keys  # spread over the keys, the same sequence every run
            if op == "append":
                raw = request("POST", f"/v1/streams/{STREAM}/records", host, auth, append(n, key))
            else:
                raw = request("GET", f"/v1/views/{VIEW}/rows/k{key}", host, auth)
            await expect(c, raw, op)

    await asyncio.gather(*(run(i, c) for i, c in enumerate(conns)))
    for c in conns:
        c.writer.close()


def wait_ready(port, proc, deadline_s=120):
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            sys.exit(f"the server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(f"GET /v1/health HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n\r\n".encode())
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.2)  # polling a child's readiness, not synchronising a test
    sys.exit("the server did not become ready")


def callgrind_control(pid, *args):
    subprocess.run(["callgrind_control", *args, str(pid)], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)


def total_ir(path):
    with open(path) as f:
        for line in f:
            if line.startswith("totals:") or line.startswith("summary:"):
                return int(line.split()[1])
    raise ValueError(f"no totals in {path}")


def newest_dump(out, before):
    for _ in range(600):
        new = set(glob.glob(os.path.join(out, "callgrind.out.*"))) - before
        done = [p for p in new if total_ir_or_none(p) is not None]
        if done:
            return done[0]
        time.sleep(0.1)  # waiting for valgrind to write the dump file
    sys.exit("callgrind wrote no dump")


def total_ir_or_none(path):
    try:
        return total_ir(path)
    except (OSError, ValueError):
        return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("out")
    ap.add_argument("--auth", choices=["on", "off", "none"], default="off")
    ap.add_argument("--requests", type=int, default=4000)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--keys", type=int, default=1000)
    a = ap.parse_args()

    os.makedirs(a.out, exist_ok=True)
    data = tempfile.mkdtemp(prefix="logbook-callgrind-")
    port = free_port()
    host = f"127.0.0.1:{port}"
    cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={a.out}/callgrind.out.%p",
           a.binary, "serve", "--data-dir", data, "--listen", host]
    if a.auth != "none":
        cmd += ["--auth", a.auth]
    log = open(os.path.join(a.out, "server.log"), "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_ready(port, proc)
        auth = ""
        if a.auth == "on":
            with open(os.path.join(data, "admin.token")) as f:
                auth = f"authorization: Bearer {f.read().strip()}\r\n"
        asyncio.run(setup(port, host, auth, a.keys))
        callgrind_control(proc.pid, "--zero")
        report = {"binary": a.binary, "auth": a.auth, "requests": a.requests,
                  "connections": a.connections}
        for op in ("append", "read"):
            before = set(glob.glob(os.path.join(a.out, "callgrind.out.*")))
            asyncio.run(phase(port, host, auth, op, a.requests, a.connections, a.keys))
            callgrind_control(proc.pid, f"--dump={op}")
            dump = newest_dump(a.out, before)
            final = os.path.join(a.out, f"{op}.callgrind")
            shutil.move(dump, final)
            report[f"{op}_instructions_per_request"] = round(total_ir(final) / a.requests)
            report[f"{op}_profile"] = final
            callgrind_control(proc.pid, "--zero")
        print(json.dumps(report))
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
