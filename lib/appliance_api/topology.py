"""This appliance's place in a cluster (../shared/spec/ha-and-listeners.md):
the stored topology, its validation, and the transition between two.

What this appliance makes of each topology:

- SINGLE: no VRRP daemon; the service IPs are on the VIP interface.
- ACTIVE-STANDBY: keepalived (system/vrrp.py) runs VRRPv2 unicast between
  the addresses in all_ips; the node holding ha_ip is active. The service IPs
  move with ha_ip (VRRP addresses of the same instance), and haproxy runs on
  both nodes, binding them with ip_nonlocal_bind.
- ACTIVE-ACTIVE: refused (409): both nodes would have to carry each service
  IP at once, which takes a distribution scheme (ECMP, a shared MAC) this
  appliance does not have.
- routing-mode LAYER2 and ROUTED run the same unicast VRRP (the peers may sit
  in different subnets either way); the appliance runs no routing daemon, so
  under ROUTED the network must route ha_ip and the service IPs to both nodes.

A change is checked in the POST (the form, one address family, and
`keepalived -t` on the configuration it would run), stored with
topology_status TOPOLOGY-CHANGE and carried out by a detached worker
(`octctl topology-apply`) holding topology.lock; changes to instances get 503
meanwhile. The worker's last step, under the appliance lock, reads the stored
configs again, so a change that slipped in during the transition is in it.

The desired state is the last topology carried out (the stored one while its
status is OK; kept as "applied" in topology.json while a change runs or after
it failed). A transition whose worker died, or that ran past its deadline,
reads as FAILED: the worker puts the machine back to the last topology carried
out, and neither a tenant's change nor `octctl reconcile` carries a FAILED
topology out later; only a new POST /topology does (the same form again
retries it).
"""
import json

from .errors import Conflict
from .layout import topology_lock_path, topology_path
from .system import files

TOPOLOGIES = ("SINGLE", "ACTIVE-STANDBY", "ACTIVE-ACTIVE")
ROLES = ("PRIMARY", "SECONDARY")
ROUTING_MODES = ("LAYER2", "ROUTED")
FIELDS = ("topology", "routing-mode", "role", "ha_ip", "primary_ip", "secret")
# What a carried-out topology is made of (the "applied" record).
TOPOLOGY_FIELDS = FIELDS + ("all_ips",)
# A pair has two nodes; a few more addresses at most (a node with a second one).
MAX_ALL_IPS = 8
# A VRRPv2 password travels in clear and keepalived uses 8 characters of it;
# no blanks, quotes, braces or comment signs: it is written into keepalived.conf.
SECRET_CHARACTERS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
                        "._~@%^&*+=:,/-")

TRANSITION = "TOPOLOGY-CHANGE"

NEVER_CONFIGURED = {"topology": "SINGLE", "role": "PRIMARY", "primary_ip": "", "ha_ip": "",
                    "all_ips": [], "routing-mode": "LAYER2", "secret": "",
                    "status": "OK", "reason": ""}


def parse_form(body, own_addresses):
    """The topology a POST asks for, from its form fields; Conflict (409,
    "Invalid request" then one line per parameter) for anything wrong."""
    from urllib.parse import parse_qsl

    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        raise Conflict("Invalid request", "body: not UTF-8 form data")
    fields, entries, problems, unknown = {}, [], [], []
    for name, value in pairs:
        if name.startswith("all_ips[") and name.endswith("]"):
            entries.append((name[8:-1], value.strip()))
        elif name in FIELDS:
            fields[name] = value.strip()
        else:
            unknown.append(name)
    problems += ["%s: unknown parameter" % name for name in unknown[:10]]
    if len(unknown) > 10:
        problems.append("... and %d more unknown parameters" % (len(unknown) - 10))
    all_ips = {}
    if len(entries) > MAX_ALL_IPS:
        problems.append("all_ips: %d addresses, at most %d (a pair has 2 nodes)"
                        % (len(entries), MAX_ALL_IPS))
        entries = []
    for index_text, value in entries:
        # ASCII digits only: str.isdigit() also takes "²", which int() refuses.
        if not (index_text.isascii() and index_text.isdigit()):
            problems.append("all_ips[%s]: the index must be a number 0, 1, 2, ..."
                            % index_text[:20])
        elif int(index_text) in all_ips:
            problems.append("all_ips[%s]: index given twice" % index_text[:20])
        else:
            all_ips[int(index_text)] = value
    wanted = dict(NEVER_CONFIGURED)
    topology = fields.get("topology", "")
    if topology not in TOPOLOGIES:
        problems.append("topology: must be SINGLE, ACTIVE-STANDBY or ACTIVE-ACTIVE")
    elif topology == "ACTIVE-ACTIVE":
        problems.append("topology: ACTIVE-ACTIVE is not supported on this appliance (each "
                        "service IP would have to be active on both nodes at once)")
    wanted["topology"] = topology
    routing_mode = fields.get("routing-mode", "LAYER2")
    if routing_mode not in ROUTING_MODES:
        problems.append("routing-mode: must be LAYER2 or ROUTED")
    wanted["routing-mode"] = routing_mode
    role = fields.get("role", "PRIMARY")
    if role not in ROLES:
        problems.append("role: must be PRIMARY or SECONDARY")
    wanted["role"] = role
    if sorted(all_ips) != list(range(len(all_ips))):
        problems.append("all_ips: indexes must run 0, 1, 2, ... without gaps")
    addresses, seen = [], set()
    for index in sorted(all_ips):
        address = _address(all_ips[index])
        if address is None:
            problems.append("all_ips[%d]: %r is not an IP address" % (index, all_ips[index]))
        elif address in seen:
            problems.append("all_ips[%d]: %s is listed twice" % (index, address))
        else:
            addresses.append(address)
            seen.add(address)
    wanted["all_ips"] = addresses
    for name in ("ha_ip", "primary_ip"):
        text = fields.get(name, "")
        address = _address(text)
        if text and address is None:
            problems.append("%s: %r is not an IP address" % (name, text))
        wanted[name] = address or ""
    wanted["secret"] = fields.get("secret", "")

    if topology == "ACTIVE-STANDBY":
        problems += _pair_problems(wanted, own_addresses)
    elif topology == "SINGLE" and role != "PRIMARY":
        problems.append("role: a SINGLE appliance is PRIMARY")
    if problems:
        raise Conflict("Invalid request", "\n".join(problems))
    if topology == "SINGLE":
        wanted.update(primary_ip="", ha_ip="", all_ips=[], secret="")
    return wanted


def _pair_problems(wanted, own_addresses):
    problems = []
    addresses = wanted["all_ips"]
    if len(addresses) < 2:
        problems.append("all_ips: ACTIVE-STANDBY needs both nodes' addresses")
    if not wanted["ha_ip"]:
        problems.append("ha_ip: required for ACTIVE-STANDBY")
    elif wanted["ha_ip"] in addresses:
        problems.append("ha_ip: %s must not be one of all_ips" % wanted["ha_ip"])
    if not wanted["primary_ip"]:
        problems.append("primary_ip: required for ACTIVE-STANDBY")
    elif ":" in wanted["primary_ip"]:
        problems.append("primary_ip: must be an IPv4 address")
    elif wanted["primary_ip"] not in addresses:
        problems.append("primary_ip: %s is not one of all_ips" % wanted["primary_ip"])
    # VRRPv2 is IPv4 only, and keepalived -t refuses a pair of mixed families.
    for index, address in enumerate(addresses):
        if ":" in address:
            problems.append("all_ips[%d]: %s is IPv6; a pair's addresses are one family, IPv4 "
                            "like primary_ip (VRRPv2)" % (index, address))
    if ":" in wanted["ha_ip"]:
        problems.append("ha_ip: %s is IPv6; a pair's addresses are one family, IPv4 like "
                        "primary_ip (VRRPv2)" % wanted["ha_ip"])
    secret = wanted["secret"]
    if not secret:
        problems.append("secret: required for ACTIVE-STANDBY")
    elif not set(secret) <= SECRET_CHARACTERS:
        problems.append("secret: letters, digits and ._~@%^&*+=:,/- only")
    mine = [a for a in addresses if a in own_addresses]
    if addresses and not mine:
        problems.append("all_ips: none of them is this appliance's own address")
    elif len(mine) > 1:
        problems.append("all_ips: %s are all this appliance's own" % ", ".join(mine))
    elif mine and wanted["primary_ip"] in addresses:
        is_primary = mine[0] == wanted["primary_ip"]
        if wanted["role"] == "PRIMARY" and not is_primary:
            problems.append("role: PRIMARY, but this appliance is %s, not primary_ip %s"
                            % (mine[0], wanted["primary_ip"]))
        if wanted["role"] == "SECONDARY" and is_primary:
            problems.append("role: SECONDARY, but this appliance is primary_ip %s" % mine[0])
    return problems


def _address(text):
    """The address, or None. No IPv6 scope: its text would go into keepalived.conf."""
    import ipaddress  # only a POST pays for it, not every /status

    if "%" in text:
        return None
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def load(state_dir):
    """The stored topology (never-configured when there is none)."""
    data = files.read(topology_path(state_dir))
    stored = dict(NEVER_CONFIGURED)
    if data is not None:
        try:
            stored.update(json.loads(data))
        except ValueError:
            stored.update(status="FAILED", reason="the stored topology is unreadable")
    return stored


def carried_out(stored):
    """The last topology carried out: the stored one when its status is OK,
    else the record the POST kept of the one before it ("applied")."""
    if stored["status"] == "OK":
        return {key: stored[key] for key in TOPOLOGY_FIELDS}
    applied = stored.get("applied")
    if not isinstance(applied, dict):
        return {key: NEVER_CONFIGURED[key] for key in TOPOLOGY_FIELDS}
    return {key: applied.get(key, NEVER_CONFIGURED[key]) for key in TOPOLOGY_FIELDS}


def store(state_dir, topology):
    files.write_atomic(topology_path(state_dir), json.dumps(topology, indent=1).encode(), 0o600)


def own_address(topology, own_addresses):
    """This node's address among all_ips."""
    for address in topology["all_ips"]:
        if address in own_addresses:
            return address
    return None


def status(state_dir, topology=None):
    """topology_status: OK, TOPOLOGY-CHANGE, or "FAILED: <reason>"."""
    topology = topology or load(state_dir)
    if transition_running(state_dir):
        return TRANSITION
    if topology["status"] == TRANSITION:
        # The worker holds the lock from the POST on (it inherits it): a
        # change stored as running with the lock free lost its worker.
        return "FAILED: the topology change did not complete"
    if topology["status"] == "OK":
        return "OK"
    return "FAILED: %s" % (topology.get("reason") or "unknown")


def take_transition_lock(state_dir):
    """topology.lock, held (an open descriptor), or None when a transition
    holds it already. The worker that carries the change out inherits it."""
    from .system.locks import try_lock

    return try_lock(topology_lock_path(state_dir), patience=0.2)


def transition_running(state_dir):
    """Whether a transition (a POST, or its worker) holds topology.lock now."""
    from .system.locks import held

    return held(topology_lock_path(state_dir))
