#!/usr/bin/env python3
"""Instructions per request of the task proxy under callgrind, for one load at a time.

The proxy (release build, one worker) runs under `valgrind --tool=callgrind` in front of the
same jobs as bench/run.py; h2load sends a fixed number of requests. Two runs with N1 and N2
requests give instructions per request as (Ir(N2) - Ir(N1)) / (N2 - N1): start-up, connection
set-up and shutdown cancel out. The top functions (self and inclusive) of the larger run are
printed with callgrind_annotate. Instruction counts do not depend on what else runs on the
machine, unlike wall-clock figures.

Usage: bench/callgrind.py [--load h2c|grpc|grpc-stream|http1] [--requests 20000,60000]
Needs valgrind (Debian package) and the release binaries (bench/run.py builds them).
"""

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402


def total_ir(path):
    for line in Path(path).read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {path}")


def drive(load, requests):
    port = run.PORTS["task-proxy"]
    args = [run.tool("h2load"), "-n", str(requests), "-c8", "-m10", "-t1",
            "-H", f":authority: {run.GRPC_DOMAIN if load.startswith('grpc') else run.HTTP_DOMAIN}"]
    url = f"http://127.0.0.1:{port}/"
    if load == "http1":
        args[args.index("-m10")] = "-m1"
        args.append("--h1")
    if load.startswith("grpc"):
        body = run.WORK / "hello.grpc"
        msg = b"\x0a\x05bench"
        body.write_bytes(b"\x00" + len(msg).to_bytes(4, "big") + msg)
        args += ["-d", str(body), "-H", "content-type: application/grpc", "-H", "te: trailers"]
        method = "SayHelloStream" if load == "grpc-stream" else "SayHello"
        url = f"http://127.0.0.1:{port}/helloworld.Greeter/{method}"
    out = run.sh(args + [url]).stdout
    ok = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed", out)
    if not ok or int(ok.group(2)) or int(ok.group(1)) != requests:
        raise RuntimeError(f"h2load did not succeed:\n{out}")


def measure(procs, load, requests):
    out = run.WORK / f"callgrind.{load}.{requests}"
    tp = run.start_task_proxy(procs, 1, wrapper=["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"],
                              timeout=120)
    drive(load, requests)
    os.killpg(tp.pid, signal.SIGTERM)
    tp.wait(timeout=120)
    return out, total_ir(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--load", default="h2c", choices=["h2c", "grpc", "grpc-stream", "http1"])
    ap.add_argument("--requests", default="20000,60000")
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args()
    n1, n2 = (int(n) for n in args.requests.split(","))
    procs = run.Procs()
    try:
        run.make_certificate()
        run.start_jobs(procs)
        _, ir1 = measure(procs, args.load, n1)
        path, ir2 = measure(procs, args.load, n2)
    finally:
        procs.stop()
    print(f"{args.load}: {ir1} Ir for {n1} requests, {ir2} Ir for {n2}: "
          f"{(ir2 - ir1) / (n2 - n1):.0f} instructions per request")
    for inclusive in ("no", "yes"):
        annotated = subprocess.run(["callgrind_annotate", f"--inclusive={inclusive}", str(path)],
                                   check=True, text=True, capture_output=True).stdout
        lines = [l for l in annotated.splitlines() if re.match(r"\s*[\d,]+ \(", l)]
        print(f"\ntop functions ({'inclusive' if inclusive == 'yes' else 'self'}), {n2} requests:")
        for line in lines[: args.top]:
            count = int(line.split()[0].replace(",", ""))
            print(f"{count / n2:10.0f} /req  {line.strip()[:160]}")
    print(f"\ncallgrind files in {run.WORK}")


if __name__ == "__main__":
    run.WORK = Path(tempfile.mkdtemp(prefix="tp-callgrind-"))
    main()
