#!/usr/bin/env python3
"""Side-by-side benchmark: the task proxy against nginx and HAProxy doing the same job.

One machine, one run. Two upstream "jobs" (nginx returning a small body, and two gRPC Greeter
jobs from `demo-services`) sit behind each proxy; each proxy routes by Host to both jobs over
keep-alive upstream connections with the same number of worker threads. The same loads are
driven against every target, interleaved, for several rounds; the table shows medians and ratios
against the better of nginx/HAProxy and against a direct connection to one job.

Two more loads concern the proxy alone:
- auth: the proxy with auth on (the decision cached after the warm-up) against auth off, same job,
  wrk rounds interleaved; the auth checks go to a local dev cluster (`yt-devcluster`, the
  operation is started with the `yt` CLI from .venv, see scripts/install-test-deps).
- discovery: one discovery pass over 10,000 running operations (1,000 exposing 10 jobs each)
  in the dev cluster with 1 ms added to every request, cold and steady: pass time and requests
  per pass (the ignored test `discovery_bench`, run in release).

For HTTP/1.1 a second task proxy runs with `--http1-relay=false` ("task-proxy-general": every
connection through hyper), so the relay's effect is measured in the same run.

Usage: bench/run.py [--rounds 3] [--duration 10] [--threads 1,2]
                    [--only http1,h2c,grpc,idle,auth,discovery]
Installs nginx, haproxy, wrk and h2load (Debian packages) when missing. Loopback only.
"""

import argparse
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASE_DOMAIN = "bench.local"
OPERATION = "bench0000-00000000-00000000-00000001"


def service_hash(op, task, service):
    import hashlib

    return hashlib.sha256((op + task + service).encode()).hexdigest()[-8:]


HTTP_HASH = service_hash(OPERATION, "web", "port_0")
GRPC_HASH = service_hash(OPERATION, "grpc", "server")
HTTP_DOMAIN = f"{HTTP_HASH}.{BASE_DOMAIN}"
GRPC_DOMAIN = f"{GRPC_HASH}.{BASE_DOMAIN}"

PORTS = {
    "job1": 19101, "job2": 19102, "job1_h2": 19111, "job2_h2": 19112,
    "grpc1": 19121, "grpc2": 19122,
    "task-proxy": 18080, "task-proxy-admin": 18081,
    "task-proxy-general": 18082, "task-proxy-general-admin": 18083,
    "nginx": 18090, "nginx_h2": 18091, "nginx_grpc": 18092,
    "haproxy": 18100, "haproxy_h2": 18101, "haproxy_grpc": 18102,
    # auth load
    "auth_cluster": 18200, "auth_job": 18201,
    "auth_on": 18210, "auth_on_admin": 18211, "auth_off": 18220, "auth_off_admin": 18221,
}
AUTH_BASE_DOMAIN = "tp.test"
AUTH_TOKEN = "alice-token"


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, text=True, capture_output=True, **kw)


def ensure_tools():
    need = {"nginx": "nginx", "haproxy": "haproxy", "wrk": "wrk", "h2load": "nghttp2-client", "curl": "curl"}
    missing = [pkg for tool, pkg in need.items() if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists()]
    if missing:
        print(f"installing {' '.join(missing)}", flush=True)
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], check=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


def tool(name):
    return shutil.which(name) or f"/usr/sbin/{name}"


def wait_port(port, timeout=15):
    deadline = time.time() + timeout
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"port {port} did not open")


class Procs:
    def __init__(self):
        self.procs = []

    def start(self, name, cmd, port=None, **kw):
        log = open(WORK / f"{name}.log", "w")
        p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **kw)
        self.procs.append((name, p))
        if port:
            wait_port(port)
        return p

    def stop(self):
        for _, p in self.procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for _, p in self.procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)


def nginx_conf(workers, body):
    return f"""
worker_processes {workers};
daemon off;
pid {WORK}/nginx-{abs(hash(body))}.pid;
error_log stderr error;
events {{ worker_connections 20000; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  {body}
}}
"""


def start_jobs(procs):
    jobs = f"""
  server {{ listen 127.0.0.1:{PORTS['job1']}; listen 127.0.0.1:{PORTS['job1_h2']} http2; location / {{ return 200 "hello from job\\n"; }} }}
  server {{ listen 127.0.0.1:{PORTS['job2']}; listen 127.0.0.1:{PORTS['job2_h2']} http2; location / {{ return 200 "hello from job\\n"; }} }}
"""
    conf = WORK / "jobs.conf"
    conf.write_text(nginx_conf(1, jobs))
    procs.start("jobs", [tool("nginx"), "-c", str(conf), "-p", str(WORK)], PORTS["job2"])
    demo = ROOT / "target/release/demo-services"
    for name in ("grpc1", "grpc2"):
        procs.start(name, [str(demo), "grpc", "--host", "127.0.0.1", "--port", str(PORTS[name])], PORTS[name])


def start_task_proxy(procs, threads, name="task-proxy", extra=()):
    services = {"services": [
        {"operation_id": OPERATION, "task_name": "web", "service": "port_0", "protocol": "http",
         "endpoints": [f"127.0.0.1:{PORTS['job1']}", f"127.0.0.1:{PORTS['job2']}"]},
        {"operation_id": OPERATION, "task_name": "grpc", "service": "server", "protocol": "grpc",
         "endpoints": [f"127.0.0.1:{PORTS['grpc1']}", f"127.0.0.1:{PORTS['grpc2']}"]},
    ]}
    f = WORK / "services.json"
    f.write_text(json.dumps(services))
    return procs.start(name, [
        str(ROOT / "target/release/task-proxy"), "serve", "--services-file", str(f),
        "--base-domain", BASE_DOMAIN, "--auth-enabled=false",
        "--listen", f"127.0.0.1:{PORTS[name]}", "--admin-listen", f"127.0.0.1:{PORTS[name + '-admin']}",
        "--worker-threads", str(threads), *extra,
    ], PORTS[name], env={**os.environ, "RUST_LOG": "warn"})


def start_nginx(procs, threads):
    body = f"""
  upstream jobs {{ server 127.0.0.1:{PORTS['job1']}; server 127.0.0.1:{PORTS['job2']}; keepalive 128; }}
  upstream grpcs {{ server 127.0.0.1:{PORTS['grpc1']}; server 127.0.0.1:{PORTS['grpc2']}; keepalive 128; }}
  server {{
    listen 127.0.0.1:{PORTS['nginx']}; listen 127.0.0.1:{PORTS['nginx_h2']} http2;
    server_name {HTTP_DOMAIN};
    location / {{ proxy_pass http://jobs; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_set_header Host $host; }}
  }}
  server {{
    listen 127.0.0.1:{PORTS['nginx_grpc']} http2;
    server_name {GRPC_DOMAIN};
    location / {{ grpc_pass grpc://grpcs; }}
  }}
"""
    conf = WORK / "nginx.conf"
    conf.write_text(nginx_conf(threads, body))
    return procs.start("nginx", [tool("nginx"), "-c", str(conf), "-p", str(WORK)], PORTS["nginx_grpc"])


def start_haproxy(procs, threads):
    conf = WORK / "haproxy.cfg"
    conf.write_text(f"""
global
  nbthread {threads}
  maxconn 9000
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  http-reuse always
frontend web
  bind 127.0.0.1:{PORTS['haproxy']}
  bind 127.0.0.1:{PORTS['haproxy_h2']} proto h2
  use_backend jobs if {{ hdr(host) -i {HTTP_DOMAIN} }}
frontend grpc
  bind 127.0.0.1:{PORTS['haproxy_grpc']} proto h2
  use_backend grpcs if {{ hdr(host) -i {GRPC_DOMAIN} }}
backend jobs
  balance roundrobin
  server j1 127.0.0.1:{PORTS['job1']}
  server j2 127.0.0.1:{PORTS['job2']}
backend grpcs
  balance roundrobin
  server g1 127.0.0.1:{PORTS['grpc1']} proto h2
  server g2 127.0.0.1:{PORTS['grpc2']} proto h2
""")
    return procs.start("haproxy", [tool("haproxy"), "-f", str(conf), "-db"], PORTS["haproxy_grpc"])


def parse_latency(text):
    """wrk prints '50%  1.23ms'; returns milliseconds."""
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    if not m:
        return float("nan")
    v, unit = float(m.group(1)), m.group(2)
    return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v


def run_wrk(port, duration, host):
    out = sh([tool("wrk"), "-t1", "-c64", f"-d{duration}s", "--latency", "-H", f"Host: {host}",
              f"http://127.0.0.1:{port}/"]).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    # Anchored: the thread-stats table also has percentages ("85.50%") followed by other fields.
    p50 = parse_latency(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))
    p99 = parse_latency(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "p50": p50, "p99": p99, "errors": int(errors.group(1)) if errors else 0}


def run_h2load(port, duration, host, grpc=False):
    args = [tool("h2load"), "-c64", "-m10", "-t1", "-D", str(duration), "--warm-up-time=1",
            "-H", f":authority: {host}"]
    url = f"http://127.0.0.1:{port}/"
    if grpc:
        body = WORK / "hello.grpc"
        msg = b"\x0a\x05bench"
        body.write_bytes(b"\x00" + len(msg).to_bytes(4, "big") + msg)
        args += ["-d", str(body), "-H", "content-type: application/grpc", "-H", "te: trailers"]
        url = f"http://127.0.0.1:{port}/helloworld.Greeter/SayHello"
    out = sh(args + [url]).stdout
    rps = float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out).group(1))
    ok = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed", out)
    # h2load prints request-time stats: min max mean sd +/- sd; p99 is not printed, so use max of
    # the per-request 'time for request' mean + 3 sd as a conservative tail estimate.
    m = re.search(r"time for request:\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)", out)
    mean = parse_latency(m.group(3)) if m else float("nan")
    sd = parse_latency(m.group(4)) if m else float("nan")
    return {"rps": rps, "p50": mean, "p99": mean + 3 * sd, "errors": int(ok.group(2)) if ok else -1}


def run_wrk_auth(port, duration, host):
    """wrk with the caller's credentials (the same for auth on and off)."""
    out = sh([tool("wrk"), "-t1", "-c64", f"-d{duration}s", "--latency", "-H", f"Host: {host}",
              "-H", f"Authorization: OAuth {AUTH_TOKEN}", f"http://127.0.0.1:{port}/"]).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = parse_latency(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))
    p99 = parse_latency(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "p50": p50, "p99": p99, "errors": int(errors.group(1)) if errors else 0}


def auth_overhead(threads, rounds, duration):
    """Auth on (cached decision) against auth off: two proxies in front of one job, the auth
    checks answered by a dev cluster; wrk rounds interleaved in random order. Returns
    {"off": [samples], "on": [samples]}."""
    yt = ROOT / ".venv/bin/yt"
    if not yt.exists():
        raise RuntimeError(f"{yt} is missing: run scripts/install-test-deps")
    procs = Procs()
    try:
        cluster_url = f"http://127.0.0.1:{PORTS['auth_cluster']}"
        procs.start("auth-cluster", [str(ROOT / "target/release/yt-devcluster"), "--listen",
                                     f"127.0.0.1:{PORTS['auth_cluster']}"], PORTS["auth_cluster"])
        # The operation the service belongs to: the gate checks `read` on it.
        out = sh([str(yt), "vanilla", "--tasks", '{main={command="sleep 100000";job_count=1}}',
                  "--spec", "{}", "--async"],
                 env={**os.environ, "YT_PROXY": cluster_url, "YT_TOKEN": AUTH_TOKEN}).stdout
        op = out.strip().splitlines()[-1].strip()
        procs.start("auth-job", [str(ROOT / "target/release/demo-services"), "http", "--host", "127.0.0.1",
                                 "--port", str(PORTS["auth_job"]), "--name", "job"], PORTS["auth_job"])
        services = WORK / "auth-services.json"
        services.write_text(json.dumps({"services": [
            {"operation_id": op, "task_name": "main", "service": "web", "protocol": "http",
             "endpoints": [f"127.0.0.1:{PORTS['auth_job']}"]}]}))
        domain = f"{service_hash(op, 'main', 'web')}.{AUTH_BASE_DOMAIN}"
        for name, extra in (("auth_off", ["--auth-enabled=false"]), ("auth_on", [])):
            procs.start(name, [
                str(ROOT / "target/release/task-proxy"), "serve", "--services-file", str(services),
                "--base-domain", AUTH_BASE_DOMAIN, "--yt-proxy", cluster_url, "--yt-token", "robot-token",
                "--listen", f"127.0.0.1:{PORTS[name]}", "--admin-listen", f"127.0.0.1:{PORTS[name + '_admin']}",
                "--worker-threads", str(threads), *extra,
            ], PORTS[name], env={**os.environ, "RUST_LOG": "warn"})
        for name in ("auth_off", "auth_on"):
            code = sh(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", f"Host: {domain}",
                       "-H", f"Authorization: OAuth {AUTH_TOKEN}", f"http://127.0.0.1:{PORTS[name]}/"]).stdout
            if code != "200":
                raise RuntimeError(f"{name}: the proxy answered {code}, not 200")
            # Warm-up: connections, and the auth decision in the cache.
            run_wrk_auth(PORTS[name], 2, domain)
        samples = {"off": [], "on": []}
        for r in range(rounds):
            order = [("off", PORTS["auth_off"]), ("on", PORTS["auth_on"])]
            random.shuffle(order)
            for name, port in order:
                s = run_wrk_auth(port, duration, domain)
                samples[name].append(s)
                print(f"threads={threads} auth round {r + 1} auth {name}: {s['rps']:.0f} req/s p99 {s['p99']:.2f} ms", flush=True)
        return samples
    finally:
        procs.stop()


def parse_duration_s(text):
    """Rust's Debug of a Duration ('561.2ms', '1.08s', '950µs') in seconds."""
    m = re.match(r"([\d.]+)(ns|µs|us|ms|s)$", text)
    if not m:
        return float("nan")
    scale = {"ns": 1e-9, "µs": 1e-6, "us": 1e-6, "ms": 1e-3, "s": 1.0}[m.group(2)]
    return float(m.group(1)) * scale


def discovery_passes():
    """Runs the discovery-at-scale measurement (an ignored test) in release; returns
    [(label, seconds, requests)] for the cold pass and the steady passes."""
    out = subprocess.run(
        ["cargo", "test", "--release", "-q", "-p", "task-proxy", "--test", "discovery_bench", "--",
         "--ignored", "--nocapture"],
        cwd=ROOT, check=True, text=True, capture_output=True).stdout
    passes = []
    for m in re.finditer(r"^(cold|steady) pass: (\S+), (\d+) requests", out, re.M):
        passes.append((m.group(1), parse_duration_s(m.group(2)), int(m.group(3))))
        print(f"discovery {m.group(1)} pass: {m.group(2)}, {m.group(3)} requests", flush=True)
    if not passes:
        raise RuntimeError(f"discovery_bench printed no pass:\n{out}")
    return passes


def rss_kib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def idle_connections(pid, port, count):
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, count * 2 + 1000), hard))
    at_rest = rss_kib(pid)
    socks = []
    req = f"GET / HTTP/1.1\r\nHost: {HTTP_DOMAIN}\r\n\r\n".encode()
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(req)
        socks.append(s)
    for s in socks:
        s.recv(4096)
    time.sleep(1)
    loaded = rss_kib(pid)
    for s in socks:
        s.close()
    return at_rest / 1024, loaded / 1024


def fmt_row(name, samples):
    rps = statistics.median(s["rps"] for s in samples)
    p50 = statistics.median(s["p50"] for s in samples)
    p99 = statistics.median(s["p99"] for s in samples)
    errs = sum(s["errors"] for s in samples)
    return name, rps, p50, p99, errs


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--threads", default=f"1,{os.cpu_count()}")
    ap.add_argument("--only", default="http1,h2c,grpc,idle,auth,discovery")
    ap.add_argument("--idle-connections", type=int, default=10000)
    ap.add_argument("--no-build", action="store_true")
    args = ap.parse_args()
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    ensure_tools()
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "-p", "task-proxy", "-p", "demo-services", "-p", "yt-devcluster"],
                       cwd=ROOT, check=True)
    loads = args.only.split(",")
    unknown = set(loads) - {"http1", "h2c", "grpc", "idle", "auth", "discovery"}
    if unknown:
        ap.error(f"unknown loads: {', '.join(sorted(unknown))}")
    report = []
    auth_report = []
    discovery_report = []
    if "discovery" in loads:
        discovery_report = discovery_passes()
    for threads in [int(t) for t in args.threads.split(",")]:
        if "auth" in loads:
            auth_report.append((threads, auth_overhead(threads, args.rounds, args.duration)))
        if not set(loads) & {"http1", "h2c", "grpc", "idle"}:
            continue
        procs = Procs()
        try:
            start_jobs(procs)
            tp = start_task_proxy(procs, threads)
            # The same binary with every connection on the general path (hyper), for HTTP/1.1:
            # what the relay changes, measured in the same run.
            start_task_proxy(procs, threads, "task-proxy-general", ["--http1-relay=false"])
            start_nginx(procs, threads)
            start_haproxy(procs, threads)
            time.sleep(1)
            targets = {
                "http1": {"task-proxy": PORTS["task-proxy"], "task-proxy-general": PORTS["task-proxy-general"], "nginx": PORTS["nginx"], "haproxy": PORTS["haproxy"], "direct": PORTS["job1"]},
                "h2c": {"task-proxy": PORTS["task-proxy"], "nginx": PORTS["nginx_h2"], "haproxy": PORTS["haproxy_h2"], "direct": PORTS["job1_h2"]},
                "grpc": {"task-proxy": PORTS["task-proxy"], "nginx": PORTS["nginx_grpc"], "haproxy": PORTS["haproxy_grpc"], "direct": PORTS["grpc1"]},
            }
            for load in [l for l in loads if l in targets]:
                samples = {name: [] for name in targets[load]}
                for r in range(args.rounds):
                    order = list(targets[load].items())
                    random.shuffle(order)
                    for name, port in order:
                        if load == "http1":
                            s = run_wrk(port, args.duration, HTTP_DOMAIN)
                        else:
                            s = run_h2load(port, args.duration, GRPC_DOMAIN if load == "grpc" else HTTP_DOMAIN, grpc=load == "grpc")
                        samples[name].append(s)
                        print(f"threads={threads} {load} round {r + 1} {name}: {s['rps']:.0f} req/s p99 {s['p99']:.2f} ms", flush=True)
                rows = [fmt_row(n, s) for n, s in samples.items()]
                best_other = max(r[1] for r in rows if r[0] in ("nginx", "haproxy"))
                direct = next(r[1] for r in rows if r[0] == "direct")
                for name, rps, p50, p99, errs in rows:
                    report.append((threads, load, name, rps, p50, p99, errs, rps / best_other, rps / direct))
            if "idle" in loads:
                after_load = rss_kib(tp.pid) / 1024
                # A fresh proxy for the idle connections: "at rest" is a started proxy, and
                # the figure is not the allocator's leftovers from the loads above.
                os.killpg(tp.pid, signal.SIGTERM)
                tp.wait(timeout=30)
                tp = start_task_proxy(procs, threads)
                time.sleep(1)
                rest, loaded = idle_connections(tp.pid, PORTS["task-proxy"], args.idle_connections)
                report.append((threads, "idle", f"task-proxy RSS MiB: at rest {rest:.1f}; after the loads above {after_load:.1f}; fresh, with {args.idle_connections} idle keep-alive conns {loaded:.1f}", 0, 0, 0, 0, 0, 0))
        finally:
            procs.stop()
    if report:
        print()
        print("| threads | load | target | req/s (median) | p50 ms | p99 ms | errors | vs best of nginx/HAProxy | vs direct |")
        print("|---|---|---|---|---|---|---|---|---|")
        for threads, load, name, rps, p50, p99, errs, vs_best, vs_direct in report:
            if load == "idle":
                print(f"| {threads} | idle | {name} | | | | | | |")
            else:
                print(f"| {threads} | {load} | {name} | {rps:.0f} | {p50:.2f} | {p99:.2f} | {errs} | {vs_best:.2f}x | {vs_direct:.2f}x |")
    if auth_report:
        print()
        print("Auth on (decision cached) against auth off, same job (wrk -t1 -c64, interleaved rounds):")
        print()
        print("| threads | auth | req/s (median) | p50 ms | p99 ms | errors | on/off (median of rounds) | round range |")
        print("|---|---|---|---|---|---|---|---|")
        for threads, samples in auth_report:
            ratios = [on["rps"] / off["rps"] for on, off in zip(samples["on"], samples["off"])]
            for name in ("off", "on"):
                _, rps, p50, p99, errs = fmt_row(name, samples[name])
                ratio = f"**{statistics.median(ratios):.3f}**" if name == "on" else ""
                spread = f"{min(ratios):.2f}–{max(ratios):.2f}" if name == "on" else ""
                print(f"| {threads} | {name} | {rps:.0f} | {p50:.2f} | {p99:.2f} | {errs} | {ratio} | {spread} |")
    if discovery_report:
        print()
        print("Discovery, 10,000 operations / 10,000 jobs, 1 ms per request (dev cluster):")
        print()
        print("| pass | time s | requests |")
        print("|---|---|---|")
        for label, seconds, requests in discovery_report:
            print(f"| {label} | {seconds:.2f} | {requests} |")


if __name__ == "__main__":
    WORK = Path(tempfile.mkdtemp(prefix="tp-bench-"))
    main()
