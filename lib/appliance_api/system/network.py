"""Service IPs (VIPs) on the VIP interface, and one accounting rule per IP.

Accounting lives in two chains of our own, jumped to from INPUT and OUTPUT
(local traffic passes both): <prefix>-VIP-IN counts traffic to a service IP,
<prefix>-VIP-OUT traffic from it. Rules have no target, so they only count;
`iptables-save -c` shows the packets and bytes. ip6tables does the same for IPv6.
"""
import ipaddress

from . import commands
from ..errors import ServerError

COMMENT = "appliance-api service ip"


class Network:
    def __init__(self, config):
        self.config = config
        self.enabled = config.flag("network", "manage")
        self.interface = config.get("network", "vip_interface")
        prefix = config.get("network", "chain_prefix")
        self.chain_in = prefix + "-VIP-IN"
        self.chain_out = prefix + "-VIP-OUT"

    def add(self, address):
        """Make sure address is on the VIP interface and counted; idempotent."""
        if not self.enabled:
            return
        ip = ipaddress.ip_address(address)
        if ip.version == 6:
            # Without nodad the address stays tentative for a moment and a bind fails.
            self._ip(["-6", "addr", "replace", "%s/128" % ip, "dev", self.interface, "nodad"])
        else:
            self._ip(["addr", "replace", "%s/32" % ip, "dev", self.interface])
        self._ensure_chains(ip.version)
        for chain, direction in ((self.chain_in, "-d"), (self.chain_out, "-s")):
            rule = [chain, direction, str(ip), "-m", "comment", "--comment", COMMENT]
            if not self._iptables(ip.version, ["-C"] + rule, check=False).ok:
                self._iptables(ip.version, ["-A"] + rule)

    def remove(self, address):
        """Take address off the interface and drop its rules; missing parts are fine."""
        if not self.enabled:
            return
        ip = ipaddress.ip_address(address)
        length = 128 if ip.version == 6 else 32
        self._ip(["addr", "del", "%s/%d" % (ip, length), "dev", self.interface], check=False)
        for chain, direction in ((self.chain_in, "-d"), (self.chain_out, "-s")):
            rule = [chain, direction, str(ip), "-m", "comment", "--comment", COMMENT]
            while self._iptables(ip.version, ["-C"] + rule, check=False).ok:
                self._iptables(ip.version, ["-D"] + rule)

    def _ensure_chains(self, version):
        for chain, hook in ((self.chain_in, "INPUT"), (self.chain_out, "OUTPUT")):
            if not self._iptables(version, ["-S", chain], check=False).ok:
                self._iptables(version, ["-N", chain])
            if not self._iptables(version, ["-C", hook, "-j", chain], check=False).ok:
                self._iptables(version, ["-I", hook, "-j", chain])

    def _iptables(self, version, arguments, check=True):
        program = self.config.get("programs", "ip6tables" if version == 6 else "iptables")
        return self._command([program, "-w"] + arguments, check)

    def _ip(self, arguments, check=True):
        return self._command([self.config.get("programs", "ip")] + arguments, check)

    def _command(self, argv, check):
        result = commands.run(argv)
        if check and not result.ok:
            raise ServerError("%s failed: %s" % (" ".join(argv), " ".join(result.output.split())))
        return result


def listeners(service, rendered_text):
    """(address, ports) of each TCP listener a rendered config declares
    (haproxy `bind`, stunnel `accept`): address an ip_address, or None for
    every address; ports a range. Sockets and host names are left out."""
    found = []
    for endpoint in _endpoints(service, rendered_text):
        listener = _parse_endpoint(endpoint)
        if listener is not None:
            found.append(listener)
    return found


def bound_addresses(service, rendered_text, management_address):
    """The service IPs a rendered config listens on. Wildcards, loopback, host
    names, sockets and the management address are not service IPs."""
    return {str(ip) for ip, _ports in listeners(service, rendered_text)
            if ip is not None and not ip.is_loopback and str(ip) != management_address}


def overlap(first, second):
    """Whether two listeners would share a port. haproxy binds with SO_REUSEPORT,
    so such a pair would not fail: it would split one port's traffic between two."""
    (ip1, ports1), (ip2, ports2) = first, second
    same_address = ip1 is None or ip2 is None or ip1 == ip2
    return same_address and ports1.start < ports2.stop and ports2.start < ports1.stop


def describe(listener):
    ip, ports = listener
    host = "*" if ip is None else ("[%s]" % ip if ip.version == 6 else str(ip))
    port = str(ports.start) if len(ports) == 1 else "%d-%d" % (ports.start, ports.stop - 1)
    return "%s:%s" % (host, port)


def _endpoints(service, rendered_text):
    for line in rendered_text.splitlines():
        words = line.split("#", 1)[0].split()
        if service == "haproxy" and len(words) >= 2 and words[0] == "bind":
            yield from words[1].split(",")
        elif service == "stunnel" and "=" in line and line.split("=", 1)[0].strip() == "accept":
            yield line.split("=", 1)[1].split(";", 1)[0].strip()


def _parse_endpoint(endpoint):
    """(address or None, ports) of "ADDR:PORT", "[ADDR]:PORT", "ipv4@ADDR:PORT",
    ":PORT", "*:PORT", stunnel's bare "PORT"; None for anything else."""
    if "@" in endpoint:
        family, endpoint = endpoint.split("@", 1)
        if family not in ("ipv4", "ipv6", "tcp", "tcp4", "tcp6"):
            return None  # unix sockets, abns, fd, sockpair
    host, _separator, port = endpoint.rpartition(":")
    host = host.strip("[]")
    try:
        ip = None if host in ("", "*") else ipaddress.ip_address(host)
        first, _dash, last = port.partition("-")
        ports = range(int(first), int(last or first) + 1)
    except ValueError:
        return None
    if ip is not None and ip.is_unspecified:
        ip = None
    return (ip, ports) if ports else None
