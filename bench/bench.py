#!/usr/bin/env python3
"""Read-endpoint latency through lighttpd + TLS with a client certificate.

    .venv/bin/python bench/bench.py [--requests N] [--warmup N] [--levels 0,100,1000]
                                    [--running-levels 0,100,500] [--keep]

Serves a throw-away site (tools/devsite.py) with the real lighttpd, plus two
"null" CGI scripts on the same lighttpd: /null, a Python script printing a fixed
200 answer, run by the same interpreter as the API (so its time includes Python
start-up), and /null-sh, a /bin/sh script doing the same (lighttpd + TLS + fork/exec
only). At each number of instance folders it times every read endpoint and both
floors over one keep-alive HTTPS connection, round-robin, after warm-up requests,
and prints median and p90 latency and the ratio to the Python floor.

A third script, /null-walk, is the least /service_status could do: the Python
null plus the system calls its answer needs for each instance folder (is there
a haproxy.cfg, a stunnel.conf; read haproxy.pid), and an answer of the same
size. The gap between the two is what the API's own code costs.

Instance folders are written straight to disk (haproxy.cfg, haproxy.rendered.cfg
and a stale haproxy.pid), so /status and /service_status walk them with no daemons.
Then, with those folders gone, the reads of haproxy's figures: at each of
--running-levels, that many instances with a running haproxy (started by the
API's own code, as a PUT starts it; a frontend, a backend, a checked server),
GET /metrics and GET /instances/<id>/stats are timed with /status and the
Python null on the same connection.

A benchmark, not a test: it checks answers only to say when they look wrong.
"""
import argparse
import http.client
import json
import os
import shutil
import signal
import sys
import tempfile
import time
import uuid

sys.dont_write_bytecode = True  # no bench/__pycache__ in the tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import (ADDRESS, Site, make_pki, median, ms, p90, table,  # noqa: E402
                      timed_request)

NULL_PY_BODY = "null-python\n"
NULL_SH_BODY = "null-sh\n"

NULL_PY = """\
# A null CGI: a fixed 200 answer, standard library only (bench/bench.py).
import sys
sys.stdout.write("Status: 200 OK\\r\\nContent-Type: text/plain; charset=utf-8\\r\\n"
                 "Content-Length: %d\\r\\n\\r\\n%s")
""" % (len(NULL_PY_BODY), NULL_PY_BODY.replace("\n", "\\n"))

NULL_SH = """\
# A null CGI for /bin/sh: the same fixed 200 answer with no Python (bench/bench.py).
printf 'Status: 200 OK\\r\\nContent-Type: text/plain; charset=utf-8\\r\\nContent-Length: %d\\r\\n\\r\\n%s'
""" % (len(NULL_SH_BODY), NULL_SH_BODY.replace("\n", "\\n"))

NULL_WALK = """\
# /service_status's floor (bench/bench.py): its system calls and its answer's size, no checks.
import os
import sys
fd = os.open(%r, os.O_RDONLY | os.O_DIRECTORY)
lines = []
for name in sorted(os.listdir(fd)):
    os.access(name + "/haproxy.cfg", os.F_OK, dir_fd=fd)
    os.access(name + "/stunnel.conf", os.F_OK, dir_fd=fd)
    pid_file = os.open(name + "/haproxy.pid", os.O_RDONLY, dir_fd=fd)
    os.read(pid_file, 64)
    os.close(pid_file)
    lines.append("%%-52sDOWN\\n  haproxy          stopped\\n" %% name)
os.listdir("/proc")
body = "".join(lines).encode()
sys.stdout.buffer.write(b"Status: 200 OK\\r\\nContent-Type: text/plain; charset=utf-8\\r\\n"
                        b"Content-Length: %%d\\r\\n\\r\\n" %% len(body) + body)
"""

HAPROXY_TEMPLATE = """\
# bench instance %(n)d (written straight to disk by bench/bench.py)
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend fe
    bind {MYIP}:%(port)d
    default_backend be
backend be
    server s1 127.0.0.1:9
"""

# What each running instance of --running-levels serves: small, one checked server.
RUNNING_TEMPLATE = """\
# bench instance %(n)d, running (bench/bench.py)
global
    maxconn 50
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend fe
    bind {MYIP}:%(port)d
    default_backend be
backend be
    server s1 127.0.0.1:9 check inter 10s
"""

# A pid that is surely not running (above the largest pid_max Linux allows: 2^22).
STALE_PID = 4194305


def null_conf(null_py, null_sh, null_walk):
    """lighttpd conditionals sending /null, /null-sh and /null-walk to the null scripts.
    The global alias.url maps every path ("") to the API script; inside a
    matching $HTTP["url"] block these settings take precedence."""
    return ('$HTTP["url"] == "/null" {\n'
            '    alias.url = ("" => "%s")\n'
            '}\n'
            '$HTTP["url"] == "/null-walk" {\n'
            '    alias.url = ("" => "%s")\n'
            '}\n'
            '$HTTP["url"] == "/null-sh" {\n'
            '    alias.url = ("" => "%s")\n'
            '    cgi.assign = ("" => "/bin/sh")\n'
            '}\n' % (null_py, null_walk, null_sh))


def add_instances(site, count, first_number):
    """Create count instance folders on disk; their ids."""
    ids = []
    for offset in range(count):
        instance_id = str(uuid.uuid4())
        folder = os.path.join(site.instances_dir, instance_id)
        os.makedirs(folder)
        template = HAPROXY_TEMPLATE % {"n": first_number + offset, "port": 20000 + offset % 20000}
        with open(os.path.join(folder, "haproxy.cfg"), "w") as file:
            file.write(template)
        with open(os.path.join(folder, "haproxy.rendered.cfg"), "w") as file:
            file.write(template.replace("{MYIP}", ADDRESS))
        with open(os.path.join(folder, "haproxy.pid"), "w") as file:
            file.write("%d\n" % STALE_PID)
        ids.append(instance_id)
    return ids


def start_running_instances(site, count, first_number):
    """count instances with haproxy running, started as the API starts one
    (system/haproxy.py); their ids."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(
        __file__))), "lib"))
    from appliance_api import config as config_module
    from appliance_api.layout import Instance
    from appliance_api.system.haproxy import Haproxy

    config = config_module.load({config_module.ENV_VARIABLE: site.api_config})
    ids = []
    for offset in range(count):
        instance = Instance(site.state_dir, str(uuid.uuid4()))
        os.makedirs(instance.dir)
        template = RUNNING_TEMPLATE % {"n": first_number + offset,
                                       "port": 30000 + (first_number + offset) % 20000}
        daemon = Haproxy(instance, config)
        with open(instance.template("haproxy"), "w") as file:
            file.write(template)
        with open(instance.rendered("haproxy"), "w") as file:
            file.write(daemon.render(template))
        daemon.start()
        ids.append(instance.id)
    return ids


def stop_running_instances(site):
    """SIGKILL every haproxy master the running levels started (its worker follows)."""
    if not os.path.isdir(site.instances_dir):
        return
    for name in os.listdir(site.instances_dir):
        try:
            with open(os.path.join(site.instances_dir, name, "haproxy.pid")) as file:
                os.kill(int(file.read().split()[0]), signal.SIGKILL)
        except (OSError, ValueError, IndexError):
            pass


def measure_running_level(site, level, existing, requests, warmup, deadline):
    """{label: [seconds...]} and notes for the figure reads at one level."""
    endpoints = [("null (python)", "/null"), ("GET /status", "/status"),
                 ("GET /metrics", "/metrics")]
    if existing:
        endpoints.append(("GET /instances/<running>/stats", "/instances/%s/stats" % existing))
    client = Client(site)
    notes = []
    try:
        status, body, _ = client.get("/metrics")
        up = body.decode().count("\nappliance_haproxy_up{")
        answered = body.decode().count("} 1\n", body.decode().find("appliance_haproxy_up{"),
                                       body.decode().find("# HELP", body.decode().find(
                                           "appliance_haproxy_up{")))
        if status != 200 or up != level or answered != level:
            notes.append("/metrics: HTTP %d, %d instances listed, %d up (expected %d)"
                         % (status, up, answered, level))
        for _ in range(warmup):
            for _label, path in endpoints:
                client.get(path)
        results = {label: [] for label, _path in endpoints}
        for round_number in range(requests):
            if time.monotonic() > deadline:
                notes.append("time limit reached: %d of %d rounds" % (round_number, requests))
                break
            for label, path in endpoints:
                status, _body, seconds = client.get(path)
                results[label].append(seconds)
                if status != 200:
                    notes.append("%s: HTTP %d" % (label, status))
        return endpoints, results, notes
    finally:
        client.close()


class Client:
    """One keep-alive HTTPS connection; reconnects (and counts it) if the server closes it."""

    def __init__(self, site):
        self.site = site
        self.connection = site.connection()
        self.reconnects = 0

    def get(self, path):
        for attempt in range(2):
            try:
                return timed_request(self.connection, "GET", path)
            except (OSError, http.client.HTTPException):
                if attempt:
                    raise
                self.connection.close()
                self.connection = self.site.connection()
                self.reconnects += 1

    def close(self):
        self.connection.close()


def sanity(client, level, existing):
    """Answers that show the site sees the instance folders; notes when they look wrong."""
    notes = []
    status, body, _ = client.get("/instances")
    listed = [line for line in body.decode().splitlines() if line]
    if status != 200 or len(listed) != level:
        notes.append("/instances: HTTP %d, %d ids listed (expected %d)" % (status, len(listed), level))
    status, body, _ = client.get("/status")
    try:
        figures = json.loads(body)
        if figures.get("instance_count") != level or figures.get("haproxy_count") != "0":
            notes.append("/status: instance_count=%r haproxy_count=%r (expected %d, '0')"
                         % (figures.get("instance_count"), figures.get("haproxy_count"), level))
    except ValueError:
        notes.append("/status: HTTP %d, not JSON: %r" % (status, body[:80]))
    status, body, _ = client.get("/service_status")
    lines = body.decode().splitlines()
    if status != 200 or len(lines) != 2 * level or (level and "DOWN" not in lines[0]):
        notes.append("/service_status: HTTP %d, %d lines (expected %d, instances DOWN)"
                     % (status, len(lines), 2 * level))
    return notes


def measure_level(site, level, existing, missing, requests, warmup, deadline):
    """(endpoints, {label: [seconds...]}, notes) at one level; rounds stop at deadline."""
    endpoints = [
        ("null (python)", "/null", 200),
        ("null (sh)", "/null-sh", 200),
        (WALK, "/null-walk", 200),
        ("GET /status", "/status", 200),
        ("GET /service_status", "/service_status", 200),
        ("GET /instances", "/instances", 200),
        ("GET /instances/<existing>", "/instances/%s" % existing if existing else None, 200),
        ("GET /instances/<missing>", "/instances/%s" % missing, 404),
    ]
    endpoints = [e for e in endpoints if e[1] is not None]
    client = Client(site)
    try:
        notes = sanity(client, level, existing)
        for _ in range(warmup):
            for _label, path, _expected in endpoints:
                client.get(path)
        results = {label: [] for label, _p, _e in endpoints}
        wrong = {label: 0 for label, _p, _e in endpoints}
        # Round-robin, so a slow patch of the machine hits every endpoint alike.
        for round_number in range(requests):
            if time.monotonic() > deadline:
                notes.append("time limit reached: %d of %d rounds measured"
                             % (round_number, requests))
                break
            for label, path, expected in endpoints:
                status, _body, seconds = client.get(path)
                results[label].append(seconds)
                if status != expected:
                    wrong[label] += 1
        for label, _path, expected in endpoints:
            if wrong[label]:
                notes.append("%s: %d of %d answers were not HTTP %d"
                             % (label, wrong[label], len(results[label]), expected))
        if client.reconnects:
            notes.append("the keep-alive connection was re-opened %d times" % client.reconnects)
        return endpoints, results, notes
    finally:
        client.close()


def check_null_routes(site):
    """The null scripts must answer /null and /null-sh, and the API everything else."""
    client = Client(site)
    try:
        for path, body in (("/null", NULL_PY_BODY), ("/null-sh", NULL_SH_BODY)):
            status, data, _ = client.get(path)
            if status != 200 or data.decode() != body:
                raise RuntimeError("%s did not reach the null script: HTTP %d %r"
                                   % (path, status, data[:120]))
        status, data, _ = client.get("/nullx")
        if status != 403 or data.decode().strip() != "Invalid Request":
            raise RuntimeError("/nullx did not reach the API: HTTP %d %r" % (status, data[:120]))
        status, data, _ = client.get("/instances")
        if status != 200:
            raise RuntimeError("/instances: HTTP %d %r" % (status, data[:200]))
    finally:
        client.close()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=30, help="timed requests per endpoint")
    parser.add_argument("--warmup", type=int, default=3, help="untimed requests per endpoint first")
    parser.add_argument("--levels", default="0,100,1000",
                        help="numbers of instance folders, increasing (default %(default)s)")
    parser.add_argument("--running-levels", default="0,100,500",
                        help="numbers of instances with a running haproxy, increasing, for "
                             "/metrics and stats (default %(default)s; empty: skip)")
    parser.add_argument("--max-seconds", type=float, default=900,
                        help="stop measuring after this long, report what was measured")
    parser.add_argument("--keep", action="store_true", help="keep the temporary site folder")
    args = parser.parse_args(argv)
    levels = [int(v) for v in args.levels.split(",")]
    running_levels = [int(v) for v in args.running_levels.split(",") if v.strip()]
    if running_levels != sorted(running_levels) or any(not 0 <= v <= 2000
                                                       for v in running_levels):
        parser.error("--running-levels increasing, 0..2000")
    if args.requests < 1 or args.warmup < 0 or levels != sorted(levels) or levels[0] < 0 \
            or args.requests > 10000 or levels[-1] > 100000:
        parser.error("--requests 1..10000, --warmup >= 0, --levels increasing, 0..100000")

    # SIGTERM (and SIGINT) unwind through the finally clauses: the site is cleaned up.
    signal.signal(signal.SIGTERM, _terminated)
    started = time.monotonic()
    work = tempfile.mkdtemp(prefix="appliance-api-bench-")
    site = None
    try:
        pki_dir = make_pki(os.path.join(work, "pki"))
        null_py = os.path.join(work, "null.py")
        null_sh = os.path.join(work, "null.sh")
        null_walk = os.path.join(work, "null-walk.py")
        with open(null_py, "w") as file:
            file.write(NULL_PY)
        with open(null_sh, "w") as file:
            file.write(NULL_SH)
        site = Site(os.path.join(work, "site"), pki_dir, null_conf(null_py, null_sh, null_walk))
        with open(null_walk, "w") as file:
            file.write(NULL_WALK % site.instances_dir)
        site.start()
        os.makedirs(site.instances_dir, exist_ok=True)
        check_null_routes(site)

        rows, notes, floors = [], [], []
        ids, missing = [], str(uuid.uuid4())
        for level in levels:
            ids += add_instances(site, level - len(ids), len(ids))
            existing = ids[len(ids) // 2] if ids else None
            endpoints, results, level_notes = measure_level(
                site, level, existing, missing, args.requests, args.warmup,
                started + args.max_seconds)
            notes += ["%d instances: %s" % (level, n) for n in level_notes]
            floor_py = median(results["null (python)"])
            floor_sh = median(results["null (sh)"])
            floors.append((level, floor_py, floor_sh))
            if level == 0 or existing is None:
                rows.append((level, "GET /instances/<existing>", "n/a", "n/a", "n/a", "n/a"))
            for label, _path, _expected in endpoints:
                values = results[label]
                rows.append((level, label, ms(median(values)), ms(p90(values)),
                             "%.2fx" % (median(values) / floor_py),
                             ms(median(values) - floor_py)))
            print("  measured %d instances (%.0f s so far)" % (level, time.monotonic() - started),
                  file=sys.stderr, flush=True)
        rows.sort(key=lambda row: (row[0], _order(row[1])))

        # The figure reads, with running haproxy: the folders above go first.
        running_rows = []
        if running_levels:
            shutil.rmtree(site.instances_dir)
            os.makedirs(site.instances_dir)
        running_ids = []
        for level in running_levels:
            running_ids += start_running_instances(site, level - len(running_ids),
                                                   len(running_ids))
            existing = running_ids[len(running_ids) // 2] if running_ids else None
            endpoints, results, level_notes = measure_running_level(
                site, level, existing, args.requests, args.warmup, started + args.max_seconds)
            notes += ["%d running: %s" % (level, n) for n in level_notes]
            floor_py = median(results["null (python)"])
            for label, _path in endpoints:
                values = results[label]
                running_rows.append((level, label, ms(median(values)), ms(p90(values)),
                                     "%.2fx" % (median(values) / floor_py),
                                     ms(median(values) - floor_py)))
            print("  measured %d running haproxy (%.0f s so far)"
                  % (level, time.monotonic() - started), file=sys.stderr, flush=True)

        print()
        print("appliance-api read endpoints through lighttpd %s + TLS (client certificate), "
              "keep-alive HTTP/1.1" % _lighttpd_version())
        print("%d timed requests per endpoint after %d warm-up, round-robin; interpreter %s"
              % (args.requests, args.warmup, sys.executable))
        print()
        print(table(["instances", "endpoint", "median ms", "p90 ms", "ratio to python null",
                     "over python null ms"], rows))
        print()
        if running_rows:
            print("With running haproxy (one frontend, one backend, one checked server "
                  "each); [stats] cli_timeout %s s" % _cli_timeout(site))
            print()
            print(table(["running haproxy", "endpoint", "median ms", "p90 ms",
                         "ratio to python null", "over python null ms"], running_rows))
            print()
        print(table(["instances", "python null median ms", "sh null median ms",
                     "python start cost ms"],
                    [(level, ms(py), ms(sh), ms(py - sh)) for level, py, sh in floors]))
        print()
        if notes:
            print("Notes (answers that looked wrong, limits hit):")
            for note in notes:
                print("  - " + note)
        else:
            print("Every answer had the expected status; /instances, /status and "
                  "/service_status saw every instance folder.")
        print()
        print("Runtime %.0f s. Reproduce: make bench   (or: .venv/bin/python bench/bench.py "
              "--requests %d --warmup %d --levels %s --running-levels %s)"
              % (time.monotonic() - started, args.requests, args.warmup, args.levels,
                 args.running_levels))
        return 0
    except Exception as error:
        print("bench: could not run: %s: %s" % (type(error).__name__, error), file=sys.stderr)
        if site is not None:
            print(site.error_log_tail(), file=sys.stderr)
        return 1
    finally:
        if site is not None:
            stop_running_instances(site)
            site.stop()
        if args.keep:
            print("kept %s" % work, file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


WALK = "floor of /service_status"
ORDER = ["null (sh)", "null (python)", "GET /status", WALK, "GET /service_status", "GET /instances",
         "GET /instances/<existing>", "GET /instances/<missing>"]


def _order(label):
    return ORDER.index(label) if label in ORDER else len(ORDER)


def _cli_timeout(site):
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(
        __file__))), "lib"))
    from appliance_api import config as config_module

    return config_module.load({config_module.ENV_VARIABLE: site.api_config}).get(
        "stats", "cli_timeout")


def _lighttpd_version():
    import subprocess
    try:
        out = subprocess.run(["lighttpd", "-v"], stdout=subprocess.PIPE, timeout=10).stdout
        return out.decode().split()[0].split("/")[1]
    except Exception:
        return "?"


def _terminated(signum, _frame):
    raise KeyboardInterrupt("signal %d" % signum)


if __name__ == "__main__":
    sys.exit(main())
