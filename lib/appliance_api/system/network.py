"""Service IPs (VIPs) on the VIP interface, and one accounting rule per IP,
converged to a desired set.

Accounting lives in two chains of our own, jumped to once each from INPUT and
OUTPUT (local traffic passes both): <prefix>-VIP-IN counts traffic to a
service IP, <prefix>-VIP-OUT traffic from it. Rules have no target, so they
only count; `iptables-save -c` shows the packets and bytes. ip6tables does
the same for IPv6.

converge() is idempotent and repairs whatever a killed request left: it
reads what the machine has, and changes only the difference. Both chains
(and the jumps) are rewritten in one `iptables-restore --noflush` transaction,
keeping each surviving rule's counters; nothing is written when nothing
differs. Addresses the API did not add (an operator's own) are never removed:
the API keeps a record of those it added (layout.owned_addresses_path).
Callers hold the appliance lock (system.locks.appliance_lock).
"""
import ipaddress
import json
import re

from . import commands, files
from . import MachineError
from ..layout import owned_addresses_path

COMMENT = "appliance-api service ip"
_SAVED_RULE = re.compile(r"^(?:\[(\d+):(\d+)\] )?-A (\S+) (.*)$")


class Network:
    def __init__(self, config):
        self.config = config
        self.enabled = config.flag("network", "manage")
        self.interface = config.get("network", "vip_interface")
        prefix = config.get("network", "chain_prefix")
        self.chain_in = prefix + "-VIP-IN"
        self.chain_out = prefix + "-VIP-OUT"
        self.record_path = owned_addresses_path(config.state_dir)

    def converge(self, desired):
        """Make the VIP interface and the accounting chains carry exactly the
        service IPs in desired (strings). On failure (a command refused) the
        machine is left part of the way; the next converge finishes it."""
        if not self.enabled:
            return
        desired = {str(ipaddress.ip_address(a)) for a in desired}
        owned = self.owned()
        present = self.addresses_on_interface()
        to_add = desired - present
        to_remove = (owned - desired) & present
        # The record first: a request killed after adding must not leak an
        # address nobody knows the API added.
        self._write_owned(owned | to_add)
        for address in sorted(to_add, key=sort_key):
            self._add_address(address)
        self.converge_accounting(desired)
        self.remove_addresses(to_remove)
        # An address that would not go stays in the record: the next converge tries again.
        left = to_remove & self.addresses_on_interface() if to_remove else set()
        self._write_owned(((owned | to_add) & desired) | left)

    def converge_accounting(self, desired):
        """The accounting chains alone (in a pair, keepalived moves the addresses)."""
        if not self.enabled:
            return
        for version in (4, 6):
            self._converge_chains(version, {a for a in desired
                                            if ipaddress.ip_address(a).version == version})

    def remove_addresses(self, addresses):
        for address in sorted(addresses, key=sort_key):
            self._ip(["addr", "del", with_prefix(address), "dev", self.interface], check=False)

    def forget_owned(self):
        """The API owns no address any more (keepalived does)."""
        files.remove(self.record_path)

    def owned(self):
        try:
            with open(self.record_path) as file:
                return {str(ipaddress.ip_address(a)) for a in json.load(file)}
        except FileNotFoundError:
            return set()
        except (OSError, ValueError, TypeError):
            return set()  # unreadable: own nothing rather than remove an operator's address

    def addresses_on_interface(self):
        return set(addresses_in(self._ip(["-j", "addr", "show", "dev", self.interface]).output))

    def accounting(self, version):
        """What the filter table has of ours: {"in": [(address, (packets, bytes))],
        "out": [...], "other": rules in our chains that are not ours,
        "jumps": {"INPUT": n, "OUTPUT": n}, "chains": our chains that exist}."""
        result = self._command([self._program(version, "-save"), "-c", "-t", "filter"], True)
        found = {"in": [], "out": [], "other": 0, "jumps": {"INPUT": 0, "OUTPUT": 0},
                 "chains": set()}
        ours = {self.chain_in: ("in", "-d"), self.chain_out: ("out", "-s")}
        for line in result.output.splitlines():
            if line.startswith(":") and line[1:].split()[0] in ours:
                found["chains"].add(line[1:].split()[0])
            match = _SAVED_RULE.match(line)
            if not match:
                continue
            packets, byte_count, chain, rest = match.groups()
            words = rest.split()
            if chain in found["jumps"] and words == ["-j", self.chain_in if chain == "INPUT"
                                                     else self.chain_out]:
                found["jumps"][chain] += 1
            elif chain in ours:
                key, direction = ours[chain]
                if words[:1] == [direction] and rest.endswith('--comment "%s"' % COMMENT):
                    address = str(ipaddress.ip_address(words[1].split("/")[0]))
                    found[key].append((address, (int(packets or 0), int(byte_count or 0))))
                else:
                    found["other"] += 1
        return found

    def _converge_chains(self, version, desired):
        current = self.accounting(version)
        wanted = sorted(desired, key=sort_key)
        if desired:
            if (sorted((a for a, _ in current["in"]), key=sort_key) == wanted
                    and sorted((a for a, _ in current["out"]), key=sort_key) == wanted
                    and not current["other"] and len(current["chains"]) == 2
                    and current["jumps"] == {"INPUT": 1, "OUTPUT": 1}):
                return
        elif not current["chains"] and not any(current["jumps"].values()):
            return
        counters = {"in": dict(current["in"]), "out": dict(current["out"])}
        lines = ["*filter"]
        if desired:
            # Declaring a chain that exists flushes it (with --noflush too).
            lines += [":%s - [0:0]" % self.chain_in, ":%s - [0:0]" % self.chain_out]
            for key, chain, direction in (("in", self.chain_in, "-d"),
                                          ("out", self.chain_out, "-s")):
                for address in wanted:
                    packets, byte_count = counters[key].get(address, (0, 0))
                    lines.append('[%d:%d] -A %s %s %s -m comment --comment "%s"'
                                 % (packets, byte_count, chain, direction,
                                    with_prefix(address), COMMENT))
            for hook, chain in (("INPUT", self.chain_in), ("OUTPUT", self.chain_out)):
                jumps = current["jumps"][hook]
                lines += ["-D %s -j %s" % (hook, chain)] * max(0, jumps - 1)
                if jumps == 0:
                    lines.append("-I %s 1 -j %s" % (hook, chain))
        else:
            for hook, chain in (("INPUT", self.chain_in), ("OUTPUT", self.chain_out)):
                lines += ["-D %s -j %s" % (hook, chain)] * current["jumps"][hook]
            for chain in sorted(current["chains"]):
                lines += ["-F %s" % chain, "-X %s" % chain]
        lines.append("COMMIT")
        self._command([self._program(version, "-restore"), "-w", "--noflush", "--counters"],
                      True, stdin="\n".join(lines) + "\n")

    def _add_address(self, address):
        if ipaddress.ip_address(address).version == 6:
            # Without nodad the address stays tentative for a moment and a bind fails.
            self._ip(["-6", "addr", "replace", with_prefix(address), "dev", self.interface,
                      "nodad"])
        else:
            self._ip(["addr", "replace", with_prefix(address), "dev", self.interface])

    def _write_owned(self, addresses):
        data = json.dumps(sorted(addresses, key=sort_key)).encode()
        if files.read(self.record_path) != data:
            files.write_atomic(self.record_path, data, 0o600)

    def _program(self, version, suffix):
        # iptables-save and -restore sit beside the configured iptables.
        return self.config.get("programs", "ip6tables" if version == 6 else "iptables") + suffix

    def _ip(self, arguments, check=True):
        return self._command([self.config.get("programs", "ip")] + arguments, check)

    def _command(self, argv, check, stdin=None):
        result = commands.run(argv, stdin=stdin)
        if check and not result.ok:
            raise MachineError("%s failed: %s" % (" ".join(argv), " ".join(result.output.split())))
        return result


def with_prefix(address):
    ip = ipaddress.ip_address(address)
    return "%s/%d" % (ip, 128 if ip.version == 6 else 32)


def sort_key(address):
    ip = ipaddress.ip_address(address)
    return ip.version, int(ip)


def addresses_in(ip_json, scope=None):
    """The addresses in `ip -j addr show`'s answer, normalised, in order: the
    one reader of it (the API's own addresses, the VIP interface's, the
    management addresses lighttpd listens on). scope="global" keeps only
    those; an entry without a readable address is left out."""
    found = []
    for link in json.loads(ip_json or "[]"):
        for info in link.get("addr_info", []):
            if scope is not None and info.get("scope") != scope:
                continue
            try:
                found.append(str(ipaddress.ip_address(info["local"])))
            except (KeyError, ValueError):
                pass
    return found
