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
        plan = AddressPlan(desired, owned, self.addresses_on_interface())
        # The record first: a request killed after adding must not leak an
        # address nobody knows the API added.
        self._write_owned(plan.owned_while_adding)
        for address in plan.to_add:
            self._add_address(address)
        self.converge_accounting(desired)
        self.remove_addresses(plan.to_remove)
        still = self.addresses_on_interface() if plan.to_remove else set()
        self._write_owned(plan.owned_after(still))

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
        return read_accounting(result.output, self.chain_in, self.chain_out)

    def _converge_chains(self, version, desired):
        lines = plan_chains(self.accounting(version), desired, self.chain_in, self.chain_out)
        if lines is not None:
            self._command([self._program(version, "-restore"), "-w", "--noflush",
                           "--counters"], True, stdin="\n".join(lines) + "\n")

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


# Deciding, apart from doing: what converge and _converge_chains will do,
# worked out from what is desired and what is there, without running a
# command (tests/unit/test_network.py runs them without root).

class AddressPlan:
    """The VIP interface's addresses: desired, what the API's record says it
    owns, and what is present. Only addresses the API owns are removed: an
    operator's own stay."""

    def __init__(self, desired, owned, present):
        self.desired, self.owned = set(desired), set(owned)
        self.to_add = sorted(self.desired - set(present), key=sort_key)
        self.to_remove = sorted((self.owned - self.desired) & set(present), key=sort_key)
        self.owned_while_adding = self.owned | set(self.to_add)

    def owned_after(self, still_present):
        """The record once done: what is desired, and a removal that did not
        take (still_present) so that the next converge tries again."""
        return (self.owned_while_adding & self.desired) | (set(self.to_remove)
                                                           & set(still_present))


def read_accounting(saved, chain_in, chain_out):
    """What iptables-save -c printed of ours: {"in": [(address, (packets,
    bytes))], "out": [...], "other": rules in our chains that are not ours,
    "jumps": {"INPUT": n, "OUTPUT": n}, "chains": our chains that exist}."""
    found = {"in": [], "out": [], "other": 0, "jumps": {"INPUT": 0, "OUTPUT": 0},
             "chains": set()}
    ours = {chain_in: ("in", "-d"), chain_out: ("out", "-s")}
    for line in saved.splitlines():
        if line.startswith(":") and line[1:].split()[0] in ours:
            found["chains"].add(line[1:].split()[0])
        match = _SAVED_RULE.match(line)
        if not match:
            continue
        packets, byte_count, chain, rest = match.groups()
        words = rest.split()
        if chain in found["jumps"] and words == ["-j", chain_in if chain == "INPUT"
                                                 else chain_out]:
            found["jumps"][chain] += 1
        elif chain in ours:
            key, direction = ours[chain]
            if words[:1] == [direction] and rest.endswith('--comment "%s"' % COMMENT):
                address = str(ipaddress.ip_address(words[1].split("/")[0]))
                found[key].append((address, (int(packets or 0), int(byte_count or 0))))
            else:
                found["other"] += 1
    return found


def plan_chains(current, desired, chain_in, chain_out):
    """The iptables-restore lines (--noflush --counters) that make our chains
    count exactly desired, keeping each address's counters; None when they
    already do. current: read_accounting's answer."""
    wanted = sorted(desired, key=sort_key)
    if desired:
        if (sorted((a for a, _ in current["in"]), key=sort_key) == wanted
                and sorted((a for a, _ in current["out"]), key=sort_key) == wanted
                and not current["other"] and len(current["chains"]) == 2
                and current["jumps"] == {"INPUT": 1, "OUTPUT": 1}):
            return None
    elif not current["chains"] and not any(current["jumps"].values()):
        return None
    counters = {"in": dict(current["in"]), "out": dict(current["out"])}
    lines = ["*filter"]
    if desired:
        # Declaring a chain that exists flushes it (with --noflush too).
        lines += [":%s - [0:0]" % chain_in, ":%s - [0:0]" % chain_out]
        for key, chain, direction in (("in", chain_in, "-d"), ("out", chain_out, "-s")):
            for address in wanted:
                packets, byte_count = counters[key].get(address, (0, 0))
                lines.append('[%d:%d] -A %s %s %s -m comment --comment "%s"'
                             % (packets, byte_count, chain, direction,
                                with_prefix(address), COMMENT))
        for hook, chain in (("INPUT", chain_in), ("OUTPUT", chain_out)):
            jumps = current["jumps"][hook]
            lines += ["-D %s -j %s" % (hook, chain)] * max(0, jumps - 1)
            if jumps == 0:
                lines.append("-I %s 1 -j %s" % (hook, chain))
    else:
        for hook, chain in (("INPUT", chain_in), ("OUTPUT", chain_out)):
            lines += ["-D %s -j %s" % (hook, chain)] * current["jumps"][hook]
        for chain in sorted(current["chains"]):
            lines += ["-F %s" % chain, "-X %s" % chain]
    lines.append("COMMIT")
    return lines


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
