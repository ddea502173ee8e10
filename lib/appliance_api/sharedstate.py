"""What instances share, computed from what is stored, and the machine
converged to it.

The desired state is read from the stored templates (what GET returns, the
commit point of a config PUT), never from what a request was in the middle
of: every template's listeners, and the service IPs they bind. The machine's
addresses and accounting rules are converged to exactly that union
(system/network.py), at every change, at boot and on demand
(`octctl reconcile`), so whatever a killed request left is repaired by the
next one.

Every reader and writer of templates takes the appliance lock for the step
that reads or changes them (system.locks.appliance_lock), so two requests
never both claim one port, and a DELETE never removes an address a PUT has
just claimed.
"""
from . import configscan
from .errors import Conflict
from .layout import SERVICES, existing_instances, fill_template
from .system import files
from .system.locks import appliance_lock
from .system.network import Network


def scan_template(instance, service, template, config):
    """The configscan.Scan of a template (text)."""
    filled = fill_template(template, instance.dir, config.get("api", "management_address"))
    return configscan.Scan(service, filled, instance.dir)


def refuse_cluster_addresses(scan, config):
    """Conflict if a config would take the pair's own addresses (ha_ip, a
    node's address in all_ips) as a service IP: VRRP would break."""
    from . import topology

    stored = topology.load(config.state_dir)
    if stored["topology"] != "ACTIVE-STANDBY":
        return
    taken = {stored["ha_ip"]} | set(stored["all_ips"])
    problems = ["line %d: %s is the cluster's own address (ha_ip or all_ips)"
                % (listener.line_number, listener) for listener in scan.listeners
                if listener.address is not None and str(listener.address) in taken]
    if problems:
        raise Conflict("Invalid configuration", "\n".join(problems))


class ApplianceView:
    """Every stored config's scan: {(instance id, service): Scan}. Build it under
    the appliance lock; with() overrides one config for a change in flight."""

    def __init__(self, config):
        self.config = config
        self.scans = {}
        for instance in existing_instances(config.state_dir):
            for service in SERVICES:
                data = files.read(instance.template(service))
                if data is not None:
                    self.scans[instance.id, service] = scan_template(
                        instance, service, data.decode("utf-8", "replace"), config)

    def refuse_shared_listeners(self, instance, service, scan):
        """Conflict if the scan listens where another stored config does."""
        for (other_id, other_service), other in sorted(self.scans.items()):
            if (other_id, other_service) == (instance.id, service):
                continue  # the config this one replaces
            for listener in scan.listeners:
                for taken in other.listeners:
                    if listener.overlaps(taken):
                        raise Conflict("Address already in use", "line %d: %s is taken by the "
                                       "%s config of instance %s" % (
                                           listener.line_number, listener, other_service,
                                           other_id))

    def service_ips(self, *extra_scans):
        management_address = self.config.get("api", "management_address")
        found = set()
        for scan in list(self.scans.values()) + list(extra_scans):
            found |= scan.service_ips(management_address)
        return found


def converge(config, *extra_scans):
    """Under the appliance lock: the machine's service IPs and accounting rules
    made exactly what the stored configs (and extra_scans, configs about to
    run) bind."""
    network = Network(config)
    if not network.enabled:
        return
    with appliance_lock(config.state_dir):
        converge_locked(config, network, ApplianceView(config).service_ips(*extra_scans))


def converge_locked(config, network, desired):
    """converge() for a caller that holds the appliance lock: the machine
    made what the last topology carried out asks for, with the service IPs
    in desired. SINGLE: no keepalived, the API puts them on the
    interface. ACTIVE-STANDBY: they are keepalived's VRRP addresses;
    re-render and reload it (SIGHUP moves no address), or start it (what
    brings keepalived back after a reboot or a crash). The accounting rules
    are the API's either way.

    While a transition runs, only the accounting: its worker's last step reads
    the stored configs again under this lock. A FAILED topology is not
    carried out here: the last one carried out is (topology.carried_out)."""
    # Imported here: reads never converge, and keepalived's module is not small.
    from . import topology
    from .pair import render
    from .system.vrrp import Keepalived

    stored = topology.load(config.state_dir)
    mode, target = plan_shared(stored, stored["status"] == topology.TRANSITION
                               and topology.transition_running(config.state_dir))
    if mode == "accounting":
        network.converge_accounting(desired)
        return
    keepalived = Keepalived(config)
    if mode == "single":
        if keepalived.process() is not None:  # left by a transition that failed
            keepalived.stop()
            files.remove(keepalived.state_path)
        network.converge(desired)
        return
    from .appliance import own_addresses

    network.converge_accounting(desired)
    own = topology.own_address(target, own_addresses(config))
    if own is not None:
        keepalived.apply(render(config, target, own, desired))


def plan_shared(stored, transition_running):
    """(mode, topology to carry out) for converge_locked, from the stored
    topology: "accounting" alone while a transition runs (its worker's last
    step converges the rest), "single" (the API puts the service IPs on the
    interface; no keepalived), or "pair" (keepalived carries them). A FAILED
    topology is not carried out: the last one that was is."""
    from . import topology

    if stored["status"] == topology.TRANSITION and transition_running:
        return "accounting", None
    target = topology.carried_out(stored)
    return ("pair" if target["topology"] == "ACTIVE-STANDBY" else "single"), target


def reconcile(config):
    """What `octctl reconcile` and boot run: converge, and say what it did."""
    network = Network(config)
    if not network.enabled:
        return "network management is off ([network] manage = no): nothing to do"
    with appliance_lock(config.state_dir):
        before = network.addresses_on_interface()
        view = ApplianceView(config)
        desired = view.service_ips()
        converge_locked(config, network, desired)
        after = network.addresses_on_interface()
    added, removed = sorted(after - before), sorted(before - after)
    return "service IPs: %d desired, added %s, removed %s" % (
        len(desired), " ".join(added) or "none", " ".join(removed) or "none")
