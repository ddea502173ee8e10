"""Service IPs and accounting rules, for real, inside a network namespace.

lighttpd, the CGI and the haproxy daemons all run inside a namespace this
test creates, with a veth pair as the VIP interface. Addresses are the
documentation ranges (192.0.2.0/24, 2001:db8::/32) on the namespace's own
interface: no packet leaves it, and nothing outside it is touched.
"""
import os
import subprocess
import sys
import uuid

import pytest

from support.netns import ROOT, Namespace, Site, haproxy_config, host_snapshot

VIP = "192.0.2.10"
VIP_OTHER = "192.0.2.20"
VIP6 = "2001:db8::10"


@pytest.fixture(scope="module")
def namespace():
    before = host_snapshot()
    namespace_ = Namespace("appliance-test-%d" % os.getpid())
    try:
        yield namespace_
    finally:
        namespace_.close()
    assert host_snapshot() == before


@pytest.fixture(scope="module")
def api(namespace):
    site = Site(namespace)
    try:
        yield site
    finally:
        site.close()


def addresses(namespace):
    return namespace.addresses()


def accounting(namespace, program):
    """({(chain, address): bytes}, {(hook, chain)}) of our chains."""
    rules, hooks = namespace.accounting(program)
    assert all(len(counts) == 1 for counts in rules.values()), rules  # no duplicates
    return {key: counts[0] for key, counts in rules.items()}, set(hooks)


def fetch_port_open(namespace, address, port, attempts=50):
    probe = "import socket; socket.create_connection((%r, %d), 0.5)" % (address, port)
    for _ in range(attempts):
        if subprocess.run(list(namespace.prefix) + [sys.executable, "-c", probe],
                          stderr=subprocess.DEVNULL).returncode == 0:
            return True
    return False


def fetch(namespace, url):
    return namespace.fetch(url)


def test_shared_service_ip_lives_until_its_last_user_is_deleted(namespace, api):
    first, second, third = (str(uuid.uuid4()) for _ in range(3))
    code, body = api("PUT", "/instances/%s/haproxy" % first,
                     haproxy_config("%s:8001" % VIP, "[%s]:8001" % VIP6))
    assert code == 201, body
    code, body = api("PUT", "/instances/%s/haproxy" % second, haproxy_config("%s:8002" % VIP))
    assert code == 201, body
    assert {VIP, VIP6} <= addresses(namespace)

    assert fetch(namespace, "http://%s:8001/" % VIP) == "vip-ok"
    assert fetch(namespace, "http://[%s]:8001/" % VIP6) == "vip-ok"
    rules, hooks = accounting(namespace, "iptables-save")
    assert hooks == {("INPUT", "APPLIANCE-VIP-IN"), ("OUTPUT", "APPLIANCE-VIP-OUT")}
    assert set(rules) == {("APPLIANCE-VIP-IN", VIP), ("APPLIANCE-VIP-OUT", VIP)}
    assert rules[("APPLIANCE-VIP-IN", VIP)] > 0 and rules[("APPLIANCE-VIP-OUT", VIP)] > 0
    rules6, hooks6 = accounting(namespace, "ip6tables-save")
    assert set(rules6) == {("APPLIANCE-VIP-IN", VIP6), ("APPLIANCE-VIP-OUT", VIP6)}
    assert rules6[("APPLIANCE-VIP-IN", VIP6)] > 0

    # Two instances on one address and port: haproxy would start both (SO_REUSEPORT)
    # and split the port's traffic; the API refuses the second.
    code, body = api("PUT", "/instances/%s/haproxy" % third, haproxy_config("%s:8001" % VIP))
    assert code == 409, body
    assert body == ("Address already in use\nline 10: %s:8001 is taken by the haproxy config of "
                    "instance %s\n" % (VIP, first))

    # A config that passes the check but cannot start (its port on the shared VIP
    # is held by a process of the namespace): the address it brought is taken away
    # again, the shared one stays.
    holder = subprocess.Popen(list(namespace.prefix) + [
        sys.executable, "-c", "import socket, time; s = socket.socket(); "
        "s.bind((%r, 8009)); s.listen(); time.sleep(60)" % VIP])
    try:
        assert fetch_port_open(namespace, VIP, 8009)
        code, body = api("PUT", "/instances/%s/haproxy" % third,
                         haproxy_config("%s:8003" % VIP_OTHER, "%s:8009" % VIP))
    finally:
        holder.kill()
        holder.wait()
    assert code == 409, body
    assert "Address already in use" in body and "[ALERT]" in body
    assert VIP_OTHER not in addresses(namespace)
    assert ("APPLIANCE-VIP-IN", VIP_OTHER) not in accounting(namespace, "iptables-save")[0]
    assert api("GET", "/instances/" + third)[0] == 404

    code, body = api("DELETE", "/instances/" + first)
    assert (code, body) == (200, "OK\nhaproxy daemon %s killed.\n" % first)
    assert VIP in addresses(namespace) and VIP6 not in addresses(namespace)
    assert set(accounting(namespace, "iptables-save")[0]) == {
        ("APPLIANCE-VIP-IN", VIP), ("APPLIANCE-VIP-OUT", VIP)}
    assert accounting(namespace, "ip6tables-save")[0] == {}
    assert fetch(namespace, "http://%s:8002/" % VIP) == "vip-ok"

    code, body = api("DELETE", "/instances/" + second)
    assert code == 200, body
    assert addresses(namespace) & {VIP, VIP6} == set()
    assert accounting(namespace, "iptables-save")[0] == {}


def test_moving_an_instance_to_another_ip_releases_the_old_one(namespace, api):
    instance = str(uuid.uuid4())
    assert api("PUT", "/instances/%s/haproxy" % instance, haproxy_config("%s:8101" % VIP))[0] == 201
    assert VIP in addresses(namespace)
    code, body = api("PUT", "/instances/%s/haproxy" % instance,
                     haproxy_config("%s:8101" % VIP_OTHER))
    assert code == 201, body
    assert "reloaded" in body
    assert VIP not in addresses(namespace) and VIP_OTHER in addresses(namespace)
    assert fetch(namespace, "http://%s:8101/" % VIP_OTHER) == "vip-ok"
    assert api("DELETE", "/instances/" + instance)[0] == 200
    assert VIP_OTHER not in addresses(namespace)


def test_octctl_reconcile_repairs_what_was_broken_by_hand(namespace, api):
    """`octctl reconcile` (also run before lighttpd starts at boot) converges
    the machine to the stored configs: a lost address back, a leaked one the
    API had added gone, a duplicate rule and jump gone; the operator's own
    address kept. A second run finds nothing to do and writes nothing."""
    instance = str(uuid.uuid4())
    assert api("PUT", "/instances/%s/haproxy" % instance, haproxy_config("%s:8201" % VIP))[0] \
        == 201
    leaked, operators = "192.0.2.201", "192.0.2.202"
    namespace.run("ip", "addr", "del", VIP + "/32", "dev", "vip0")
    namespace.run("ip", "addr", "add", leaked + "/32", "dev", "vip0")
    namespace.run("ip", "addr", "add", operators + "/32", "dev", "vip0")
    record = os.path.join(api.state_dir, "owned-addresses.json")
    with open(record, "w") as file:  # as a request killed right after adding it leaves it
        file.write('["%s", "%s"]' % (VIP, leaked))
    namespace.run("iptables", "-A", "APPLIANCE-VIP-IN", "-d", VIP + "/32", "-m", "comment",
                  "--comment", "appliance-api service ip")
    namespace.run("iptables", "-I", "INPUT", "-j", "APPLIANCE-VIP-IN")

    octctl = list(namespace.prefix) + [os.path.join(ROOT, "bin", "octctl"), "--config",
                                       os.path.join(api.folder, "appliance-api.ini"),
                                       "reconcile"]
    first = subprocess.run(octctl, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert first.returncode == 0, first.stdout
    assert first.stdout == "service IPs: 1 desired, added %s, removed %s\n" % (VIP, leaked)
    assert addresses(namespace) == {VIP, operators}
    rules, hooks = accounting(namespace, "iptables-save")
    assert set(rules) == {("APPLIANCE-VIP-IN", VIP), ("APPLIANCE-VIP-OUT", VIP)}
    assert hooks == {("INPUT", "APPLIANCE-VIP-IN"), ("OUTPUT", "APPLIANCE-VIP-OUT")}
    assert namespace.accounting()[1] == [("INPUT", "APPLIANCE-VIP-IN"),
                                         ("OUTPUT", "APPLIANCE-VIP-OUT")]
    assert fetch(namespace, "http://%s:8201/" % VIP) == "vip-ok"

    def saved():  # without the dated comment lines
        return [l for l in namespace.run("iptables-save", "-c").splitlines()
                if not l.startswith("#")]
    before = saved()
    again = subprocess.run(octctl, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert again.stdout == "service IPs: 1 desired, added none, removed none\n"
    assert saved() == before

    assert api("DELETE", "/instances/" + instance)[0] == 200
    assert addresses(namespace) == {operators}
    assert namespace.chains() == []
    namespace.run("ip", "addr", "del", operators + "/32", "dev", "vip0")
