"""Topology transitions of a pair, for real (issue 18): two appliances in
network namespaces (support.netns.Pair), real keepalived and haproxy.

- A pair that cannot form is a 409 at POST (keepalived -t runs there).
- A FAILED transition is not carried out by a later tenant change, nor by
  `octctl reconcile`.
- SINGLE -> ACTIVE-STANDBY on the primary keeps the tenants' service IPs on
  the interface throughout: 0 failed requests through one.
- A config PUT racing the transition ends with its service IP in
  keepalived.conf and on the interface, without a reconcile.

keepalived runs through a small wrapper that execs the real one; a flag
file makes it exit at start instead (a transition that fails after its POST
passed). The race is made deterministic by holding the racing PUT's instance
lock (it waits there, past its transition check) until the worker has begun.
"""
import configparser
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import pytest

from support.netns import ROOT, Pair, client_loop, haproxy_config, host_snapshot, \
    topology_form

from appliance_api.layout import Instance

from .helpers import eventually as wait_for

HA_IP = Pair.HA_IP
SERVICE_IPS = ("192.0.2.110", "192.0.2.111", "192.0.2.112")

WRAPPER = """#!/bin/sh
# Test wrapper: the real keepalived, unless the flag file says to fail its start.
[ "$1" = -n ] && [ -e %(flags)s/fail-start ] && exit 1
exec %(real)s "$@"
"""


@pytest.fixture(scope="module")
def flags():
    folder = tempfile.mkdtemp(prefix="an-flags-", dir="/tmp")
    os.chmod(folder, 0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def pair(flags):
    before = host_snapshot()
    wrapper = os.path.join(flags, "keepalived")
    with open(wrapper, "w") as file:
        file.write(WRAPPER % {"flags": flags, "real": shutil.which("keepalived")})
    os.chmod(wrapper, 0o755)
    pair_ = Pair("x%d" % os.getpid())
    try:
        pair_.start_sites({"programs": {"keepalived": wrapper}})
        yield pair_
    finally:
        flag(flags, "fail-start", on=False)
        pair_.close()
    assert host_snapshot() == before


def flag(flags, name, on=True):
    path = os.path.join(flags, name)
    if on:
        open(path, "w").close()
    elif os.path.exists(path):
        os.remove(path)


def topology(site):
    code, body = site("GET", "/topology")
    assert code == 200, body
    return json.loads(body)


def vrrp_file(site, name):
    try:
        with open(os.path.join(site.state_dir, "vrrp", name), errors="replace") as file:
            return file.read()
    except FileNotFoundError:
        return ""


def keepalived_processes(site):
    import psutil

    conf = os.path.join(site.state_dir, "vrrp", "keepalived.conf")
    return [p for p in psutil.process_iter(["name", "cmdline"])
            if p.info["name"] == "keepalived" and conf in (p.info["cmdline"] or [])]


def put(site, instance, address, answer="node1"):
    return site("PUT", "/instances/%s/haproxy" % instance,
                haproxy_config(address + ":80", answer=answer))


def octctl(site, *words):
    return subprocess.run(list(site.namespace.prefix) + [
        sys.executable, os.path.join(ROOT, "bin", "octctl"), "--config",
        os.path.join(site.folder, "appliance-api.ini")] + list(words),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def diagnose(site):
    return "%s\ntransition.log:\n%s\nkeepalived.log:\n%s" % (
        site("GET", "/topology")[1], vrrp_file(site, "transition.log")[-3000:],
        vrrp_file(site, "keepalived.log")[-3000:])


def stored(site):
    with open(os.path.join(site.state_dir, "topology.json"), "rb") as file:
        return file.read()


def test_a_pair_that_cannot_form_is_refused_at_post(pair):
    primary = pair.sites[0]
    before = topology(primary)
    # One IPv4 and one IPv6 address in all_ips: keepalived -t refused it once, after a 200.
    form = topology_form("PRIMARY").replace("all_ips[1]=192.0.2.2", "all_ips[1]=2001:db8::2")
    code, body = primary("POST", "/topology", form)
    assert code == 409, body
    assert "all_ips[1]: 2001:db8::2 is IPv6; a pair's addresses are one family" in body
    # Whatever else keepalived -t refuses (here an out-of-range virtual_router_id in
    # the appliance's own config): 409 with its reason, before anything is stored.
    ini = os.path.join(primary.folder, "appliance-api.ini")
    with open(ini) as file:
        original = file.read()
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(original)
    if not parser.has_section("ha"):
        parser.add_section("ha")
    parser.set("ha", "virtual_router_id", "300")
    with open(ini, "w") as file:
        parser.write(file)
    try:
        code, body = primary("POST", "/topology", topology_form("PRIMARY"))
    finally:
        with open(ini, "w") as file:
            file.write(original)
    assert code == 409, body
    assert body.startswith("Invalid request\nkeepalived refused the pair's configuration:"), body
    assert "VRID '300' not valid" in body, body
    assert topology(primary) == before
    assert not os.path.exists(os.path.join(primary.state_dir, "topology.json")) or \
        json.loads(stored(primary))["topology"] == before["topology"]
    assert not keepalived_processes(primary)


def test_a_failed_transition_is_not_carried_out_by_a_tenant_change(pair, flags):
    """keepalived exits at start (after the POST's check passed): FAILED, the
    machine back to SINGLE. A tenant's PUT and `octctl reconcile` then keep
    SINGLE (the API's addresses, no keepalived), and topology_status stays FAILED."""
    primary, node = pair.sites[0], pair.nodes[0]
    first = str(uuid.uuid4())
    code, body = put(primary, first, SERVICE_IPS[0])
    assert code == 201, body
    assert SERVICE_IPS[0] in node.addresses()
    flag(flags, "fail-start")
    try:
        assert primary("POST", "/topology", topology_form("PRIMARY")) == (200, "OK\n")
        assert wait_for(lambda: topology(primary)["topology_status"].startswith("FAILED"), 20), \
            diagnose(primary)
        assert "keepalived exited at start" in topology(primary)["topology_status"]
        assert SERVICE_IPS[0] in node.addresses()

        second = str(uuid.uuid4())
        code, body = put(primary, second, SERVICE_IPS[1])
        assert code == 201, body
        time.sleep(0.5)
        assert not keepalived_processes(primary), diagnose(primary)
        assert {SERVICE_IPS[0], SERVICE_IPS[1]} <= node.addresses()
        assert HA_IP not in node.addresses()
        shown = topology(primary)
        assert shown["topology_status"].startswith("FAILED"), shown
        assert shown["topology"] == "ACTIVE-STANDBY"  # what was asked for, shown as FAILED

        reconciled = octctl(primary, "reconcile")
        assert reconciled.returncode == 0, reconciled.stdout
        time.sleep(0.5)
        assert not keepalived_processes(primary), diagnose(primary)
        assert {SERVICE_IPS[0], SERVICE_IPS[1]} <= node.addresses()
        assert topology(primary)["topology_status"].startswith("FAILED")
    finally:
        flag(flags, "fail-start", on=False)


def test_forming_the_pair_under_traffic_loses_no_request_and_a_racing_put_lands(pair, flags):
    """The primary serves alone (SINGLE, two tenants); a client loop runs through
    a service IP; a PUT of a third tenant (its check slowed) is under way when
    POST /topology makes the primary a pair member. keepalived starts in BACKUP
    for ~3 s: the service IPs stay on the interface (sampled every 20 ms), no
    request fails, and the racing PUT's address ends in keepalived.conf and on
    the interface. Then the secondary joins, and a clean stop of the primary's
    keepalived moves the addresses: keepalived owns them."""
    primary, secondary = pair.sites
    node = pair.nodes[0]
    # From the test before, or afresh: SINGLE, tenants on .110 and .111 only.
    assert primary("POST", "/topology", "topology=SINGLE") == (200, "OK\n")
    assert wait_for(lambda: topology(primary)["topology_status"] == "OK", 20), diagnose(primary)
    primary.delete_instances()
    tenants = {str(uuid.uuid4()): address for address in SERVICE_IPS[:2]}
    for instance, address in tenants.items():
        assert put(primary, instance, address)[0] == 201
    assert wait_for(lambda: set(SERVICE_IPS[:2]) <= node.addresses(), 5)

    samples, sampling = [], threading.Event()
    sampling.set()

    def sample():
        while sampling.is_set():
            samples.append((time.monotonic(), node.addresses()))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    stop = os.path.join(flags, "stop-loop")
    loop = client_loop(pair, SERVICE_IPS[0], 100000, stop=stop)
    sampler.start()
    racing = {}
    try:
        time.sleep(1.5)
        third = str(uuid.uuid4())
        tenants[third] = SERVICE_IPS[2]
        # The PUT waits on its instance's lock, past its transition check.
        waiting = Instance(primary.state_dir, third)
        os.makedirs(waiting.dir, mode=0o755)
        held = os.open(waiting.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(held, fcntl.LOCK_EX)

        def racing_put():
            racing["answer"] = put(primary, third, SERVICE_IPS[2])
            racing["status"] = topology(primary)["topology_status"]

        putter = threading.Thread(target=racing_put)
        try:
            putter.start()
            time.sleep(0.5)
            started = time.monotonic()
            assert primary("POST", "/topology", topology_form("PRIMARY")) == (200, "OK\n")
            time.sleep(0.5)  # the worker has read the stored configs and started keepalived
        finally:
            os.close(held)  # the PUT goes on, in the transition
        putter.join(30)
        assert wait_for(lambda: topology(primary)["topology_status"] == "OK", 30), \
            diagnose(primary)
        formed = time.monotonic() - started
        assert racing["answer"][0] == 201, racing
        # The race happened: the PUT landed while the transition ran.
        assert racing["status"] == "TOPOLOGY-CHANGE", racing
        time.sleep(1.5)
    finally:
        sampling.clear()
        sampler.join()
        open(stop, "w").close()
        output = loop.communicate(timeout=30)[0].split()
        os.remove(stop)
    requests, failed = int(output[0]), int(output[1])
    print("SINGLE -> ACTIVE-STANDBY on the primary under traffic: %d requests, %d failed "
          "(at %s s); the transition took %.2f s; %d address samples"
          % (requests, failed, " ".join(output[2:]) or "-", formed, len(samples)))
    assert requests > 200
    assert failed == 0, output
    missing = [(round(when - started, 2), sorted(set(SERVICE_IPS[:2]) - found))
               for when, found in samples if not set(SERVICE_IPS[:2]) <= found]
    assert not missing, missing[:10]

    # The racing PUT's address: in keepalived.conf and on the interface, no reconcile.
    assert SERVICE_IPS[2] + "/32 dev" in vrrp_file(primary, "keepalived.conf"), \
        vrrp_file(primary, "keepalived.conf")
    assert wait_for(lambda: set(SERVICE_IPS) | {HA_IP} <= node.addresses(), 5), \
        (node.addresses(), diagnose(primary))
    assert pair.client.fetch("http://%s/" % SERVICE_IPS[2]) == "node1"
    # keepalived owns them now; the API no longer does.
    assert not os.path.exists(os.path.join(primary.state_dir, "owned-addresses.json"))

    # The secondary joins (with the same tenants): it is the standby, nothing moves.
    assert secondary("POST", "/topology", topology_form("SECONDARY")) == (200, "OK\n")
    assert wait_for(lambda: topology(secondary)["topology_status"] == "OK", 30), \
        diagnose(secondary)
    for instance, address in tenants.items():
        assert put(secondary, instance, address, answer="node2")[0] == 201
    assert [HA_IP in n.addresses() for n in pair.nodes] == [True, False]
    assert not set(SERVICE_IPS) & pair.nodes[1].addresses()

    # A clean stop of the primary's keepalived takes every service IP with it.
    with open(os.path.join(primary.state_dir, "vrrp", "keepalived.pid")) as file:
        os.kill(int(file.read()), signal.SIGTERM)
    assert wait_for(lambda: set(SERVICE_IPS) <= pair.nodes[1].addresses()
                    and not set(SERVICE_IPS) & node.addresses(), 10), \
        (node.addresses(), pair.nodes[1].addresses())
    assert wait_for(lambda: pair.client.fetch("http://%s/" % SERVICE_IPS[2]) == "node2", 5)
    assert primary("POST", "/topology", topology_form("PRIMARY")) == (200, "OK\n")
    assert wait_for(lambda: set(SERVICE_IPS) <= node.addresses(), 15), diagnose(primary)
