#!/usr/bin/env python3
"""Hitless-reload benchmark: traffic through an instance's haproxy (then its
stunnel) while the API re-uploads the config (then the certificate).

    .venv/bin/python bench/bench_reload.py [--reloads 50] [--threads 8]
        [--requests-per-thread 600] [--baseline-requests-per-thread 100] [--keep]

Starts a throw-away site with the real lighttpd (tools/devsite.py) and a small
threaded HTTP backend on 127.0.0.1, then through the API (HTTPS, client
certificate):

1. haproxy: PUT /instances/<id>/haproxy, a frontend on {MYIP}:<port> to the
   backend. A baseline load (no reloads) first, then the same load while the
   config is PUT again --reloads times, each upload different (a comment and a
   response header carry a revision number), so each is a real reload. Every
   request is a new TCP connection, so the listener handover is exercised.
2. stunnel: PUT a certificate (localhost.pem: key, certificate, CA) and a stunnel
   config in front of haproxy; a baseline TLS load, then a TLS load while a new
   certificate (fresh key, pre-generated) is PUT --reloads times. A certificate
   PUT reloads every running daemon of the instance: stunnel and haproxy.
3. haproxy ending TLS itself (another instance: `bind ... ssl crt`): the same TLS
   load while a new certificate is PUT --reloads times. haproxy holds that
   certificate, so each PUT swaps it through haproxy's runtime API, no reload.
   Then the same by master-worker reload (the site's [daemons]
   swap_certificates = no), for comparison.
4. haproxy verifying clients (a third instance: `bind ... ssl crt ... verify
   required ca-file client-ca.pem crl-file client.crl.pem`): a TLS load with a
   client certificate while a new CRL (each revoking one more certificate,
   never the load's) is PUT --reloads times; haproxy takes each by its runtime
   API (`set/commit ssl crl-file`).
5. The API's own certificate: GET /status over the API (a new TLS connection
   each, with the client certificate: every one a CGI request in flight for
   tens of ms) from --api-threads threads while PUT /certificate replaces the
   API's certificate --api-certificates times (each a graceful restart of
   lighttpd, conf/lighttpd.conf).

The load is paced: each thread spreads its requests evenly over the estimated
reload window (measured from calibration uploads), so the reloads happen while
traffic flows; after a failed request a thread waits one pacing step rather than
retrying at once (a refused connection fails instantly, and back-to-back retries
would count one outage many times). Failed requests are attributed to the PUT
during (or just after) which they began, and each PUT's outage is timed from its
first failure to its last. Every loop is bounded in count and in time. Prints
what it saw; failures are reported, never asserted. The instance is deleted through the API,
and lighttpd and the backend stopped, even on error.
"""
import argparse
import collections
import hashlib
import http.client
import http.server
import json
import os
import shutil
import signal
import socket
import ssl
import sys
import tempfile
import threading
import time
import uuid

sys.dont_write_bytecode = True  # no bench/__pycache__ in the tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import (ADDRESS, Site, call, free_port, load_ca, make_pki,  # noqa: E402
                      median, ms, p90, pki, table)

HAPROXY_TEMPLATE = """\
# bench/bench_reload.py, revision %(rev)d
global
    maxconn 4096
    hard-stop-after 30s
defaults
    mode http
    option httpclose
    timeout connect 2s
    timeout client 10s
    timeout server 10s
frontend fe
    bind {MYIP}:%(port)d
    http-response set-header X-Bench-Revision %(rev)d
    default_backend be
backend be
    server backend1 127.0.0.1:%(backend)d
"""

# Clients verified against a CA file and a CRL: a CRL PUT swaps it at runtime.
HAPROXY_MUTUAL_TLS_TEMPLATE = HAPROXY_TEMPLATE.replace("%(rev)d", "0").replace(
    "bind {MYIP}:%(port)d\n",
    "bind {MYIP}:%(port)d ssl crt {INSTANCE_DIR}/certificates/localhost.pem verify required "
    "ca-file {INSTANCE_DIR}/certificates/client-ca.pem "
    "crl-file {INSTANCE_DIR}/certificates/client.crl.pem\n")

# TLS ended by haproxy itself: a certificate PUT swaps the certificate in its
# memory through the runtime API, with no reload. The same config, one fixed
# revision, its bind ending TLS.
HAPROXY_TLS_TEMPLATE = HAPROXY_TEMPLATE.replace("%(rev)d", "0").replace(
    "bind {MYIP}:%(port)d\n",
    "bind {MYIP}:%(port)d ssl crt {INSTANCE_DIR}/certificates/localhost.pem\n")

STUNNEL_TEMPLATE = """\
[tls]
accept = {MYIP}:%(port)d
connect = {MYIP}:%(haproxy)d
cert = {INSTANCE_DIR}/certificates/localhost.pem
"""

LEAD_IN = 0.5       # seconds of load before the first reload
MAX_WINDOW = 600.0  # never pace a load over more than this many seconds


# --- the backend -----------------------------------------------------------------

class BackendHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", "3")
        self.end_headers()
        self.wfile.write(b"ok\n")

    def log_message(self, *args):
        pass


class Backend(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512  # the default (5) would drop SYNs under 8 threads


def start_backend():
    server = Backend((ADDRESS, free_port()), BackendHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                              daemon=True)
    thread.start()
    return server, thread


# --- load ----------------------------------------------------------------------

def plain_request(port, timeout):
    connection = http.client.HTTPConnection(ADDRESS, port, timeout=timeout)
    try:
        connection.request("GET", "/", headers={"Connection": "close"})
        response = connection.getresponse()
        body = response.read()
        return response.status, body, None
    finally:
        connection.close()


def tls_requester(context, path="/"):
    """A request over a new TLS connection: GET / of the backend's "ok", or
    GET /status of the API (a JSON object with api_certificate_days_left
    counts as the "ok")."""
    def tls_request(port, timeout):
        connection = http.client.HTTPSConnection(ADDRESS, port, timeout=timeout, context=context)
        try:
            connection.request("GET", path, headers={"Connection": "close"})
            peer = hashlib.sha256(connection.sock.getpeercert(binary_form=True)).hexdigest()
            response = connection.getresponse()
            body = response.read()
            if path == "/status" and b'"api_certificate_days_left"' in body:
                body = b"ok\n"
            return response.status, body, peer
        finally:
            connection.close()
    return tls_request


def classify(error):
    if isinstance(error, ConnectionRefusedError):
        return "refused"
    if isinstance(error, (socket.timeout, TimeoutError)):
        return "timeout"
    if isinstance(error, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError,
                          http.client.RemoteDisconnected, ssl.SSLEOFError,
                          ssl.SSLZeroReturnError)):
        return "reset/closed"
    if isinstance(error, ssl.SSLError):
        return "tls error"
    return "other (%s)" % type(error).__name__


class Load:
    """threads x per_thread requests, request i of a thread due at start + i * step,
    stopped anyway at the hard deadline. Thread-safe tallies."""

    def __init__(self, request, port, threads, per_thread, window, timeout):
        self.request, self.port, self.timeout = request, port, timeout
        self.threads, self.per_thread = threads, per_thread
        self.step = window / per_thread if per_thread else 0.0
        self.deadline_after = window + 60.0 + per_thread * timeout / 4
        self.lock = threading.Lock()
        self.sent = 0
        self.ok = 0
        self.failures = collections.Counter()
        self.failure_spans = []
        self.statuses = collections.Counter()
        self.peers = {}  # certificate SHA-256 -> monotonic time it was first served
        self.latencies = []
        self.stopped_early = False
        self.started = self.ended = None
        self._workers = []

    def start(self):
        self.started = time.monotonic()
        for number in range(self.threads):
            offset = self.step * number / max(1, self.threads)
            worker = threading.Thread(target=self._run, args=(offset,), daemon=True)
            worker.start()
            self._workers.append(worker)
        return self

    def join(self):
        for worker in self._workers:
            worker.join(max(0.0, self.started + self.deadline_after + 30 - time.monotonic()))
        self.ended = time.monotonic()
        return self

    def _run(self, offset):
        deadline = self.started + self.deadline_after
        for number in range(self.per_thread):
            due = self.started + offset + number * self.step
            now = time.monotonic()
            if now > deadline:
                with self.lock:
                    self.stopped_early = True
                return
            if due > now:
                time.sleep(due - now)
            began = time.monotonic()
            kind = None
            try:
                status, body, peer = self.request(self.port, self.timeout)
                if status != 200 or body != b"ok\n":
                    kind = "HTTP %d" % status
            except Exception as error:  # every failure is a figure, not a crash
                kind, peer = classify(error), None
            finished = time.monotonic()
            with self.lock:
                self.sent += 1
                if kind is None:
                    self.ok += 1
                    self.latencies.append(finished - began)
                    if peer and peer not in self.peers:
                        self.peers[peer] = finished
                else:
                    self.failures[kind] += 1
                    self.failure_spans.append((began, finished, kind))
            if kind is not None:
                # No back-to-back retries: a refused connection fails at once, and a thread
                # behind its schedule would otherwise count one outage many times over.
                time.sleep(max(self.step, 0.01))

    @property
    def failed(self):
        return sum(self.failures.values())


# --- the API ------------------------------------------------------------------

class Reloads:
    """PUTs of a sequence of bodies, timed; each a (start, end, status, body)."""

    def __init__(self):
        self.puts = []

    def run(self, site, path, bodies):
        for body in bodies:
            started = time.monotonic()
            try:
                status, text, _ = call(site, "PUT", path, body, timeout=120)
            except Exception as error:
                status, text = 0, "%s: %s" % (type(error).__name__, error)
            self.puts.append((started, time.monotonic(), status, text))
        return self

    def seconds(self):
        return [end - start for start, end, _s, _t in self.puts]

    def bad(self, expected=201):
        return [(status, text) for _a, _b, status, text in self.puts if status != expected]


def put_ok(site, path, body, what):
    status, text, seconds = call(site, "PUT", path, body, timeout=120)
    if status != 201:
        raise RuntimeError("PUT %s (%s): HTTP %d\n%s" % (path, what, status, text))
    return text, seconds


def requests_counted(site, instance_path):
    """The kept requests_total of the instance's frontend (GET .../stats)."""
    status, text, _ = call(site, "GET", instance_path + "/stats")
    if status != 200:
        raise RuntimeError("GET stats answered HTTP %d %r" % (status, text[:200]))
    return sum(f["requests_total"] or 0 for f in json.loads(text)["frontends"])


def counter_loss(phase, counted, reloads):
    """What the kept counters missed of the requests haproxy answered during the
    phase (baseline and reload load): each old worker serves a little after
    the reload's last read of it, and exits before the next."""
    served = phase["load"].ok + (phase["baseline"].ok if "baseline" in phase else 0)
    lost = served - counted
    return ("kept counters over the haproxy phase: %d requests answered, requests_total "
            "rose by %d: %d lost over %d reloads (%.2f a reload, %.3f%% of the requests)"
            % (served, counted, lost, reloads, lost / reloads, 100.0 * lost / max(1, served)))


def read_pid(path):
    try:
        with open(path) as file:
            return int(file.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def children(pid):
    import psutil
    try:
        return sorted(c.pid for c in psutil.Process(pid).children()
                      if c.status() != psutil.STATUS_ZOMBIE)
    except (psutil.Error, TypeError):
        return []


def make_listener_cert(ca_cert, ca_key):
    """(PEM: key (PKCS#8), certificate (CN localhost), then the CA: the API's order;
    SHA-256 of the certificate's DER, as a TLS client sees it)."""
    from cryptography.hazmat.primitives import serialization as s
    cert, key = pki.make_leaf(ca_cert, ca_key, "localhost", server=True,
                              sans=["localhost", ADDRESS])
    pem = (key.private_bytes(s.Encoding.PEM, s.PrivateFormat.PKCS8, s.NoEncryption())
           + cert.public_bytes(s.Encoding.PEM) + ca_cert.public_bytes(s.Encoding.PEM))
    return pem, hashlib.sha256(cert.public_bytes(s.Encoding.DER)).hexdigest()


# --- one phase: a baseline load, then a load with reloads -----------------------

def certificate_phase(name, site, request, port, cert_path, args, ca, put):
    """A phase of certificate changes: reloads + 2 fresh certificates, two
    untimed PUTs to calibrate, then one timed PUT each. (the phase, the
    certificates the timed PUTs uploaded: [(PEM, fingerprint)])."""
    certificates = [make_listener_cert(*ca) for _ in range(args.reloads + 2)]
    calibration = [put_ok(site, cert_path, pem, "calibration")[1]
                   for pem, _f in certificates[:2]]
    phase = run_phase(name, site, request, port, cert_path,
                      [pem for pem, _f in certificates[2:]], args, calibration)
    phase["put"] = put
    return phase, certificates[2:]


def run_phase(name, site, request, port, put_path, bodies, args, calibration):
    """Baseline load, then the paced load while bodies are PUT. A dict of figures."""
    result = {"name": name}
    if args.baseline_requests_per_thread:
        baseline = Load(request, port, args.threads, args.baseline_requests_per_thread,
                        0.0, args.timeout).start().join()
        result["baseline"] = baseline
    # Pace the load over the time the reloads should take, plus lead-in and tail.
    estimate = median(calibration) * len(bodies)
    window = min(MAX_WINDOW, LEAD_IN + estimate * 1.15 + 1.0)
    load = Load(request, port, args.threads, args.requests_per_thread, window,
                args.timeout).start()
    time.sleep(LEAD_IN)
    reloads = Reloads().run(site, put_path, bodies)
    load.join()
    result.update(load=load, reloads=reloads, window=window, estimate=estimate)
    return result


MARGIN = 0.5  # a failure up to this long after a PUT's answer still counts as its own


def by_reload(load, reloads):
    """The failed requests of load, per PUT: those that began after the PUT started
    (and after any later PUT started: then they are that one's) and no later than
    MARGIN after its answer. Lists of (start, end)."""
    puts = reloads.puts
    found = [[] for _ in puts]
    for began, finished, _kind in load.failure_spans:
        latest = None
        for index, (start, _end, _s, _t) in enumerate(puts):
            if start <= began:
                latest = index
        if latest is not None and began <= puts[latest][1] + MARGIN:
            found[latest].append((began, finished))
    return found


def failures_near_reloads(load, reloads):
    return sum(len(spans) for spans in by_reload(load, reloads))


def outages(load, reloads):
    """Per PUT: (its failed requests, seconds from the first one's start to the last
    one's end: about how long the service refused or dropped connections)."""
    return [(len(spans), max(b for _a, b in spans) - min(a for a, _b in spans) if spans else 0.0)
            for spans in by_reload(load, reloads)]


def load_rows(label, load, reloads=None):
    failures = ", ".join("%s %d" % kv for kv in sorted(load.failures.items())) or "-"
    covered = "-"
    if reloads is not None:
        covered = "%d/%d" % (sum(1 for _s, end, _st, _t in reloads.puts if end <= load.ended),
                             len(reloads.puts))
    rate = load.sent / (load.ended - load.started) if load.ended > load.started else 0.0
    near = failures_near_reloads(load, reloads) if reloads is not None else "-"
    return [label, load.sent, load.ok, load.failed,
            "%.3f%%" % (100.0 * load.failed / load.sent) if load.sent else "-",
            near, "%.0f" % rate, ms(median(load.latencies)), ms(p90(load.latencies)),
            covered, failures]


LOAD_HEADERS = ["run", "requests sent", "ok", "failed", "failed %", "failed during a PUT",
                "req/s", "median ms", "p90 ms", "reloads inside load", "failures by kind"]


def report(phases, pids, extra_notes, args, started):
    print()
    print("Hitless-reload benchmark: %d client threads, a new connection per request, "
          "%.1f s timeout; %d reloads" % (args.threads, args.timeout, args.reloads))
    print("Loads during PUTs are paced over the expected reload time; after a failed request "
          "a thread waits\none pacing step, so an outage is not counted over and over by "
          "back-to-back retries.")
    print()
    rows = []
    for phase in phases:
        if "baseline" in phase:
            rows.append(load_rows("%s, no reload (baseline)" % phase["name"], phase["baseline"]))
        rows.append(load_rows("%s, during %d PUTs" % (phase["name"], len(phase["reloads"].puts)),
                              phase["load"], phase["reloads"]))
    print(table(LOAD_HEADERS, rows))
    print()
    rows = []
    for phase in phases:
        seconds = phase["reloads"].seconds()
        bad = phase["reloads"].bad()
        rows.append([phase["put"], len(seconds), len(seconds) - len(bad), ms(median(seconds)),
                     ms(p90(seconds)), ms(max(seconds) if seconds else float("nan")),
                     "%.1f" % phase["window"]])
    print(table(["reload (PUT round-trip)", "PUTs", "201", "median ms", "p90 ms", "max ms",
                 "load paced over s"], rows))
    print()
    rows = []
    for phase in phases:
        found = outages(phase["load"], phase["reloads"])
        counts = [n for n, _w in found]
        windows = [w for n, w in found if n]
        load = phase["load"]
        rows.append([phase["name"], "%d/%d" % (len(windows), len(found)),
                     "%g" % median(counts) if counts else "-", max(counts) if counts else "-",
                     ms(median(windows)) if windows else "-",
                     ms(max(windows)) if windows else "-",
                     "%.1f / %.1f" % (load.ended - load.started, phase["window"])])
    print(table(["run (during PUTs)", "PUTs with failures", "failed per PUT median",
                 "max", "outage per PUT median ms", "max ms", "load ran / paced s"], rows))
    print("  A failed request counts for the latest PUT that started before it, if it began no "
          "later than %.1f s\n  after that PUT's answer; outage = that PUT's first failure's "
          "start to its last failure's end." % MARGIN)
    print()
    print(table(["process", "pid before", "pid after", "same", "note"],
                [[n, b or "-", a or "-", "yes" if b and b == a else "NO", note]
                 for n, b, a, note in pids]))
    for phase in phases:
        for status, text in phase["reloads"].bad()[:3]:
            extra_notes.append("%s: a PUT answered HTTP %d: %s"
                               % (phase["put"], status, " | ".join(text.splitlines()[:4])))
        load = phase["load"]
        if load.ended - load.started > 1.1 * phase["window"] and load.failed:
            extra_notes.append(
                "%s: the load could not keep its pace (%.0f s instead of %.0f s: the 2 cores "
                "are busy), so its threads mostly sent back to back; the count of failed "
                "requests depends on the load's rate, the outage times less so."
                % (phase["name"], load.ended - load.started, phase["window"]))
        if phase["load"].stopped_early:
            extra_notes.append("%s: the load hit its time limit and stopped early" % phase["name"])
    if extra_notes:
        print()
        print("Notes:")
        for note in extra_notes:
            print("  - " + note)
    print()
    print("Runtime %.0f s. Reproduce: make bench-reload   (or: .venv/bin/python "
          "bench/bench_reload.py --reloads %d --threads %d --requests-per-thread %d "
          "--baseline-requests-per-thread %d)"
          % (time.monotonic() - started, args.reloads, args.threads, args.requests_per_thread,
             args.baseline_requests_per_thread))


# --- main -----------------------------------------------------------------------

def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reloads", type=int, default=50)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--requests-per-thread", type=int, default=600)
    parser.add_argument("--baseline-requests-per-thread", type=int, default=100,
                        help="requests per thread with no reload first (0: skip)")
    parser.add_argument("--timeout", type=float, default=2.0, help="per request, seconds")
    parser.add_argument("--skip-stunnel", action="store_true")
    parser.add_argument("--skip-haproxy-tls", action="store_true")
    parser.add_argument("--skip-crl", action="store_true")
    parser.add_argument("--api-certificates", type=int, default=10,
                        help="PUT /certificate rotations under load (0: skip)")
    parser.add_argument("--api-threads", type=int, default=4)
    parser.add_argument("--api-requests-per-thread", type=int, default=150)
    parser.add_argument("--keep", action="store_true", help="keep the temporary site folder")
    args = parser.parse_args(argv)
    if not (1 <= args.reloads <= 1000 and 1 <= args.threads <= 64
            and 1 <= args.requests_per_thread <= 100000
            and 0 <= args.baseline_requests_per_thread <= 100000 and 0 < args.timeout <= 30):
        parser.error("--reloads 1..1000, --threads 1..64, --requests-per-thread 1..100000, "
                     "--timeout 0..30")

    # SIGTERM (and SIGINT) unwind through the finally clauses: the site is cleaned up.
    signal.signal(signal.SIGTERM, _terminated)
    started = time.monotonic()
    work = tempfile.mkdtemp(prefix="appliance-api-bench-reload-")
    site = backend = None
    instances = []  # (API path, folder) of each instance made, for the cleanup
    try:
        pki_dir = make_pki(os.path.join(work, "pki"))
        ca_cert, ca_key = load_ca(pki_dir)
        site = Site(os.path.join(work, "site"), pki_dir).start()
        backend, _thread = start_backend()
        backend_port = backend.server_address[1]
        haproxy_port = free_port()
        stunnel_port = next(port for port in (free_port() for _ in range(10))
                            if port not in (haproxy_port, backend_port))

        instance_id = str(uuid.uuid4())
        instance_path = "/instances/" + instance_id
        instance_dir = os.path.join(site.instances_dir, instance_id)
        instances.append((instance_path, instance_dir))
        haproxy_pid_file = os.path.join(instance_dir, "haproxy.pid")
        stunnel_pid_file = os.path.join(instance_dir, "stunnel.pid")

        def haproxy_config(rev):
            return (HAPROXY_TEMPLATE % {"rev": rev, "port": haproxy_port,
                                        "backend": backend_port}).encode()

        phases, pids, notes = [], [], []
        # -- haproxy --
        text, _ = put_ok(site, instance_path + "/haproxy", haproxy_config(0), "first config")
        log("haproxy up: " + " | ".join(text.splitlines()))
        status, body, _ = plain_request(haproxy_port, 5)
        if status != 200 or body != b"ok\n":
            raise RuntimeError("haproxy frontend answered HTTP %d %r" % (status, body))
        calibration = [put_ok(site, instance_path + "/haproxy", haproxy_config(rev),
                              "calibration")[1] for rev in (1, 2)]
        master_before = read_pid(haproxy_pid_file)
        workers_before = children(master_before)
        counted_before = requests_counted(site, instance_path)
        phase = run_phase("haproxy", site, plain_request, haproxy_port,
                          instance_path + "/haproxy",
                          [haproxy_config(rev) for rev in range(3, 3 + args.reloads)],
                          args, calibration)
        phase["put"] = "PUT /instances/<id>/haproxy"
        phases.append(phase)
        master_after = read_pid(haproxy_pid_file)
        time.sleep(1.0)
        workers_after = children(master_after)
        notes.append(counter_loss(phase, requests_counted(site, instance_path) - counted_before,
                                  args.reloads))
        pids.append(("haproxy master (config phase)", master_before, master_after,
                     "workers before %s, 1 s after the last reload %s"
                     % (_pids(workers_before), _pids(workers_after))))
        log("haproxy phase done (%.0f s)" % (time.monotonic() - started))

        # -- stunnel --
        if not args.skip_stunnel:
            cert_path = instance_path + "/certificates/localhost.pem"
            text, _ = put_ok(site, cert_path, make_listener_cert(ca_cert, ca_key)[0],
                             "first certificate")
            stunnel_config = (STUNNEL_TEMPLATE % {"port": stunnel_port,
                                                  "haproxy": haproxy_port}).encode()
            text, _ = put_ok(site, instance_path + "/stunnel", stunnel_config, "stunnel config")
            log("stunnel up: " + " | ".join(text.splitlines()))
            context = ssl.create_default_context(cafile=os.path.join(pki_dir, "ca.pem"))
            tls_request = tls_requester(context)
            status, body, _ = tls_request(stunnel_port, 5)
            if status != 200 or body != b"ok\n":
                raise RuntimeError("stunnel answered HTTP %d %r" % (status, body))
            stunnel_before = read_pid(stunnel_pid_file)
            master_before = read_pid(haproxy_pid_file)
            phase, certificates = certificate_phase(
                "stunnel (TLS)", site, tls_request, stunnel_port, cert_path, args,
                (ca_cert, ca_key), "PUT /instances/<id>/certificates/localhost.pem")
            phases.append(phase)
            stunnel_after = read_pid(stunnel_pid_file)
            master_after = read_pid(haproxy_pid_file)
            time.sleep(1.0)
            pids.append(("stunnel (certificate phase)", stunnel_before, stunnel_after,
                         "SIGHUP: same process; the listeners the API handed it stay open"))
            pids.append(("haproxy master (certificate phase)", master_before, master_after,
                         "a certificate PUT reloads haproxy too; workers now %s"
                         % _pids(children(master_after))))
            uploaded = [f for _p, f in certificates]
            seen = phase["load"].peers
            lags = [seen[f] - put[1] for f, put in zip(uploaded, phase["reloads"].puts)
                    if f in seen]
            notes.append("the TLS load was served %d of the %d certificates uploaded while it "
                         "ran (%d distinct certificates seen in all); a new certificate was "
                         "first served a median %s ms after its PUT's answer (max %s ms; "
                         "negative: before the answer)"
                         % (len(set(seen) & set(uploaded)), len(uploaded), len(seen),
                            ms(median(lags)), ms(max(lags)) if lags else "-"))
            final = None
            for _attempt in range(5):
                try:
                    final = tls_request(stunnel_port, 5)[2]
                    break
                except Exception:
                    time.sleep(0.2)
            last_ok = max((i for i, put in enumerate(phase["reloads"].puts) if put[2] == 201),
                          default=None)
            expected = uploaded[last_ok] if last_ok is not None else None
            notes.append("after the last PUT stunnel serves the last certificate the API "
                         "accepted: %s" % ("yes" if final and final == expected else
                                           "NO (served %s, expected %s)"
                                           % ((final or "nothing")[:12], (expected or "?")[:12])))
        log("stunnel phase done (%.0f s)" % (time.monotonic() - started))

        # -- TLS ended by haproxy (another instance) --
        if not args.skip_haproxy_tls:
            tls_id = str(uuid.uuid4())
            tls_path = "/instances/" + tls_id
            instances.append((tls_path, os.path.join(site.instances_dir, tls_id)))
            tls_port = next(port for port in (free_port() for _ in range(10))
                            if port not in (haproxy_port, backend_port, stunnel_port))
            cert_path = tls_path + "/certificates/localhost.pem"
            put_ok(site, cert_path, make_listener_cert(ca_cert, ca_key)[0], "first certificate")
            text, _ = put_ok(site, tls_path + "/haproxy", (HAPROXY_TLS_TEMPLATE % {
                "port": tls_port, "backend": backend_port}).encode(), "haproxy TLS config")
            log("haproxy (TLS) up: " + " | ".join(text.splitlines()))
            context = ssl.create_default_context(cafile=os.path.join(pki_dir, "ca.pem"))
            tls_request = tls_requester(context)
            tls_pid_file = os.path.join(site.instances_dir, tls_id, "haproxy.pid")
            master_before = read_pid(tls_pid_file)
            workers_before = children(master_before)
            phase, certificates = certificate_phase(
                "haproxy (TLS)", site, tls_request, tls_port, cert_path, args,
                (ca_cert, ca_key), "PUT /instances/<id>/certificates/localhost.pem (haproxy TLS)")
            phases.append(phase)
            master_after = read_pid(tls_pid_file)
            pids.append(("haproxy master (TLS phase)", master_before, master_after,
                         "runtime API: workers before %s, after %s (no reload: the same)"
                         % (_pids(workers_before), _pids(children(master_after)))))
            notes.append(serves_the_last("haproxy", phase, certificates,
                                         tls_request(tls_port, 5)[2]))
            # The same by master-worker reload: [daemons] swap_certificates = no.
            with open(site.api_config, "a") as file:
                file.write("[daemons]\nswap_certificates = no\n")
            reload_phase, more = certificate_phase(
                "haproxy (TLS, reload)", site, tls_request, tls_port, cert_path, args,
                (ca_cert, ca_key), "PUT /instances/<id>/certificates/localhost.pem "
                "(haproxy TLS, reload)")
            phases.append(reload_phase)
            notes.append(serves_the_last("haproxy, by reload,", reload_phase, more,
                                         tls_request(tls_port, 5)[2]))
            log("haproxy (TLS) phase done (%.0f s)" % (time.monotonic() - started))
        if args.api_certificates:
            api_certificate_phase(site, args, pki_dir, (ca_cert, ca_key), phases, pids, notes)
            log("API certificate phase done (%.0f s)" % (time.monotonic() - started))
        if not args.skip_crl:
            crl_phase(site, args, pki_dir, (ca_cert, ca_key), backend_port, instances,
                      phases, pids, notes)
            log("CRL phase done (%.0f s)" % (time.monotonic() - started))
        report(phases, pids, notes, args, started)
        return 0
    except Exception as error:
        print("bench_reload: could not run: %s: %s" % (type(error).__name__, error),
              file=sys.stderr)
        if site is not None:
            print(site.error_log_tail(), file=sys.stderr)
        return 1
    finally:
        cleanup(site, backend, instances)
        if args.keep:
            print("kept %s" % work, file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


def crl_phase(site, args, pki_dir, ca, backend_port, instances, phases, pids, notes):
    """Phase 4: a TLS load with a client certificate of the site's CA through
    an haproxy that verifies it against client-ca.pem and client.crl.pem,
    while a new CRL is PUT --reloads times."""
    import types

    from cryptography.hazmat.primitives.serialization import Encoding

    instance_id = str(uuid.uuid4())
    path = "/instances/" + instance_id
    instances.append((path, os.path.join(site.instances_dir, instance_id)))
    port = free_port()
    ca_pem = ca[0].public_bytes(Encoding.PEM)

    def crl(revoked):  # serials the load's client certificate never has
        return pki.make_crl(*ca, [types.SimpleNamespace(serial_number=n)
                                  for n in range(1, revoked + 1)])

    put_ok(site, path + "/certificates/localhost.pem", make_listener_cert(*ca)[0],
           "listener certificate")
    put_ok(site, path + "/certificates/client-ca.pem", ca_pem, "client CA file")
    put_ok(site, path + "/certificates/client.crl.pem", crl(0), "first CRL")
    put_ok(site, path + "/haproxy", (HAPROXY_MUTUAL_TLS_TEMPLATE % {
        "port": port, "backend": backend_port}).encode(), "haproxy mutual TLS config")
    context = ssl.create_default_context(cafile=os.path.join(pki_dir, "ca.pem"))
    context.load_cert_chain(os.path.join(pki_dir, "client.pem"))
    tls_request = tls_requester(context)
    status, body, _ = tls_request(port, 5)
    if status != 200 or body != b"ok\n":
        raise RuntimeError("haproxy (client certificates) answered HTTP %d %r" % (status, body))
    crl_path = path + "/certificates/client.crl.pem"
    calibration = [put_ok(site, crl_path, crl(n), "calibration")[1] for n in (1, 2)]
    pid_file = os.path.join(site.instances_dir, instance_id, "haproxy.pid")
    master_before = read_pid(pid_file)
    workers_before = children(master_before)
    phase = run_phase("haproxy (CRL)", site, tls_request, port, crl_path,
                      [crl(n) for n in range(3, 3 + args.reloads)], args, calibration)
    phase["put"] = "PUT /instances/<id>/certificates/client.crl.pem"
    phases.append(phase)
    master_after = read_pid(pid_file)
    pids.append(("haproxy master (CRL phase)", master_before, master_after,
                 "runtime API: workers before %s, after %s (no reload: the same)"
                 % (_pids(workers_before), _pids(children(master_after)))))
    swapped = sum("without a reload" in text for _a, _b, _s, text in phase["reloads"].puts)
    notes.append("CRL phase: %d of %d CRL PUTs were taken by haproxy's runtime API"
                 % (swapped, len(phase["reloads"].puts)))


def api_certificate_phase(site, args, pki_dir, ca, phases, pids, notes):
    """Phase 5: GET /status through lighttpd while PUT /certificate rotates
    the API's own certificate."""
    from cryptography.hazmat.primitives import serialization as s

    def api_certificate():
        cert, key = pki.make_leaf(*ca, pki.SERVER_NAME, server=True, sans=[ADDRESS])
        return (key.private_bytes(s.Encoding.PEM, s.PrivateFormat.PKCS8, s.NoEncryption())
                + cert.public_bytes(s.Encoding.PEM)), \
            hashlib.sha256(cert.public_bytes(s.Encoding.DER)).hexdigest()

    context = ssl.create_default_context(cafile=os.path.join(pki_dir, "ca.pem"))
    context.load_cert_chain(os.path.join(pki_dir, "client.pem"))
    status_request = tls_requester(context, "/status")
    certificates = [api_certificate() for _ in range(args.api_certificates + 2)]
    calibration = [put_ok(site, "/certificate", pem, "calibration")[1]
                   for pem, _f in certificates[:2]]
    lighttpd_before = site.process.pid
    load_args = argparse.Namespace(**vars(args))
    load_args.threads, load_args.requests_per_thread = args.api_threads, \
        args.api_requests_per_thread
    load_args.baseline_requests_per_thread = min(args.baseline_requests_per_thread, 20)
    phase = run_phase("API (PUT /certificate)", site, status_request, site.port, "/certificate",
                      [pem for pem, _f in certificates[2:]], load_args, calibration)
    phase["put"] = "PUT /certificate"
    phases.append(phase)
    pids.append(("lighttpd (API certificate phase)", lighttpd_before,
                 site.process.pid if site.process.poll() is None else None,
                 "SIGUSR1: restarted in place; a forked copy finishes the requests in flight"))
    notes.append(serves_the_last("lighttpd", phase, certificates[2:],
                                 status_request(site.port, 5)[2]))


def serves_the_last(daemon, phase, certificates, served):
    """A note: whether the certificate served now is the last one accepted."""
    uploaded = [fingerprint for _pem, fingerprint in certificates]
    last_ok = max((i for i, put in enumerate(phase["reloads"].puts) if put[2] == 201),
                  default=None)
    return "after the last PUT %s serves the last certificate the API accepted: %s" % (
        daemon, "yes" if last_ok is not None and served == uploaded[last_ok] else "NO")


def cleanup(site, backend, instances):
    """DELETE the instances through the API; if that fails, stop their daemons by
    the pids in their pid files (only if they are the haproxy/stunnel on its config)."""
    try:
        for instance_path, _folder in instances:
            if site is not None and site.process is not None:
                status, text, _ = call(site, "DELETE", instance_path, timeout=60)
                log("DELETE %s: HTTP %d: %s" % (instance_path, status,
                                                " | ".join(text.splitlines())))
    except Exception as error:
        log("DELETE failed: %s" % error)
    finally:
        for _path, instance_dir in instances:
            _kill_leftovers(instance_dir)
        if site is not None:
            site.stop()
        if backend is not None:
            backend.shutdown()
            backend.server_close()


def _kill_leftovers(instance_dir):
    import psutil
    for service, names in (("stunnel", ("stunnel4", "stunnel")), ("haproxy", ("haproxy",))):
        pid = read_pid(os.path.join(instance_dir, service + ".pid"))
        if not pid:
            continue
        try:
            process = psutil.Process(pid)
            if process.name() in names and any(instance_dir in a for a in process.cmdline()):
                log("stopping leftover %s pid %d" % (service, pid))
                process.send_signal(signal.SIGTERM)
                process.wait(5)
        except psutil.Error:
            pass


def _pids(pids):
    return ",".join(str(p) for p in pids) or "none"


def log(message):
    print("  " + message, file=sys.stderr, flush=True)


def _terminated(signum, _frame):
    raise KeyboardInterrupt("signal %d" % signum)


if __name__ == "__main__":
    sys.exit(main())
