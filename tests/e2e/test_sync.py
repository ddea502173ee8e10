"""The standby keeps itself in step with the active node (`octctl sync`), for
real: the pair of tests/e2e/test_pair.py (two nodes and a client in network
namespaces on a bridge; lighttpd, haproxy, stunnel, keepalived on both), one
PKI for both nodes, and the standby's own client certificate for its pull.
"""
import hashlib
import json
import os
import subprocess
import sys
import time
import uuid

import pytest

from support.netns import (ROOT, Pair, haproxy_config, host_snapshot, shared_pki,
                           sync_settings, topology_form)

from .conftest import pki_tool
from .helpers import eventually as wait_for
from .test_certificates import listener_certificate

HA_IP, SERVICE_IP = "192.0.2.100", "192.0.2.110"
PRIMARY, SECONDARY = Pair.NODES


def sample_call(role):
    return topology_form(role, secret="syncsecret")


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    before = host_snapshot()
    pki = shared_pki(str(tmp_path_factory.mktemp("pair-pki")), Pair.NODES)
    pair_ = Pair("s%d" % os.getpid())
    try:
        pair_.start_sites({"sync": sync_settings(pki)}, pki=pki)
        pair_.form(secret="syncsecret")
        yield pair_
    finally:
        pair_.close()
    assert host_snapshot() == before


def status(site):
    return json.loads(site("GET", "/status")[1])


def sync(site, *options):
    """`octctl sync` on the site's node: (exit status, its line)."""
    completed = subprocess.run(list(site.namespace.prefix) + [
        sys.executable, os.path.join(ROOT, "bin", "octctl"), "--config",
        os.path.join(site.folder, "appliance-api.ini"), "sync", *options],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120)
    return completed.returncode, completed.stdout.strip()


def stored_files(site):
    """{relative path: bytes} of what the API stores (templates, 503 pages,
    certificates); not what the daemons or the API keep for themselves."""
    found = {}
    for folder, _dirs, names in os.walk(site.instances_dir):
        for name in names:
            if name in ("haproxy.cfg", "stunnel.conf", "custom503.http") or (
                    name.endswith(".pem") and folder.endswith("certificates")):
                path = os.path.join(folder, name)
                with open(path, "rb") as file:
                    found[os.path.relpath(path, site.instances_dir)] = file.read()
    return found


def access_lines(site):
    path = os.path.join(site.folder, "log", "access.log")
    try:
        with open(path, errors="replace") as log:
            return log.read().splitlines()
    except FileNotFoundError:
        return []


def between_markers(site, start, end):
    """The access log's lines between two marker requests (lighttpd flushes
    its log every few seconds, in order)."""
    assert wait_for(lambda: any(" %s " % end in line for line in access_lines(site)), 15)
    lines = access_lines(site)
    first = next(n for n, line in enumerate(lines) if " %s " % start in line)
    last = next(n for n, line in enumerate(lines) if " %s " % end in line)
    return lines[first + 1:last]


PAGE = b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain\r\n\r\nsorry %d\n"


def tenant(active, instance, ca, port=443, address=SERVICE_IP):
    bundle = listener_certificate(ca)[0]
    base = "/instances/" + instance
    assert active("PUT", base + "/certificates/localhost.pem", bundle.decode())[0] == 201
    code, body = active("PUT", base + "/haproxy", haproxy_config(
        "%s:%d ssl crt {INSTANCE_DIR}/certificates/localhost.pem" % (address, port),
        answer="tenant-%s" % instance[:8]))
    assert code == 201, body
    return bundle


def test_only_a_standby_syncs(pair):
    active, standby = pair.sites
    code, line = sync(active)
    assert (code, line) == (0, "this node is active: nothing to do (only a standby syncs)")


def test_a_change_on_the_active_runs_on_the_standby_after_one_sync(pair):
    active, standby = pair.sites
    ca = pki_tool.make_ca("tenant CA")
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    tenant(active, first, ca)
    assert active("PUT", "/instances/%s/custom503" % first, (PAGE % 1).decode())[0] == 201
    assert active("PUT", "/instances/%s/certificates/localhost.pem" % second,
                  listener_certificate(ca)[0].decode())[0] == 201
    code, body = active("PUT", "/instances/%s/stunnel" % second,
                        "[tls]\naccept = 192.0.2.111:443\nconnect = 127.0.0.1:9\n"
                        "cert = {INSTANCE_DIR}/certificates/localhost.pem\n")
    assert code == 201, body

    code, line = sync(standby)
    assert code == 0, line
    assert line.startswith("synced from 192.0.2.1: 2 of 2 instances in step, 2 changed, "
                           "0 failing"), line
    assert stored_files(standby) == stored_files(active)
    service_status = standby("GET", "/service_status")[1]
    for instance in (first, second):
        assert "%-52s%s" % (instance, "OK") in service_status, service_status
    shown = status(standby)
    assert (shown["sync_instances_in_step"], shown["sync_instances"], shown["sync_failing"],
            shown["sync_error"]) == (2, 2, {}, "")
    assert time.time() - shown["sync_last_success"] < 30

    # Changed, deleted, and a whole instance gone: one more sync.
    assert active("PUT", "/instances/%s/certificates/localhost.pem" % first,
                  listener_certificate(ca)[0].decode())[0] == 201
    assert active("DELETE", "/instances/%s/custom503" % first)[0] == 200
    assert active("DELETE", "/instances/" + second)[0] == 200
    code, line = sync(standby)
    assert code == 0, line
    assert stored_files(standby) == stored_files(active)
    assert standby("GET", "/instances/" + second)[0] == 404


def test_nothing_to_do_costs_one_request_and_touches_nothing(pair):
    active, standby = pair.sites
    instances = [str(uuid.uuid4()) for _ in range(100)]
    for number, instance in enumerate(instances):
        assert active("PUT", "/instances/%s/custom503" % instance,
                      (PAGE % number).decode())[0] == 201
    code, line = sync(standby)
    assert code == 0, line
    assert stored_files(standby) == stored_files(active)
    pid = {i: p for i, p in _haproxy_pids(standby).items()}
    mtimes = {path: os.stat(os.path.join(standby.instances_dir, path)).st_mtime_ns
              for path in stored_files(standby)}

    start, end = ("/instances/" + str(uuid.uuid4()) for _ in range(2))
    assert active("GET", start)[0] == 404  # markers in the active's access log
    started = time.monotonic()
    code, line = sync(standby)
    took = time.monotonic() - started
    assert active("GET", end)[0] == 404
    assert code == 0, line
    assert ", 0 changed, 0 failing, 1 requests" in line, line
    lines = between_markers(active, start, end)
    assert len(lines) == 1 and '"GET /manifest HTTP/1.1" 200' in lines[0], lines
    assert _haproxy_pids(standby) == pid
    assert {path: os.stat(os.path.join(standby.instances_dir, path)).st_mtime_ns
            for path in stored_files(standby)} == mtimes
    print("no-op sync over %d instances: %.3f s, 1 request"
          % (len(standby("GET", "/instances")[1].split()), took))

    assert active("PUT", "/instances/%s/custom503" % instances[7], (PAGE % 1000).decode())[0] \
        == 201
    code, line = sync(standby)
    assert ", 1 changed, 0 failing, 2 requests" in line, line
    changed = {path for path in stored_files(standby)
               if os.stat(os.path.join(standby.instances_dir, path)).st_mtime_ns
               != mtimes.get(path)}
    assert changed == {"%s/custom503.http" % instances[7]}
    for instance in instances:
        assert active("DELETE", "/instances/" + instance)[0] == 200
    assert sync(standby)[0] == 1  # 100 of 101 instances at once: refused
    assert sync(standby, "--allow-mass-delete")[0] == 0
    assert stored_files(standby) == stored_files(active)


def _haproxy_pids(site):
    pids = {}
    for line in site("GET", "/service_status")[1].splitlines():
        if not line.startswith(" "):
            current = line.split()[0]
        elif "running (pid" in line:
            pids[current, line.split()[0]] = line.split("pid ")[1].rstrip(")")
    return pids


def test_a_config_the_standby_cannot_run_is_reported_and_the_rest_syncs(pair):
    active, standby = pair.sites
    blocked, fine = str(uuid.uuid4()), str(uuid.uuid4())
    holder = subprocess.Popen(list(standby.namespace.prefix) + [
        sys.executable, "-c", "import socket, time; s = socket.socket(); "
        "s.bind(('127.0.0.1', 9301)); s.listen(); time.sleep(60)"])
    try:
        time.sleep(0.5)
        assert active("PUT", "/instances/%s/haproxy" % blocked,
                      haproxy_config("127.0.0.1:9301"))[0] == 201
        assert active("PUT", "/instances/%s/custom503" % fine, (PAGE % 5).decode())[0] == 201
        code, line = sync(standby)
        assert code == 1, line
        failing = status(standby)["sync_failing"]
        assert list(failing) == [blocked], failing
        assert failing[blocked].startswith("PUT /instances/%s/haproxy: 409 Invalid "
                                           "configuration" % blocked), failing
        assert standby("GET", "/instances/%s/custom503" % fine)[0] == 200
        assert standby("GET", "/instances/%s/haproxy" % blocked)[0] == 404
    finally:
        holder.kill()
        holder.wait()
    code, line = sync(standby)
    assert code == 0, line
    assert status(standby)["sync_failing"] == {}
    for instance in (blocked, fine):
        assert active("DELETE", "/instances/" + instance)[0] == 200
    assert sync(standby, "--allow-mass-delete")[0] == 0  # 2 of 3: over the share


def test_an_unreachable_active_leaves_the_standby_as_it_is(pair):
    active, standby = pair.sites
    instance = str(uuid.uuid4())
    assert active("PUT", "/instances/%s/custom503" % instance, (PAGE % 9).decode())[0] == 201
    assert sync(standby)[0] == 0
    kept = stored_files(standby)
    assert active("DELETE", "/instances/" + instance)[0] == 200
    active.lighttpd.terminate()
    active.lighttpd.wait(5)
    try:
        code, line = sync(standby)
        assert code == 1
        assert line.startswith("not synced: active node 192.0.2.1 unreachable"), line
        shown = status(standby)
        assert shown["sync_error"].startswith("active node 192.0.2.1 unreachable")
        assert time.time() - shown["sync_unreachable_since"] < 60
        assert stored_files(standby) == kept
    finally:
        active.restart()
    assert sync(standby)[0] == 0
    assert status(standby)["sync_error"] == ""
    assert standby("GET", "/instances/" + instance)[0] == 404


def test_a_failover_serves_every_synchronised_tenant_from_the_standby(pair):
    """Tenants configured on the active only; one sync; the active's
    keepalived stops while a client loop runs through the tenant's service IP
    (TLS, verifying the tenant's certificate): the standby answers."""
    active, standby = pair.sites
    ca = pki_tool.make_ca("tenant CA")
    instance = str(uuid.uuid4())
    tenant(active, instance, ca, port=4443)
    assert sync(standby)[0] == 0
    # A certificate replaced on the active: the standby serves the new one.
    bundle, replaced_der = listener_certificate(ca)
    assert active("PUT", "/instances/%s/certificates/localhost.pem" % instance,
                  bundle.decode())[0] == 201
    assert sync(standby)[0] == 0
    ca_file = os.path.join(active.folder, "tenant-ca.pem")
    from cryptography.hazmat.primitives import serialization
    with open(ca_file, "wb") as file:
        file.write(ca[0].public_bytes(serialization.Encoding.PEM))
    loop = subprocess.Popen(list(pair.client.prefix) + [sys.executable, "-c", CLIENT % {
        "address": SERVICE_IP, "ca": ca_file, "requests": 400}], stdout=subprocess.PIPE,
        text=True)
    time.sleep(1.5)
    with open(os.path.join(active.state_dir, "vrrp", "keepalived.pid")) as file:
        os.kill(int(file.read()), 15)
    requests, failed, last = loop.communicate(timeout=120)[0].split()
    print("failover of a synced tenant: %s requests, %s failed" % (requests, failed))
    assert int(requests) == 400 and int(failed) <= 2
    assert last == "tenant-%s" % instance[:8]
    assert SERVICE_IP in pair.nodes[1].addresses()
    served = subprocess.run(list(pair.client.prefix) + [sys.executable, "-c", SERVED % {
        "address": SERVICE_IP}], stdout=subprocess.PIPE, text=True, check=True).stdout.strip()
    assert served == hashlib.sha256(replaced_der).hexdigest()
    assert active("POST", "/topology", sample_call("PRIMARY")) == (200, "OK\n")
    assert wait_for(lambda: [HA_IP in n.addresses() for n in pair.nodes] == [True, False], 15)


SERVED = r"""
import hashlib, socket, ssl
context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
with socket.create_connection((%(address)r, 4443), timeout=5) as sock:
    with context.wrap_socket(sock) as tls:
        print(hashlib.sha256(tls.getpeercert(binary_form=True)).hexdigest())
"""

CLIENT = r"""
import http.client, ssl, time
context = ssl.create_default_context(cafile=%(ca)r)
context.check_hostname = False
requests = failed = 0
last = ""
while requests < %(requests)d:
    requests += 1
    try:
        connection = http.client.HTTPSConnection(%(address)r, 4443, timeout=3,
                                                 context=context)
        connection.request("GET", "/")
        answer = connection.getresponse()
        last = answer.read().decode()
        connection.close()
        if answer.status != 200:
            failed += 1
    except OSError:
        failed += 1
    time.sleep(0.01)
print(requests, failed, last or "-")
"""


def test_a_port_moved_between_configs_syncs_in_one_run(pair):
    """The active moved :443 from its stunnel to its haproxy: the standby
    deletes first, then claims, so the move is not a 409."""
    active, standby = pair.sites
    ca = pki_tool.make_ca("tenant CA")
    instance = str(uuid.uuid4())
    base = "/instances/" + instance
    assert active("PUT", base + "/certificates/localhost.pem",
                  listener_certificate(ca)[0].decode())[0] == 201
    assert active("PUT", base + "/stunnel", "[tls]\naccept = 192.0.2.112:443\nconnect = "
                  "127.0.0.1:9\ncert = {INSTANCE_DIR}/certificates/localhost.pem\n")[0] == 201
    assert sync(standby)[0] == 0
    assert active("DELETE", base + "/stunnel")[0] == 200
    code, body = active("PUT", base + "/haproxy", haproxy_config(
        "192.0.2.112:443 ssl crt {INSTANCE_DIR}/certificates/localhost.pem"))
    assert code == 201, body
    code, line = sync(standby)
    assert (code, status(standby)["sync_failing"]) == (0, {}), line
    assert stored_files(standby) == stored_files(active)
    assert active("DELETE", base)[0] == 200
    assert sync(standby)[0] == 0


def test_the_active_deleting_most_instances_at_once_needs_a_confirmation(pair):
    """Through the real active node: most instances gone in one run is
    refused on the standby (nothing deleted, /status says why, exit 1) until
    `octctl sync --allow-mass-delete`."""
    active, standby = pair.sites
    instances = [str(uuid.uuid4()) for _ in range(4)]
    for number, instance in enumerate(instances):
        assert active("PUT", "/instances/%s/custom503" % instance,
                      (PAGE % number).decode())[0] == 201
    assert sync(standby)[0] == 0
    held = len(standby("GET", "/instances")[1].split())
    for instance in instances:
        assert active("DELETE", "/instances/" + instance)[0] == 200
    kept = stored_files(standby)
    code, line = sync(standby)
    assert code == 1
    assert line == ("not synced: the manifest of 192.0.2.1 would take away 4 of this node's %d "
                    "instances (over [sync] max_delete_share 0.25): nothing changed; `octctl "
                    "sync --allow-mass-delete` confirms" % held), line
    assert stored_files(standby) == kept
    shown = status(standby)
    assert shown["sync_refused"] == shown["sync_error"] == line[len("not synced: "):]
    code, line = sync(standby, "--allow-mass-delete")
    assert code == 0, line
    assert stored_files(standby) == stored_files(active)
    assert (status(standby)["sync_refused"], status(standby)["sync_error"]) == ("", "")


def hostile_peer(pair, mode):
    """The active node's lighttpd stopped, and a fake_peer.py in its place
    (its address and port, the pair's server certificate) answering mode."""
    active = pair.sites[0]
    active.lighttpd.terminate()
    active.lighttpd.wait(5)
    peer = subprocess.Popen(list(active.namespace.prefix) + [
        sys.executable, os.path.join(ROOT, "tests", "support", "fake_peer.py"),
        "--pem", os.path.join(active.pki, "server.pem"), "--address", PRIMARY,
        "--port", "8443", mode], stdout=subprocess.PIPE, text=True)
    assert peer.stdout.readline().strip() == "listening"
    return peer


def measured_sync(site):
    """(exit status, line, peak RSS in MiB, seconds) of `octctl sync` on site's node."""
    started = time.monotonic()
    process = subprocess.Popen(list(site.namespace.prefix) + [
        sys.executable, os.path.join(ROOT, "bin", "octctl"), "--config",
        os.path.join(site.folder, "appliance-api.ini"), "sync"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = process.stdout.read()
    _pid, code, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(code)
    return (process.returncode, output.strip(), usage.ru_maxrss / 1024,
            time.monotonic() - started)


@pytest.mark.parametrize("mode", ["huge=512", "stream=512", "trickle=4"])
def test_a_huge_or_trickled_manifest_is_refused_and_changes_nothing(pair, mode):
    """A 512 MiB manifest is refused past [sync] max_manifest_bytes (16 MiB),
    unread (its Content-Length announced, or not: read up to the bound); one
    sent a byte every 4 s runs out of the request's 5 s."""
    active, standby = pair.sites
    instance = str(uuid.uuid4())
    assert active("PUT", "/instances/%s/custom503" % instance, (PAGE % 3).decode())[0] == 201
    assert sync(standby)[0] == 0
    kept = stored_files(standby)
    peer = hostile_peer(pair, mode)
    try:
        code, line, peak, took = measured_sync(standby)
    finally:
        peer.kill()
        peer.wait()
        active.restart()
    print("sync against a %s peer: %.0f MiB peak RSS, %.1f s: %s" % (mode, peak, took, line))
    assert code == 1
    if not mode.startswith("trickle"):
        assert line == ("not synced: the manifest of 192.0.2.1 is refused: GET /manifest: the "
                        "answer is over 16777216 bytes: refused unread"), line
    else:
        assert line == ("not synced: active node 192.0.2.1 unreachable: GET /manifest: no whole "
                        "answer within 5 s (this node's configuration is left as it is)"), line
        assert took < 30
    assert status(standby)["sync_error"] == line[len("not synced: "):].split(
        " (this node's")[0]
    assert stored_files(standby) == kept
    assert active("DELETE", "/instances/" + instance)[0] == 200
    assert sync(standby)[0] == 0
