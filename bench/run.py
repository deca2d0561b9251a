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

Loads (`--only`, comma-separated):
- http1, h2c, grpc, grpc-stream: plaintext, access logs off everywhere. grpc-stream calls the
  server-streaming `SayHelloStream` (5 replies, the jobs started without pauses between them).
- http1-log, h2c-log, grpc-log, https1-log, https2-log: the same loads against a second set of
  the three servers with their access log on, each to a file (ours through `--logging-config`,
  nginx `access_log`, HAProxy `log stdout` with its stdout sent to a file).
- https1, https2: HTTP/1.1 (`h2load --h1`) and h2 callers over TLS on keep-alive connections.
  All three servers get the same certificate (ECDSA P-256) and the callers pin TLS 1.3 with
  TLS_AES_128_GCM_SHA256 over X25519 (ECDHE + AES-GCM).
- tls-full, tls-resumed: handshakes/s (`openssl s_time`, one request per connection), full
  handshakes and resumed sessions separately.
- idle: RSS of a fresh proxy with --idle-connections HTTP/1.1 keep-alive connections, and
  again with as many idle h2c connections (each did one request).
- slow-reader: RSS growth of a fresh proxy while 100 h2c connections each ask for 100
  streams of a 1 MiB body, grant huge flow-control windows and never read.

Usage: bench/run.py [--rounds 3] [--duration 10] [--threads 1,2] [--only LOADS]
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
    "task-proxy-tls": 18084, "nginx_tls": 18093, "haproxy_tls": 18103,
    # auth load
    "auth_cluster": 18200, "auth_job": 18201,
    "auth_on": 18210, "auth_on_admin": 18211, "auth_off": 18220, "auth_off_admin": 18221,
}
# The servers with their access log on listen LOG_OFFSET above the ones with it off.
LOG_OFFSET = 2000
PLAIN_LOADS = ["http1", "h2c", "grpc", "grpc-stream"]
TLS_LOADS = ["https1", "https2"]
LOG_LOADS = [f"{l}-log" for l in ("http1", "h2c", "grpc", "https1", "https2")]
HANDSHAKE_LOADS = ["tls-full", "tls-resumed"]
ALL_LOADS = PLAIN_LOADS + TLS_LOADS + LOG_LOADS + HANDSHAKE_LOADS + ["idle", "slow-reader", "auth", "discovery"]
TLS13_CIPHER = "TLS_AES_128_GCM_SHA256"
BIG_BODY = 1 << 20
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

    def start(self, name, cmd, port=None, timeout=15, **kw):
        log = open(WORK / f"{name}.log", "w")
        p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **kw)
        self.procs.append((name, p))
        if port:
            wait_port(port, timeout)
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


def port(name, log=False):
    return PORTS[name] + (LOG_OFFSET if log else 0)


def suffix(log):
    return "-log" if log else ""


def make_certificate():
    """One self-signed ECDSA P-256 certificate for every server (and HAProxy's combined PEM)."""
    cert, key = WORK / "bench.crt", WORK / "bench.key"
    sh(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", f"/CN={BASE_DOMAIN}",
        "-addext", f"subjectAltName=DNS:{BASE_DOMAIN},DNS:*.{BASE_DOMAIN}"])
    (WORK / "bench.pem").write_text(cert.read_text() + key.read_text())
    return cert, key


def nginx_conf(workers, body, access_log="off"):
    return f"""
worker_processes {workers};
daemon off;
pid {WORK}/nginx-{abs(hash(body))}.pid;
error_log stderr error;
events {{ worker_connections 20000; }}
http {{
  access_log {access_log};
  keepalive_requests 1000000;
  {body}
}}
"""


def start_jobs(procs):
    jobs = f"""
  server {{ listen 127.0.0.1:{PORTS['job1']}; listen 127.0.0.1:{PORTS['job1_h2']} http2; root {WORK}; location = /big {{ try_files /big.bin =404; }} location / {{ return 200 "hello from job\\n"; }} }}
  server {{ listen 127.0.0.1:{PORTS['job2']}; listen 127.0.0.1:{PORTS['job2_h2']} http2; root {WORK}; location = /big {{ try_files /big.bin =404; }} location / {{ return 200 "hello from job\\n"; }} }}
"""
    (WORK / "big.bin").write_bytes(os.urandom(BIG_BODY))
    conf = WORK / "jobs.conf"
    conf.write_text(nginx_conf(1, jobs))
    procs.start("jobs", [tool("nginx"), "-c", str(conf), "-p", str(WORK)], PORTS["job2"])
    demo = ROOT / "target/release/demo-services"
    for name in ("grpc1", "grpc2"):
        procs.start(name, [str(demo), "grpc", "--host", "127.0.0.1", "--port", str(PORTS[name]),
                           "--stream-interval-ms", "0"], PORTS[name])


def start_task_proxy(procs, threads, name="task-proxy", extra=(), log=False, wrapper=(), timeout=15):
    services = {"services": [
        {"operation_id": OPERATION, "task_name": "web", "service": "port_0", "protocol": "http",
         "endpoints": [f"127.0.0.1:{PORTS['job1']}", f"127.0.0.1:{PORTS['job2']}"]},
        {"operation_id": OPERATION, "task_name": "grpc", "service": "server", "protocol": "grpc",
         "endpoints": [f"127.0.0.1:{PORTS['grpc1']}", f"127.0.0.1:{PORTS['grpc2']}"]},
    ]}
    f = WORK / "services.json"
    f.write_text(json.dumps(services))
    if log:
        # Warnings on stderr as with RUST_LOG=warn; the access log to a rotated file.
        config = WORK / "logging.yaml"
        config.write_text(
            f"directory: {WORK}/task-proxy-logs\n"
            "server: {writerType: stderr, minLogLevel: warning}\n"
            "proxy: {writerType: stderr, minLogLevel: warning}\n"
            "accessLog: {enabled: true, writerType: file, "
            "rotationPolicy: {maxSegmentSize: 1Gi, maxSegmentCountToKeep: 2}}\n")
        extra = [*extra, "--logging-config", str(config)]
    if name == "task-proxy":
        cert, key = WORK / "bench.crt", WORK / "bench.key"
        extra = [*extra, "--tls-cert", str(cert), "--tls-key", str(key),
                 "--tls-listen", f"127.0.0.1:{port('task-proxy-tls', log)}"]
    return procs.start(name + suffix(log), [
        *wrapper, str(ROOT / "target/release/task-proxy"), "serve", "--services-file", str(f),
        "--base-domain", BASE_DOMAIN, "--auth-enabled=false",
        "--listen", f"127.0.0.1:{port(name, log)}", "--admin-listen", f"127.0.0.1:{port(name + '-admin', log)}",
        "--worker-threads", str(threads), *extra,
    ], port(name, log), env={**os.environ, "RUST_LOG": "warn"}, timeout=timeout)


def start_nginx(procs, threads, log=False):
    p = lambda name: port(name, log)  # noqa: E731
    body = f"""
  upstream jobs {{ server 127.0.0.1:{PORTS['job1']}; server 127.0.0.1:{PORTS['job2']}; keepalive 128; }}
  upstream grpcs {{ server 127.0.0.1:{PORTS['grpc1']}; server 127.0.0.1:{PORTS['grpc2']}; keepalive 128; }}
  server {{
    listen 127.0.0.1:{p('nginx')}; listen 127.0.0.1:{p('nginx_h2')} http2;
    listen 127.0.0.1:{p('nginx_tls')} ssl http2;
    ssl_certificate {WORK}/bench.crt; ssl_certificate_key {WORK}/bench.key;
    ssl_protocols TLSv1.2 TLSv1.3; ssl_session_cache shared:SSL:10m; ssl_session_tickets on;
    server_name {HTTP_DOMAIN};
    location / {{ proxy_pass http://jobs; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_set_header Host $host; }}
  }}
  server {{
    listen 127.0.0.1:{p('nginx_grpc')} http2;
    server_name {GRPC_DOMAIN};
    location / {{ grpc_pass grpc://grpcs; }}
  }}
"""
    conf = WORK / f"nginx{suffix(log)}.conf"
    conf.write_text(nginx_conf(threads, body, f"{WORK}/nginx-access.log" if log else "off"))
    return procs.start("nginx" + suffix(log), [tool("nginx"), "-c", str(conf), "-p", str(WORK)], p("nginx_grpc"))


def start_haproxy(procs, threads, log=False):
    p = lambda name: port(name, log)  # noqa: E731
    conf = WORK / f"haproxy{suffix(log)}.cfg"
    # HAProxy writes no file itself: with its log on it logs to stdout, which Procs sends to
    # a file (haproxy-log.log).
    global_log = "  log stdout format raw local0 info\n" if log else ""
    defaults_log = "  log global\n  option httplog\n" if log else ""
    conf.write_text(f"""
global
  nbthread {threads}
  maxconn 9000
  tune.ssl.default-dh-param 2048
{global_log}defaults
{defaults_log}  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  http-reuse always
frontend web
  bind 127.0.0.1:{p('haproxy')}
  bind 127.0.0.1:{p('haproxy_h2')} proto h2
  bind 127.0.0.1:{p('haproxy_tls')} ssl crt {WORK}/bench.pem alpn h2,http/1.1
  use_backend jobs if {{ hdr(host) -i {HTTP_DOMAIN} }}
frontend grpc
  bind 127.0.0.1:{p('haproxy_grpc')} proto h2
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
    return procs.start("haproxy" + suffix(log), [tool("haproxy"), "-f", str(conf), "-db"], p("haproxy_grpc"))


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


def run_h2load(port, duration, host, grpc=None, tls=False, h1=False):
    """grpc: None, "unary" or "stream"; tls: https (TLS 1.3, one AES-GCM suite); h1: HTTP/1.1."""
    args = [tool("h2load"), "-c64", "-m1" if h1 else "-m10", "-t1", "-D", str(duration), "--warm-up-time=1",
            "-H", f":authority: {host}"]
    if h1:
        args.append("--h1")
    if tls:
        args.append(f"--tls13-ciphers={TLS13_CIPHER}")
    scheme = "https" if tls else "http"
    url = f"{scheme}://127.0.0.1:{port}/"
    if grpc:
        body = WORK / "hello.grpc"
        msg = b"\x0a\x05bench"
        body.write_bytes(b"\x00" + len(msg).to_bytes(4, "big") + msg)
        args += ["-d", str(body), "-H", "content-type: application/grpc", "-H", "te: trailers"]
        method = "SayHelloStream" if grpc == "stream" else "SayHello"
        url = f"{scheme}://127.0.0.1:{port}/helloworld.Greeter/{method}"
    out = sh(args + [url]).stdout
    rps = float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out).group(1))
    ok = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed", out)
    # h2load prints request-time stats: min max mean sd +/- sd; p99 is not printed, so use max of
    # the per-request 'time for request' mean + 3 sd as a conservative tail estimate.
    m = re.search(r"time for request:\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)", out)
    mean = parse_latency(m.group(3)) if m else float("nan")
    sd = parse_latency(m.group(4)) if m else float("nan")
    return {"rps": rps, "p50": mean, "p99": mean + 3 * sd, "errors": int(ok.group(2)) if ok else -1}


def run_handshakes(port, duration, resumed):
    """Handshakes/s of one `openssl s_time` client: a request per connection; full handshakes,
    or sessions resumed from the first connection's ticket."""
    out = sh(["openssl", "s_time", "-connect", f"127.0.0.1:{port}", "-www", "/", "-time", str(duration),
              "-tls1_3", "-ciphersuites", TLS13_CIPHER, "-reuse" if resumed else "-new"]).stdout
    m = re.search(r"(\d+) connections in ([\d.]+) real seconds", out)
    if not m:
        raise RuntimeError(f"s_time printed no count:\n{out}")
    rate = int(m.group(1)) / float(m.group(2))
    return {"rps": rate, "p50": float("nan"), "p99": float("nan"), "errors": 0}


class H2Client:
    """A minimal h2c client on a raw socket: enough to open idle connections and slow readers
    (h2load always reads; a slow reader must not)."""

    PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

    @staticmethod
    def frame(kind, flags, stream, payload=b""):
        return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload

    @staticmethod
    def headers(path, authority):
        # :method GET, :scheme http (static table), :path and :authority as literals without
        # indexing (no Huffman).
        block = b"\x82\x86"
        for index, value in ((4, path), (1, authority)):
            raw = value.encode()
            block += bytes([index, len(raw)]) + raw
        return block

    def __init__(self, port, window=None):
        self.sock = socket.create_connection(("127.0.0.1", port))
        settings = b""
        if window:
            settings = (4).to_bytes(2, "big") + window.to_bytes(4, "big")  # INITIAL_WINDOW_SIZE
        out = self.PREFACE + self.frame(4, 0, 0, settings)
        if window:
            out += self.frame(8, 0, 0, (window - 65535).to_bytes(4, "big"))  # connection window
        self.sock.sendall(out)
        self.acked = False

    def request(self, stream, path, authority):
        self.sock.sendall(self.frame(1, 0x5, stream, self.headers(path, authority)))  # END_STREAM|END_HEADERS

    def read_until_end(self, stream, timeout=30):
        """Reads frames (acking the server's SETTINGS) until `stream` ends."""
        self.sock.settimeout(timeout)
        buf = b""
        while True:
            while len(buf) >= 9:
                length = int.from_bytes(buf[:3], "big")
                if len(buf) < 9 + length:
                    break
                kind, flags, sid = buf[3], buf[4], int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF
                buf = buf[9 + length:]
                if kind == 4 and not flags & 1 and not self.acked:
                    self.sock.sendall(self.frame(4, 1, 0))
                    self.acked = True
                if sid == stream and kind in (0, 1) and flags & 1:
                    return
                if kind == 7:
                    raise RuntimeError("the proxy sent GOAWAY")
            data = self.sock.recv(65536)
            if not data:
                raise RuntimeError("the proxy closed an h2 connection")
            buf += data

    def close(self):
        self.sock.close()


def idle_h2_connections(pid, port, count):
    at_rest = rss_kib(pid)
    clients = []
    for _ in range(count):
        c = H2Client(port)
        c.request(1, "/", HTTP_DOMAIN)
        clients.append(c)
    for c in clients:
        c.read_until_end(1)
    time.sleep(1)
    loaded = rss_kib(pid)
    for c in clients:
        c.close()
    return at_rest / 1024, loaded / 1024


def slow_readers(pid, port, connections=100, streams=100, hold=5):
    """RSS before and at the peak while h2c callers ask for big bodies and never read."""
    before = rss_kib(pid)
    clients = []
    for _ in range(connections):
        c = H2Client(port, window=(1 << 31) - 1)
        for i in range(streams):
            c.request(2 * i + 1, "/big", HTTP_DOMAIN)
        clients.append(c)
    peak = before
    deadline = time.time() + hold
    while time.time() < deadline:
        peak = max(peak, rss_kib(pid))
        time.sleep(0.2)
    for c in clients:
        c.close()
    time.sleep(1)
    after = rss_kib(pid)
    return before / 1024, peak / 1024, after / 1024


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
    ap.add_argument("--only", default=",".join(ALL_LOADS))
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
    unknown = set(loads) - set(ALL_LOADS)
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
        if not set(loads) & set(PLAIN_LOADS + TLS_LOADS + LOG_LOADS + HANDSHAKE_LOADS + ["idle", "slow-reader"]):
            continue
        procs = Procs()
        try:
            make_certificate()
            start_jobs(procs)
            tp = start_task_proxy(procs, threads)
            # The same binary with every connection on the general path (hyper), for HTTP/1.1:
            # what the relay changes, measured in the same run.
            start_task_proxy(procs, threads, "task-proxy-general", ["--http1-relay=false"])
            start_nginx(procs, threads)
            start_haproxy(procs, threads)
            if set(loads) & set(LOG_LOADS):
                start_task_proxy(procs, threads, log=True)
                start_nginx(procs, threads, log=True)
                start_haproxy(procs, threads, log=True)
            time.sleep(1)

            def servers(plain, tls, log=False):
                """The three servers' ports for one kind of listener."""
                tp_port = {"plain": port("task-proxy", log), "tls": port("task-proxy-tls", log)}
                return {
                    "task-proxy": tp_port["tls" if tls else "plain"],
                    "nginx": port({"plain": "nginx", "h2": "nginx_h2", "grpc": "nginx_grpc", "tls": "nginx_tls"}[plain], log),
                    "haproxy": port({"plain": "haproxy", "h2": "haproxy_h2", "grpc": "haproxy_grpc", "tls": "haproxy_tls"}[plain], log),
                }

            # load -> (targets, how to drive one target)
            h2 = lambda **kw: lambda p: run_h2load(p, args.duration, HTTP_DOMAIN, **kw)  # noqa: E731
            grpc = lambda kind: lambda p: run_h2load(p, args.duration, GRPC_DOMAIN, grpc=kind)  # noqa: E731
            wrk = lambda p: run_wrk(p, args.duration, HTTP_DOMAIN)  # noqa: E731
            plans = {
                "http1": ({**servers("plain", False), "task-proxy-general": PORTS["task-proxy-general"], "direct": PORTS["job1"]}, wrk),
                "h2c": ({**servers("h2", False), "direct": PORTS["job1_h2"]}, h2()),
                "grpc": ({**servers("grpc", False), "direct": PORTS["grpc1"]}, grpc("unary")),
                "grpc-stream": ({**servers("grpc", False), "direct": PORTS["grpc1"]}, grpc("stream")),
                "https1": (servers("tls", True), h2(tls=True, h1=True)),
                "https2": (servers("tls", True), h2(tls=True)),
                "http1-log": (servers("plain", False, log=True), wrk),
                "h2c-log": (servers("h2", False, log=True), h2()),
                "grpc-log": (servers("grpc", False, log=True), grpc("unary")),
                "https1-log": (servers("tls", True, log=True), h2(tls=True, h1=True)),
                "https2-log": (servers("tls", True, log=True), h2(tls=True)),
                "tls-full": (servers("tls", True), lambda p: run_handshakes(p, args.duration, False)),
                "tls-resumed": (servers("tls", True), lambda p: run_handshakes(p, args.duration, True)),
            }
            for load in [l for l in loads if l in plans]:
                targets, drive = plans[load]
                samples = {name: [] for name in targets}
                for r in range(args.rounds):
                    order = list(targets.items())
                    random.shuffle(order)
                    for name, target_port in order:
                        s = drive(target_port)
                        samples[name].append(s)
                        unit = "handshakes/s" if load in HANDSHAKE_LOADS else "req/s"
                        print(f"threads={threads} {load} round {r + 1} {name}: {s['rps']:.0f} {unit} p99 {s['p99']:.2f} ms", flush=True)
                rows = [fmt_row(n, s) for n, s in samples.items()]
                best_other = max(r[1] for r in rows if r[0] in ("nginx", "haproxy"))
                direct = next((r[1] for r in rows if r[0] == "direct"), float("nan"))
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
                os.killpg(tp.pid, signal.SIGTERM)
                tp.wait(timeout=30)
                tp = start_task_proxy(procs, threads)
                time.sleep(1)
                rest, loaded = idle_h2_connections(tp.pid, PORTS["task-proxy"], args.idle_connections)
                report.append((threads, "idle", f"task-proxy RSS MiB: fresh {rest:.1f}; with {args.idle_connections} idle h2c conns {loaded:.1f}", 0, 0, 0, 0, 0, 0))
            if "slow-reader" in loads:
                os.killpg(tp.pid, signal.SIGTERM)
                tp.wait(timeout=30)
                tp = start_task_proxy(procs, threads)
                time.sleep(1)
                before, peak, after = slow_readers(tp.pid, PORTS["task-proxy"])
                report.append((threads, "slow-reader", f"task-proxy RSS MiB: before {before:.1f}; peak with 100 h2c slow readers x 100 streams of 1 MiB {peak:.1f} (growth {peak - before:.1f}); after they left {after:.1f}", 0, 0, 0, 0, 0, 0))
        finally:
            procs.stop()
    if report:
        print()
        print("| threads | load | target | req/s (median) | p50 ms | p99 ms | errors | vs best of nginx/HAProxy | vs direct |")
        print("|---|---|---|---|---|---|---|---|---|")
        for threads, load, name, rps, p50, p99, errs, vs_best, vs_direct in report:
            if load in ("idle", "slow-reader"):
                print(f"| {threads} | {load} | {name} | | | | | | |")
            else:
                direct = "" if vs_direct != vs_direct else f"{vs_direct:.2f}x"  # NaN: no direct target
                print(f"| {threads} | {load} | {name} | {rps:.0f} | {p50:.2f} | {p99:.2f} | {errs} | {vs_best:.2f}x | {direct} |")
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
