"""An active/standby pair, for real: two appliances in two network
namespaces joined by a bridge in a third, each with its own lighttpd, state
folder, haproxy and keepalived, and a client namespace on the same bridge.

Addresses: nodes 192.0.2.1 (primary) and 192.0.2.2, the client 192.0.2.3,
ha_ip 192.0.2.100, a tenant's service IP 192.0.2.110. Timings are printed
(`-s`); `make bench-failover` measures them properly. The tests assert only
what must hold: who carries the addresses, and what each node says.
"""
import fcntl
import json
import os
import signal
import time
import uuid

import pytest

from support.netns import Pair, haproxy_config, host_snapshot, topology_form

from .helpers import eventually as wait_for

HA_IP = "192.0.2.100"
SERVICE_IP = "192.0.2.110"
PRIMARY, SECONDARY = Pair.NODES


def sample_call(role):
    """The draft's sample call's fields (its addresses are ours), ROUTED as there."""
    return topology_form(role, "ROUTED", "supersecret")


@pytest.fixture(scope="module")
def pair():
    before = host_snapshot()
    pair_ = Pair("t%d" % os.getpid())
    try:
        pair_.start_sites()
        yield pair_
    finally:
        pair_.close()
    assert host_snapshot() == before


def topology(site):
    status, body = site("GET", "/topology")
    assert status == 200, body
    return json.loads(body)


def status(site):
    code, body = site("GET", "/status")
    assert code == 200, body
    return json.loads(body)


def diagnose(site):
    """What a failed assertion shows: the node's topology and its logs' tails."""
    shown = [site("GET", "/topology")[1]]
    for name in ("transition.log", "keepalived.log"):
        try:
            with open(os.path.join(site.state_dir, "vrrp", name), errors="replace") as log:
                shown.append("%s:\n%s" % (name, "".join(log.readlines()[-25:])))
        except OSError:
            pass
    return "\n".join(shown)


def holders(pair, address=HA_IP):
    return [address in node.addresses() for node in pair.nodes]


def served_by(pair, timeout=2):
    return pair.client.fetch("http://%s/" % SERVICE_IP, timeout=timeout)


def keepalived_pid(site):
    with open(os.path.join(site.state_dir, "vrrp", "keepalived.pid")) as file:
        return int(file.read())


def form_pair(pair):
    for site, role in zip(pair.sites, ("PRIMARY", "SECONDARY")):
        assert site("POST", "/topology", sample_call(role)) == (200, "OK\n")
    for site in pair.sites:
        assert wait_for(lambda: topology(site)["topology_status"] == "OK", 20), topology(site)
    assert wait_for(lambda: holders(pair) == [True, False], 10), holders(pair)


def test_the_drafts_sample_call_forms_a_pair_and_both_nodes_say_who_is_active(pair):
    primary, secondary = pair.sites
    assert topology(primary) == {
        "hostname": topology(primary)["hostname"], "topology": "SINGLE", "role": "PRIMARY",
        "primary_ip": "", "ha_ip": "", "all_ips": [], "routing-mode": "LAYER2",
        "topology_status": "OK"}
    started = time.monotonic()
    form_pair(pair)
    print("pair formed: %.2f s until the primary held ha_ip" % (time.monotonic() - started))
    for site, active in ((primary, 1), (secondary, 0)):
        shown = topology(site)
        assert (shown["topology"], shown["routing-mode"], shown["ha_ip"], shown["primary_ip"],
                shown["all_ips"], shown["topology_status"]) == (
            "ACTIVE-STANDBY", "ROUTED", HA_IP, PRIMARY, [PRIMARY, SECONDARY], "OK")
        assert shown["role"] == ("PRIMARY" if active else "SECONDARY")
        figures = status(site)
        assert (figures["active_node"], figures["role"], figures["topology"],
                figures["topology_status"], figures["fencing_daemon_status"]) == (
            active, shown["role"], "ACTIVE-STANDBY", "OK", "OK")
    # The secret is stored readable by root only.
    assert os.stat(os.path.join(primary.state_dir, "topology.json")).st_mode & 0o777 == 0o600


def put_tenant(pair, instance):
    for number, site in enumerate(pair.sites, 1):
        code, body = site("PUT", "/instances/%s/haproxy" % instance,
                          haproxy_config(SERVICE_IP + ":80", answer="node%d" % number))
        assert code == 201, body


def test_tenants_follow_the_active_node_across_a_clean_stop(pair):
    """haproxy runs on both nodes (ip_nonlocal_bind); the service IP is on the
    active node only, and moves with ha_ip when the primary's keepalived stops."""
    primary, secondary = pair.sites
    instance = str(uuid.uuid4())
    put_tenant(pair, instance)
    assert wait_for(lambda: holders(pair, SERVICE_IP) == [True, False], 5)
    assert served_by(pair) == "node1"

    stopped = time.monotonic()
    os.kill(keepalived_pid(primary), signal.SIGTERM)
    assert wait_for(lambda: holders(pair, SERVICE_IP) == [False, True]
                    and holders(pair) == [False, True], 5, 0.005), holders(pair)
    print("clean stop of the primary's keepalived: the secondary held ha_ip and the service "
          "IP after %.3f s" % (time.monotonic() - stopped))
    assert wait_for(lambda: served_by(pair) == "node2", 3)
    shown = status(secondary)
    assert (shown["active_node"], shown["role"]) == (1, "PRIMARY")
    shown = status(primary)
    assert (shown["active_node"], shown["role"], shown["fencing_daemon_status"]) == (
        0, "SECONDARY", "STOPPED")

    # Back: the primary's keepalived again (POST the same topology), and it preempts.
    assert primary("POST", "/topology", sample_call("PRIMARY")) == (200, "OK\n")
    assert wait_for(lambda: holders(pair, SERVICE_IP) == [True, False], 10), diagnose(primary)
    assert wait_for(lambda: served_by(pair) == "node1", 3)
    assert status(primary)["fencing_daemon_status"] == "OK"


def test_a_dead_haproxy_on_the_primary_moves_the_addresses(pair):
    """The health check (octctl health, every second) lowers the primary's
    priority below the secondary's: the secondary takes over."""
    primary, secondary = pair.sites
    instance = next(iter(primary("GET", "/instances")[1].split()), None)
    if instance is None:
        instance = str(uuid.uuid4())
        put_tenant(pair, instance)
    assert wait_for(lambda: holders(pair, SERVICE_IP) == [True, False], 10)
    with open(os.path.join(primary.instances_dir, instance, "haproxy.pid")) as file:
        master = int(file.read())
    killed = time.monotonic()
    os.killpg(os.getpgid(master), signal.SIGKILL)
    assert wait_for(lambda: holders(pair, SERVICE_IP) == [False, True], 6, 0.01), holders(pair)
    print("haproxy killed on the primary: the secondary held the service IP after %.3f s"
          % (time.monotonic() - killed))
    assert wait_for(lambda: served_by(pair) == "node2", 3)
    assert status(primary)["fencing_daemon_status"] == "OK"  # keepalived itself is fine

    # The tenant's config again on the primary starts haproxy; the node is healthy
    # again after two good checks and takes the addresses back.
    code, body = primary("PUT", "/instances/%s/haproxy" % instance,
                         haproxy_config(SERVICE_IP + ":80", answer="node1"))
    assert code == 201, body
    assert wait_for(lambda: holders(pair, SERVICE_IP) == [True, False], 10), holders(pair)


def test_a_cut_link_moves_the_addresses_and_the_node_says_fault(pair):
    """The primary's link down (its carrier gone): its keepalived goes FAULT and
    drops the addresses; the secondary takes them. Link up: back."""
    primary, secondary = pair.sites
    assert wait_for(lambda: holders(pair) == [True, False], 10)
    pair.cut(pair.nodes[0])
    try:
        cut = time.monotonic()
        assert wait_for(lambda: holders(pair) == [False, True], 10, 0.01), diagnose(primary)
        print("primary's link cut: the secondary held ha_ip after %.3f s"
              % (time.monotonic() - cut))
        assert wait_for(lambda: status(primary)["fencing_daemon_status"] == "FAULT", 5)
        assert status(secondary)["active_node"] == 1
    finally:
        pair.cut(pair.nodes[0], up=True)
    assert wait_for(lambda: holders(pair) == [True, False], 15), diagnose(primary)
    assert wait_for(lambda: status(primary)["fencing_daemon_status"] == "OK", 5)


def test_split_brain_shows_as_active_on_both_nodes(pair):
    """The nodes up but deaf to each other (VRRP dropped on the primary): both
    take ha_ip, and both say active_node 1 and role PRIMARY, which is how a
    controller sees a split brain. Heard again: one holds it."""
    primary = pair.sites[0]
    node = pair.nodes[0]
    assert wait_for(lambda: holders(pair) == [True, False], 10)
    rules = [["INPUT", "-p", "112", "-j", "DROP"], ["OUTPUT", "-p", "112", "-j", "DROP"]]
    for rule in rules:
        node.run("iptables", "-I", *rule)
    try:
        deaf = time.monotonic()
        assert wait_for(lambda: holders(pair) == [True, True], 10, 0.05), diagnose(pair.sites[1])
        print("VRRP cut between the nodes: both held ha_ip after %.2f s"
              % (time.monotonic() - deaf))
        assert [status(site)["active_node"] for site in pair.sites] == [1, 1]
        assert [topology(site)["role"] for site in pair.sites] == ["PRIMARY", "PRIMARY"]
    finally:
        for rule in rules:
            node.run("iptables", "-D", *rule)
    assert wait_for(lambda: holders(pair) == [True, False], 10), diagnose(primary)


def test_instance_changes_get_503_during_a_transition_and_reads_go_on(pair):
    primary = pair.sites[0]
    lock = os.open(os.path.join(primary.state_dir, "topology.lock"), os.O_RDWR)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)  # as a running transition holds it
        instance = str(uuid.uuid4())
        for method, path, data in (("PUT", "/instances/%s/haproxy" % instance,
                                    haproxy_config("192.0.2.120:80")),
                                   ("DELETE", "/instances/" + instance, None),
                                   ("POST", "/topology", sample_call("PRIMARY"))):
            code, body = primary(method, path, data)
            assert (code, body) == (503, "Cluster transition in progress\n"), (method, body)
        headers = primary.namespace.run(*primary.curl_argv("DELETE", "/instances/" + instance)[
            len(primary.namespace.prefix):] + ["-D", "-", "-o", "/dev/null"], check=False)
        assert "Retry-After: 2" in headers, headers
        assert topology(primary)["topology_status"] == "TOPOLOGY-CHANGE"
        assert status(primary)["topology_status"] == "TOPOLOGY-CHANGE"
        assert primary("GET", "/instances")[0] == 200
        assert primary("GET", "/service_status")[0] == 200
    finally:
        os.close(lock)
    assert topology(primary)["topology_status"] == "OK"
    assert primary("GET", "/instances/" + instance)[0] == 404


def test_a_restart_of_lighttpd_during_a_transition_does_not_stop_it(pair):
    secondary = pair.sites[1]
    assert secondary("POST", "/topology", sample_call("SECONDARY")) == (200, "OK\n")
    secondary.restart()
    assert wait_for(lambda: topology(secondary)["topology_status"] == "OK", 20), \
        topology(secondary)
    assert status(secondary)["fencing_daemon_status"] == "OK"
    assert wait_for(lambda: holders(pair) == [True, False], 10)


def test_reconcile_brings_a_crashed_keepalived_back(pair):
    """After a reboot or a crash nothing else starts keepalived: the stored
    topology is the desired state, and `octctl reconcile` (run before
    lighttpd at every start) converges to it."""
    import subprocess
    import sys

    from support.netns import ROOT

    secondary = pair.sites[1]
    assert wait_for(lambda: status(secondary)["fencing_daemon_status"] == "OK", 10)
    os.killpg(os.getpgid(keepalived_pid(secondary)), signal.SIGKILL)
    assert wait_for(lambda: status(secondary)["fencing_daemon_status"] == "STOPPED", 5)
    reconcile = subprocess.run(list(secondary.namespace.prefix) + [
        sys.executable, os.path.join(ROOT, "bin", "octctl"), "--config",
        os.path.join(secondary.folder, "appliance-api.ini"), "reconcile"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert reconcile.returncode == 0, reconcile.stdout
    assert wait_for(lambda: status(secondary)["fencing_daemon_status"] == "OK", 10), \
        diagnose(secondary)
    assert wait_for(lambda: holders(pair) == [True, False], 10)


def test_the_supervisor_brings_keepalived_and_haproxy_back_by_itself(pair):
    """With `octctl supervise` on each node (as appliance-api-supervisor.service
    runs it): a SIGKILLed keepalived and a SIGKILLed haproxy on the active
    node are back without any call, and the active node keeps (or takes back)
    the addresses. The README says when the pair may still fail over."""
    from .helpers import Supervisor

    primary, secondary = pair.sites
    instance = next(iter(primary("GET", "/instances")[1].split()), None)
    if instance is None:
        instance = str(uuid.uuid4())
        put_tenant(pair, instance)
    supervisors = [Supervisor(site, site.namespace.prefix) for site in pair.sites]
    try:
        for supervisor in supervisors:
            supervisor.wait_ready()
        assert wait_for(lambda: holders(pair) == [True, False], 10)
        old = keepalived_pid(secondary)
        os.killpg(os.getpgid(old), signal.SIGKILL)
        assert wait_for(lambda: status(secondary)["fencing_daemon_status"] == "OK"
                        and keepalived_pid(secondary) != old, 10), \
            (diagnose(secondary), supervisors[1].lines())
        pid_file = os.path.join(primary.instances_dir, instance, "haproxy.pid")
        with open(pid_file) as file:
            master = int(file.read())
        os.killpg(os.getpgid(master), signal.SIGKILL)

        def new_master():
            try:
                with open(pid_file) as file:
                    pid = int(file.read() or 0)
            except (OSError, ValueError):
                return None
            return pid if pid not in (0, master) else None
        assert wait_for(new_master, 5), supervisors[0].lines()
        moved = wait_for(lambda: holders(pair, SERVICE_IP) != [True, False], 2, 0.01)
        print("haproxy killed on the active node, supervised: the addresses %s"
              % ("moved and came back" if moved else "stayed"))
        assert wait_for(lambda: holders(pair, SERVICE_IP) == [True, False], 10), holders(pair)
        assert wait_for(lambda: served_by(pair) == "node1", 5)
    finally:
        for supervisor in supervisors:
            supervisor.stop()


def test_invalid_requests_are_409_with_a_line_each_and_change_nothing(pair):
    primary = pair.sites[0]
    before = topology(primary)
    with open(os.path.join(primary.state_dir, "topology.json"), "rb") as file:
        stored = file.read()
    code, body = primary("POST", "/topology",
                         "topology=ACTIVE-ACTIVE&routing-mode=BGP&role=LEADER&ha_ip=192.0.2.1"
                         "&primary_ip=192.0.2.9&all_ips[0]=192.0.2.1&all_ips[1]=nonsense")
    assert code == 409, body
    lines = body.splitlines()
    assert lines[0] == "Invalid request"
    for expected in ("topology: ACTIVE-ACTIVE is not supported on this appliance",
                     "routing-mode: must be LAYER2 or ROUTED",
                     "role: must be PRIMARY or SECONDARY",
                     "all_ips[1]: 'nonsense' is not an IP address"):
        assert any(line.startswith(expected) for line in lines), (expected, lines)
    code, body = primary("POST", "/topology", sample_call("SECONDARY"))
    assert (code, body) == (409, "Invalid request\nrole: SECONDARY, but this appliance is "
                                 "primary_ip 192.0.2.1\n")
    assert topology(primary) == before
    with open(os.path.join(primary.state_dir, "topology.json"), "rb") as file:
        assert file.read() == stored


def test_single_again_stops_keepalived_and_puts_the_service_ips_back(pair):
    secondary = pair.sites[1]
    assert secondary("POST", "/topology", "topology=SINGLE") == (200, "OK\n")
    assert wait_for(lambda: topology(secondary)["topology_status"] == "OK", 20)
    shown = status(secondary)
    assert (shown["topology"], shown["active_node"], shown["fencing_daemon_status"]) == (
        "SINGLE", 1, "OK")
    assert HA_IP not in pair.nodes[1].addresses()
    instances = secondary("GET", "/instances")[1].split()
    if instances:  # its tenants' service IPs are its own again
        assert SERVICE_IP in pair.nodes[1].addresses()
