"""This node's place in its cluster, live: active or standby, its role, and
the health of the daemon that decides (keepalived in ACTIVE-STANDBY).

The ground truth for "active" is the interface: the node that holds ha_ip
carries the cluster's traffic. Not a file a late notify may have left stale.
With the link between the nodes cut, both hold it: both answer active_node 1
and role PRIMARY, which is how a controller sees a split brain.
"""

ACTIVE_WORDS = {"active", "master", "primary", "1"}
STANDBY_WORDS = {"standby", "backup", "secondary", "0"}


def _stored_topology(config):
    from . import topology

    return topology.load(config.state_dir)


def interface_addresses(config, interface=None):
    """Addresses on interface (every interface when None), as strings."""
    from .system import commands
    from .system.network import addresses_in

    argv = [config.get("programs", "ip"), "-j", "addr", "show"]
    if interface:
        argv += ["dev", interface]
    result = commands.run(argv, timeout=5)
    return set(addresses_in(result.output)) if result.ok else set()


def own_addresses(config):
    return interface_addresses(config)


def holds_ha_ip(config, stored):
    return stored["ha_ip"] in interface_addresses(config, config.get("network", "vip_interface"))


def active_node(config, stored=None):
    """1 on the active (or only) node, 0 on a standby."""
    stored = stored or _stored_topology(config)
    if stored["topology"] == "ACTIVE-STANDBY":
        return 1 if holds_ha_ip(config, stored) else 0
    path = config.get("status", "role_file")
    if not path:
        return 1
    try:
        with open(path) as file:
            role = file.read().strip().lower()
    except OSError:
        return 1
    return 0 if role in STANDBY_WORDS else 1


def role(config, stored=None, active=None):
    """PRIMARY or SECONDARY: in ACTIVE-STANDBY, the role this node has now.
    active: active_node() already read (one `ip` call per request is enough)."""
    stored = stored or _stored_topology(config)
    if stored["topology"] == "ACTIVE-STANDBY":
        if active is None:
            active = holds_ha_ip(config, stored)
        return "PRIMARY" if active else "SECONDARY"
    return stored["role"]


def fencing_daemon_status(config, stored=None):
    """"OK" when the daemon that decides the roles runs and has a state (or
    none is needed), else a word for what is wrong: STOPPED, FAULT, NO-STATE."""
    stored = stored or _stored_topology(config)
    if stored["topology"] == "ACTIVE-STANDBY":
        from .system.vrrp import Keepalived

        keepalived = Keepalived(config)
        if keepalived.process() is None:
            return "STOPPED"
        state, _when = keepalived.state()
        if state in ("MASTER", "BACKUP"):
            return "OK"
        return {"STOP": "STOPPED", None: "NO-STATE"}.get(state, state)
    pid_file = config.get("status", "fencing_pid_file")
    command = config.get("status", "fencing_command")
    if pid_file:
        from .system import processes

        pid = processes.read_pid(pid_file)
        return "OK" if pid and processes.pid_alive(pid) else "DOWN"
    if command:
        import shlex

        from .system import commands

        try:
            result = commands.run(shlex.split(command), timeout=5)
        except Exception as error:  # a broken probe is a status, not a failed request
            return "FAILED: %s" % error
        return "OK" if result.ok else "FAILED (exit %d)" % result.returncode
    return "OK"
