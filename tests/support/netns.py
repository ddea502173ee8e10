"""An appliance inside a network namespace: a veth pair as its VIP
interface, its own lighttpd (network management on), curl and probes run
from inside. Addresses are the documentation ranges (192.0.2.0/24,
2001:db8::/32) on the namespace's own interfaces: no packet leaves it, and
nothing outside it is touched."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
if os.path.join(ROOT, "tools") not in sys.path:
    sys.path.insert(0, os.path.join(ROOT, "tools"))
import devsite  # noqa: E402  (tools/devsite.py)

INTERFACE = "vip0"


def run(*argv, check=True):
    return subprocess.run(argv, check=check, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True).stdout


def host_snapshot():
    """What a test must leave alone: the host's addresses and firewall."""
    return run("ip", "-o", "addr"), run("iptables-save").count("APPLIANCE"), \
        run("ip6tables-save").count("APPLIANCE")


class Namespace:
    """A network namespace with lo up and, by default, a veth pair (INTERFACE
    and its peer) inside it; interface=None leaves the links to the caller."""

    def __init__(self, name, interface=INTERFACE):
        self.name = name
        self.interface = interface
        run("ip", "netns", "add", name)
        self.prefix = ("ip", "netns", "exec", name)
        try:
            self.run("ip", "link", "set", "lo", "up")
            if interface == INTERFACE:
                self.run("ip", "link", "add", INTERFACE, "type", "veth", "peer", "name",
                         INTERFACE + "-peer")
                self.run("ip", "link", "set", INTERFACE, "up")
                self.run("ip", "link", "set", INTERFACE + "-peer", "up")
        except Exception:
            self.close()
            raise

    def run(self, *argv, check=True):
        return run(*self.prefix, *argv, check=check)

    def addresses(self):
        """Addresses on the VIP interface (no prefix length)."""
        output = self.run("ip", "-j", "addr", "show", "dev", self.interface)
        return {info["local"] for link in json.loads(output) for info in link["addr_info"]
                if info.get("scope") == "global"}

    def accounting(self, program="iptables-save"):
        """({(chain, address): [bytes, ...]}, [(hook, chain), ...]) of our chains:
        lists, so a duplicate rule or jump shows."""
        rules, hooks = {}, []
        for line in self.run(program, "-c").splitlines():
            match = re.match(r"\[(\d+):(\d+)\] -A (APPLIANCE-VIP-(?:IN|OUT)) -[sd] (\S+?)/\d+ ",
                             line)
            if match:
                rules.setdefault((match.group(3), match.group(4)), []).append(
                    int(match.group(2)))
            match = re.match(r"\[\d+:\d+\] -A (INPUT|OUTPUT) -j (APPLIANCE-VIP-(?:IN|OUT))",
                             line)
            if match:
                hooks.append(match.groups())
        return rules, sorted(hooks)

    def chains(self, program="iptables-save"):
        return sorted(re.findall(r"^:(APPLIANCE-\S+)", self.run(program), re.M))

    def fetch(self, url, timeout=5):
        return self.run("curl", "-s", "-g", "--max-time", str(timeout), url, check=False)

    def close(self):
        for pid in run("ip", "netns", "pids", self.name, check=False).split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
        run("ip", "netns", "del", self.name, check=False)


class Pair:
    """Two appliances' namespaces joined by a bridge in a third, and a client
    namespace on the same bridge: node addresses 192.0.2.1 and .2, the
    client .3, all /24 on each namespace's eth0."""

    NODES = ("192.0.2.1", "192.0.2.2")
    CLIENT = "192.0.2.3"

    def __init__(self, tag):
        self.bridge = Namespace("appliance-br-%s" % tag, interface=None)
        self.nodes, self.client = [], None
        try:
            self.bridge.run("ip", "link", "add", "br0", "type", "bridge")
            self.bridge.run("ip", "link", "set", "br0", "up")
            for number, address in enumerate(self.NODES, 1):
                self.nodes.append(self._attach("appliance-n%d-%s" % (number, tag),
                                               "n%d" % number, address))
            self.client = self._attach("appliance-cl-%s" % tag, "cl", self.CLIENT)
        except Exception:
            self.close()
            raise

    def _attach(self, name, port, address):
        namespace = Namespace(name, interface="eth0")
        run("ip", "link", "add", "eth0", "netns", name, "type", "veth", "peer", "name", port,
            "netns", self.bridge.name)
        namespace.run("ip", "addr", "add", address + "/24", "dev", "eth0")
        namespace.run("ip", "link", "set", "eth0", "up")
        self.bridge.run("ip", "link", "set", port, "master", "br0")
        self.bridge.run("ip", "link", "set", port, "up")
        namespace.address = address
        namespace.bridge_port = port
        return namespace

    def cut(self, node, up=False):
        """Take node's link to the bridge down (or up again), from the bridge's side."""
        self.bridge.run("ip", "link", "set", node.bridge_port, "up" if up else "down")

    HA_IP = "192.0.2.100"

    def start_sites(self, api_settings=None, pki=None):
        """A Site (lighttpd, the API) on each node, its management address the
        node's; api_settings are added to each node's config."""
        self.sites = []
        for node in self.nodes:
            settings = {"api": {"management_address": node.address},
                        "daemons": {"start_timeout": "10", "stop_timeout": "3"}}
            for section, values in (api_settings or {}).items():
                settings.setdefault(section, {}).update(values)
            self.sites.append(Site(node, address=node.address, pki=pki,
                                   api_settings=settings))
        return self.sites

    def form(self, routing_mode="LAYER2", secret="pairsecret"):
        """POST /topology to both nodes (the first PRIMARY), wait until both
        report OK and the primary holds ha_ip."""
        from .polling import eventually

        for site, role in zip(self.sites, ("PRIMARY", "SECONDARY")):
            answer = site("POST", "/topology", topology_form(role, routing_mode, secret))
            assert answer == (200, "OK\n"), answer
        for site in self.sites:
            assert eventually(lambda: topology_status(site) == "OK", 30, 0.1), \
                site("GET", "/topology")
        assert eventually(lambda: [self.HA_IP in n.addresses() for n in self.nodes]
                          == [True, False], 10), "the primary never held ha_ip"

    def close(self):
        """Back to SINGLE, every instance deleted, every lighttpd stopped, the
        namespaces gone (whatever the tests left)."""
        from .polling import eventually

        for site in getattr(self, "sites", []):
            site("POST", "/topology", "topology=SINGLE")
        for site in getattr(self, "sites", []):
            eventually(lambda: topology_status(site) != "TOPOLOGY-CHANGE", 20, 0.1)
            site.delete_instances()
            site.close()
        for namespace in self.nodes + [self.client, self.bridge]:
            if namespace is not None:
                namespace.close()


# A client in the client namespace: a new connection per request (3 s connect
# timeout), until `requests` were sent, 120 s passed, or the file `stop` exists;
# prints "requests failed", then the seconds (since its start) of each failure.
CLIENT_LOOP = r"""
import os, socket, sys, time
requests, failed, started = 0, [], time.monotonic()
while requests < %(requests)d and time.monotonic() - started < 120 \
        and not (%(stop)r and os.path.exists(%(stop)r)):
    requests += 1
    try:
        with socket.create_connection((%(address)r, 80), timeout=3) as sock:
            sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
            answer = b""
            while True:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                answer += chunk
        if b" 200 " not in answer.split(b"\r\n", 1)[0]:
            failed.append(time.monotonic() - started)
    except OSError:
        failed.append(time.monotonic() - started)
    time.sleep(0.004)
print(requests, len(failed), " ".join("%%.2f" %% t for t in failed), flush=True)
"""


def client_loop(pair, address, requests, stop=""):
    """CLIENT_LOOP started in the pair's client namespace (a Popen; its stdout the answer)."""
    return subprocess.Popen(list(pair.client.prefix) + [
        sys.executable, "-c", CLIENT_LOOP % {"requests": requests, "address": address,
                                             "stop": stop}], stdout=subprocess.PIPE, text=True)


def topology_form(role, routing_mode="LAYER2", secret="pairsecret"):
    """POST /topology's fields for a node of the Pair, as the draft's sample call sends them."""
    primary, secondary = Pair.NODES
    return ("topology=ACTIVE-STANDBY&routing-mode=%s&role=%s&ha_ip=%s&primary_ip=%s"
            "&all_ips[0]=%s&all_ips[1]=%s&secret=%s"
            % (routing_mode, role, Pair.HA_IP, primary, primary, secondary, secret))


def topology_status(site):
    code, body = site("GET", "/topology")
    return json.loads(body)["topology_status"] if code == 200 else None


class Site:
    """The API served by lighttpd inside a namespace, with network management on."""

    def __init__(self, namespace, port=8443, api_settings=None, address="127.0.0.1", pki=None):
        """pki: a tools/pki.py folder to share (two nodes of a pair trust each
        other's client certificates); by default a new one of its own."""
        self.namespace = namespace
        self.address = address
        # Short: haproxy allows unix socket paths of 97 bytes.
        self.folder = tempfile.mkdtemp(prefix="an-", dir="/tmp")
        self.pki = pki or os.path.join(self.folder, "pki")
        if pki is None:
            run(sys.executable, os.path.join(ROOT, "tools", "pki.py"), "--out", self.pki,
                "--server-address", address)
        self.port = port
        self.state_dir = os.path.join(self.folder, "state")
        self.instances_dir = os.path.join(self.state_dir, "instances")
        self.conf = devsite.write_site(self.folder, [address], port, self.pki, sys.executable,
                                       manage_network=True, vip_interface=namespace.interface,
                                       api_settings=api_settings)
        self.lighttpd = devsite.start_lighttpd(self.conf, address, port, prefix=namespace.prefix)

    def restart(self):
        """Stop lighttpd and start it again (what it started goes on)."""
        devsite.stop_lighttpd(self.lighttpd)
        self.lighttpd = devsite.start_lighttpd(self.conf, self.address, self.port,
                                               prefix=self.namespace.prefix)

    def curl_argv(self, method, path, data=None):
        argv = list(self.namespace.prefix) + [
            "curl", "-s", "-S", "--max-time", "60", "--cacert", os.path.join(self.pki, "ca.pem"),
            "-E", os.path.join(self.pki, "client.pem"), "-X", method, "-w", "\n%{http_code}",
            "https://%s:%d%s" % (self.address, self.port, path)]
        if data is not None:
            argv += ["--data-binary", "@-", "-H", "Content-Type: text/plain"]
        return argv

    def __call__(self, method, path, data=None):
        """(status, body) of one request; status 0 when there was no answer."""
        completed = subprocess.run(self.curl_argv(method, path, data), input=data,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        body, _, code = completed.stdout.rpartition("\n")
        return int(code or 0), body

    def cgi_processes(self):
        """The API's CGI processes running now (children of this lighttpd)."""
        import psutil

        try:
            return [p for p in psutil.Process(self.lighttpd.pid).children()
                    if "appliance-api" in " ".join(p.cmdline())]
        except psutil.Error:
            return []

    def delete_instances(self):
        """DELETE every instance through the API: what the API started, the API stops."""
        for instance in self("GET", "/instances")[1].split():
            self("DELETE", "/instances/" + instance)

    def close(self):
        devsite.stop_lighttpd(self.lighttpd)
        shutil.rmtree(self.folder, ignore_errors=True)


def shared_pki(folder, addresses):
    """One tools/pki.py PKI for both nodes of a pair (server certificate for
    every address), plus sync-client.pem: a standby's own client certificate
    for its pull, issued by the same CA as the API's."""
    run(sys.executable, os.path.join(ROOT, "tools", "pki.py"), "--out", folder,
        *[word for address in addresses for word in ("--server-address", address)])
    import pki as pki_tool  # tools/pki.py
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    with open(os.path.join(folder, "ca.pem"), "rb") as file:
        ca_cert = x509.load_pem_x509_certificate(file.read())
    with open(os.path.join(folder, "ca.key"), "rb") as file:
        ca_key = serialization.load_pem_private_key(file.read(), password=None)
    pki_tool.write_private(os.path.join(folder, "sync-client.pem"), pki_tool.pem_bundle(
        *pki_tool.make_leaf(ca_cert, ca_key, SYNC_NAME, client=True)))
    return folder


SYNC_NAME = "appliance-sync"  # the CN of shared_pki's sync-client.pem


def sync_settings(pki, port=8443):
    """[sync] for a node of a pair sharing shared_pki's PKI: the peer's sync
    identity may read private keys (both nodes use the same one)."""
    return {"ca_file": os.path.join(pki, "ca.pem"),
            "client_certificate": os.path.join(pki, "sync-client.pem"), "port": str(port),
            "peer_client_names": SYNC_NAME}


def haproxy_config(*binds, extra_global="", extra_frontend="", answer="vip-ok"):
    """A haproxy config answering "vip-ok" on binds. noreuseport: haproxy binds
    with SO_REUSEPORT by default and two could then share a port."""
    lines = ["global", "    maxconn 64", "    noreuseport", extra_global, "defaults",
             "    mode http", "    timeout connect 1s", "    timeout client 5s",
             "    timeout server 5s", "frontend web"]
    lines += ["    bind %s" % bind for bind in binds]
    lines += [extra_frontend,
              '    http-request return status 200 content-type text/plain string "%s"' % answer]
    return "\n".join(line for line in lines if line) + "\n"
