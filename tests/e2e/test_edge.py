"""The HTTP edge as ordinary clients meet it: curl with its defaults (which
would take HTTP/2 where offered) and with --http1.1, silent connections
held open by someone else, and a burst of changes far over the cap."""
import concurrent.futures
import os
import socket
import threading
import time
import uuid

import psutil
import pytest

from .helpers import eventually, free_port, haproxy_template
from .test_certificates import listener_certificate
from .conftest import pki_tool

# curl's own default first: ALPN offers h2 and takes what the server picks.
WAYS = {"curl-default": (), "http1.1": ("--http1.1",)}


@pytest.mark.parametrize("way", list(WAYS))
def test_every_kind_of_call_works_with_curl_defaults_and_http1(api, backend, instance_id, way):
    """HTTP/2 is off (conf/lighttpd.conf): curl's default negotiates HTTP/1.1
    by ALPN, and every answer, the 413 included, is the contract's."""
    flags = WAYS[way]
    base = "/instances/" + instance_id
    ca = pki_tool.make_ca("tenant CA")
    certificate = listener_certificate(ca)[0]

    def check(reply, status, body=None):
        assert reply.status == status, reply
        assert reply.http_version == "1.1", reply
        if body is not None:
            assert reply.body == body, reply

    check(api.put(base + "/certificates/localhost.pem", certificate, *flags), 201)
    check(api.put(base + "/certificates/localhost.pem", listener_certificate(ca)[0],
                  "-H", "Expect:", *flags), 201)
    check(api.put(base + "/haproxy", haproxy_template(free_port(), backend.port), *flags), 201)
    page = b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain\r\n\r\nsorry\n"
    check(api.put(base + "/custom503", page, *flags), 201)

    for path in ("/status", "/service_status", "/instances", base, base + "/haproxy",
                 base + "/custom503", base + "/certificates/localhost.pem"):
        check(api.get(path, *flags), 200)
    check(api.get(base + "/stunnel", *flags), 404, "Not Found\n")

    oversize = api.upload_file(b"x" * (8 << 20))
    for expect in ((), ("-H", "Expect:")):
        reply = api.request("-X", "PUT", "-T", oversize, *expect, *flags,
                            api.url(base + "/custom503"))
        check(reply, 413)
    check(api.get(base + "/custom503", *flags), 200, page.decode())

    check(api.delete(base + "/custom503", *flags), 200)
    check(api.delete(base, *flags), 200)
    check(api.get(base, *flags), 404, "Not Found\n")


def test_http2_is_not_offered(api):
    reply = api.request("--http2", "-v", api.url("/instances"))
    assert reply.http_version == "1.1"
    assert "ALPN: server accepted http/1.1" in reply.stderr, reply.stderr


def test_the_controller_gets_in_while_300_idle_connections_are_held(api):
    """Silent TCP connections from another source (no certificate is needed to
    open one) must not lock the controller out: held 20 s, renewed as lighttpd
    closes them, while the controller's GET /status answers within 5 s."""
    idle = []
    stop = threading.Event()

    def hold():
        while not stop.is_set():
            while len(idle) < 300 and not stop.is_set():
                sock = socket.socket()
                sock.bind(("127.0.0.2", 0))
                sock.settimeout(2)
                try:
                    sock.connect(("127.0.0.1", api.port))
                except OSError:
                    sock.close()
                    break
                idle.append(sock)
            for sock in list(idle):  # what lighttpd closed is opened again
                try:
                    sock.setblocking(False)
                    if sock.recv(1) == b"":
                        idle.remove(sock)
                        sock.close()
                except BlockingIOError:
                    pass
                except OSError:
                    idle.remove(sock)
                    sock.close()
            time.sleep(0.2)

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    try:
        assert eventually(lambda: len(idle) >= 300, 10), len(idle)
        deadline = time.monotonic() + 20
        times = []
        while time.monotonic() < deadline:
            started = time.monotonic()
            reply = api.request("--max-time", "5", api.url("/status"))
            times.append(time.monotonic() - started)
            assert reply.status == 200, reply
            time.sleep(1)
        assert max(times) < 5, times
        assert len(times) >= 10
    finally:
        stop.set()
        holder.join(10)
        for sock in idle:
            sock.close()
    print("GET /status with 300 idle connections held: max %.3f s over %d calls"
          % (max(times), len(times)))


def _api_processes(lighttpd):
    """The CGI processes lighttpd started (and anything they started)."""
    try:
        return lighttpd.children(recursive=True)
    except psutil.Error:
        return []


def _memory_kib(pid):
    """(PSS, RSS) of a process in KiB; PSS shares the interpreter's pages out fairly."""
    found = {}
    try:
        with open("/proc/%d/smaps_rollup" % pid) as rollup:
            for line in rollup:
                if line.startswith(("Pss:", "Rss:")):
                    found[line.split(":")[0]] = int(line.split()[1])
    except OSError:
        pass
    return found.get("Pss", 0), found.get("Rss", 0)


# The figure the README states for this burst (tests/e2e/test_edge.py).
PEAK_PSS_LIMIT_MIB = 600


def test_200_concurrent_certificate_puts_stay_under_the_memory_cap(api):
    """200 certificate PUTs on 200 instances at once: each answer is 201 or
    503 with Retry-After; a 503 left nothing; the API's processes together
    stay under PEAK_PSS_LIMIT_MIB (proportional set size, sampled every 20 ms);
    and a retry of each 503 succeeds."""
    ca = pki_tool.make_ca("tenant CA")
    bundle = listener_certificate(ca)[0]
    upload = api.upload_file(bundle)
    instances = [str(uuid.uuid4()) for _ in range(200)]
    lighttpd = psutil.Process(api.process.pid)
    peak = {"pss": 0, "rss": 0, "processes": 0}
    sampling = threading.Event()

    def sample():
        while not sampling.is_set():
            processes = [p for p in _api_processes(lighttpd) if p.pid != lighttpd.pid]
            sizes = [_memory_kib(p.pid) for p in processes]
            peak["pss"] = max(peak["pss"], sum(pss for pss, _ in sizes))
            peak["rss"] = max(peak["rss"], sum(rss for _, rss in sizes))
            peak["processes"] = max(peak["processes"], len(processes))
            time.sleep(0.02)

    def put(instance):
        path = "/instances/%s/certificates/localhost.pem" % instance
        return api.request("-D", "-", "-X", "PUT", "-T", upload, api.url(path))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=200) as pool:
            replies = list(pool.map(put, instances))
    finally:
        sampling.set()
        sampler.join(5)
    busy = [i for i, r in zip(instances, replies) if r.status == 503]
    assert all(r.status in (201, 503) for r in replies), [r for r in replies
                                                           if r.status not in (201, 503)]
    for instance, reply in zip(instances, replies):
        stored = os.path.join(api.instances_dir, instance, "certificates", "localhost.pem")
        if reply.status == 503:
            assert "retry-after: 1" in reply.body.lower(), reply
            assert not os.path.exists(os.path.join(api.instances_dir, instance))
        else:
            with open(stored, "rb") as file:
                assert file.read() == bundle
    peak_mib = peak["pss"] / 1024
    print("200 concurrent certificate PUTs: %d answered 201, %d answered 503; peak %d API "
          "processes, %.0f MiB PSS (%.0f MiB RSS) together"
          % (200 - len(busy), len(busy), peak["processes"], peak_mib, peak["rss"] / 1024))
    assert peak_mib < PEAK_PSS_LIMIT_MIB

    for instance in busy:
        for _attempt in range(10):
            reply = put(instance)
            if reply.status != 503:
                break
            time.sleep(1)
        assert reply.status == 201, reply
    for instance in instances:
        assert api.delete("/instances/" + instance).status == 200


def test_a_tenant_haproxy_with_a_large_maxconn_starts(api, backend, instance_id):
    """lighttpd must not narrow the open-file limit that its CGI, and the
    daemons the API starts, inherit: server.max-fds = 4096 once made every
    haproxy needing more files fail ("Cannot raise FD limit")."""
    config = haproxy_template(free_port(), backend.port).replace("maxconn 100", "maxconn 5000")
    assert "maxconn 5000" in config
    reply = api.put("/instances/%s/haproxy" % instance_id, config)
    assert reply.status == 201, reply
