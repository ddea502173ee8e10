"""Service IPs and accounting rules, for real, inside a network namespace.

lighttpd, the CGI and the haproxy daemons all run inside a namespace this
test creates, with a veth pair as the VIP interface. Addresses are the
documentation ranges (192.0.2.0/24, 2001:db8::/32) on the namespace's own
interface: no packet leaves it, and nothing outside it is touched.
"""
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid

import pytest

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import devsite  # noqa: E402

VIP = "192.0.2.10"
VIP_OTHER = "192.0.2.20"
VIP6 = "2001:db8::10"
INTERFACE = "vip0"


def run(*argv, check=True):
    return subprocess.run(argv, check=check, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True).stdout


def host_snapshot():
    """What the test must leave alone: the host's addresses and firewall."""
    return run("ip", "-o", "addr"), run("iptables-save").count("APPLIANCE"), \
        run("ip6tables-save").count("APPLIANCE")


@pytest.fixture(scope="module")
def namespace():
    name = "appliance-test-%d" % os.getpid()
    before = host_snapshot()
    run("ip", "netns", "add", name)
    try:
        inside = ("ip", "netns", "exec", name)
        run(*inside, "ip", "link", "set", "lo", "up")
        run(*inside, "ip", "link", "add", INTERFACE, "type", "veth", "peer", "name", "vip0-peer")
        run(*inside, "ip", "link", "set", INTERFACE, "up")
        run(*inside, "ip", "link", "set", "vip0-peer", "up")
        yield inside
    finally:
        for pid in run("ip", "netns", "pids", name, check=False).split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
        run("ip", "netns", "del", name, check=False)
    assert host_snapshot() == before


@pytest.fixture(scope="module")
def api(namespace):
    folder = tempfile.mkdtemp(prefix="appliance-netns-")
    pki_dir = os.path.join(folder, "pki")
    run(sys.executable, os.path.join(ROOT, "tools", "pki.py"), "--out", pki_dir)
    port = 8443
    conf = devsite.write_site(folder, ["127.0.0.1"], port, pki_dir, sys.executable,
                              manage_network=True, vip_interface=INTERFACE)
    lighttpd = devsite.start_lighttpd(conf, "127.0.0.1", port, prefix=namespace)

    def curl(method, path, data=None):
        argv = list(namespace) + ["curl", "-s", "-S", "--cacert", os.path.join(pki_dir, "ca.pem"),
                                  "-E", os.path.join(pki_dir, "client.pem"), "-X", method,
                                  "-w", "\n%{http_code}", "https://127.0.0.1:%d%s" % (port, path)]
        if data is not None:
            argv += ["--data-binary", "@-", "-H", "Content-Type: text/plain"]
        output = subprocess.run(argv, input=data, stdout=subprocess.PIPE, text=True,
                                check=True).stdout
        body, _, code = output.rpartition("\n")
        return int(code), body

    try:
        yield curl
    finally:
        devsite.stop_lighttpd(lighttpd)
        shutil.rmtree(folder, ignore_errors=True)


def haproxy_config(*binds):
    # noreuseport: haproxy binds with SO_REUSEPORT by default, and two of them
    # could then share a port; without it a taken port fails the start.
    lines = ["global", "    maxconn 64", "    noreuseport", "defaults", "    mode http", "    timeout connect 1s",
             "    timeout client 5s", "    timeout server 5s", "frontend web"]
    lines += ["    bind %s" % bind for bind in binds]
    lines += ['    http-request return status 200 content-type text/plain string "vip-ok"']
    return "\n".join(lines) + "\n"


def addresses(namespace):
    return set(re.findall(r"inet6? (\S+)/", run(*namespace, "ip", "addr", "show", "dev", INTERFACE)))


def accounting(namespace, program):
    """{(chain, address): bytes} from `iptables-save -c`, plus the hooks that jump to our chains."""
    rules, hooks = {}, set()
    for line in run(*namespace, program, "-c").splitlines():
        match = re.match(r"\[(\d+):(\d+)\] -A (APPLIANCE-VIP-(?:IN|OUT)) -[sd] (\S+?)/\d+ ", line)
        if match:
            rules[(match.group(3), match.group(4))] = int(match.group(2))
        match = re.match(r"\[\d+:\d+\] -A (INPUT|OUTPUT) -j (APPLIANCE-VIP-(?:IN|OUT))", line)
        if match:
            hooks.add(match.groups())
    return rules, hooks


def fetch_port_open(namespace, address, port, attempts=50):
    probe = "import socket; socket.create_connection((%r, %d), 0.5)" % (address, port)
    for _ in range(attempts):
        if subprocess.run(list(namespace) + [sys.executable, "-c", probe],
                          stderr=subprocess.DEVNULL).returncode == 0:
            return True
    return False


def fetch(namespace, url):
    return run(*namespace, "curl", "-s", "-g", "--max-time", "5", url)


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
    assert body == ("Address already in use\n%s:8001 is taken by the haproxy config of instance "
                    "%s\n" % (VIP, first))

    # A config that passes the check but cannot start (its port on the shared VIP
    # is held by a process of the namespace): the address it brought is taken away
    # again, the shared one stays.
    holder = subprocess.Popen(list(namespace) + [
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
