"""Carry out a stored topology: the worker POST /topology starts.

The worker runs detached from the request (its own session), so a restart
of lighttpd does not stop it, and it holds topology.lock (inherited from the
POST) until it ends: instance changes get 503 meanwhile, and a worker that
dies leaves the lock free, which reads as a failed transition.
"""
import os
import subprocess
import sys
import time

from . import sharedstate, topology
from .layout import vrrp_dir
from .system import files
from .system.locks import appliance_lock
from .system.network import Network
from .system.vrrp import Keepalived, set_nonlocal_bind

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
OCTCTL = os.path.join(ROOT, "bin", "octctl")


def octctl_command(config, *words):
    """How keepalived (or a worker) runs octctl with this appliance's config."""
    return [sys.executable, OCTCTL, "--config", config.path] + list(words)


def start_worker(config, lock_fd):
    """`octctl topology-apply`, detached, holding lock_fd (topology.lock)."""
    log = os.path.join(vrrp_dir(config.state_dir), "transition.log")
    os.makedirs(os.path.dirname(log), mode=0o700, exist_ok=True)
    with open(log, "ab") as output:
        subprocess.Popen(octctl_command(config, "topology-apply", "--lock-fd", str(lock_fd)),
                         stdin=subprocess.DEVNULL, stdout=output, stderr=output,
                         pass_fds=(lock_fd,), start_new_session=True)


def apply(config):
    """Make the machine run the stored topology; store the outcome as its
    topology_status (OK, or FAILED with a reason). Returns that status."""
    stored = topology.load(config.state_dir)
    try:
        if stored["topology"] == "ACTIVE-STANDBY":
            outcome = _become_pair_member(config, stored)
        else:
            outcome = _become_single(config)
    except Exception as error:  # any failure is the transition's outcome, not a crash
        outcome = "FAILED", "%s: %s" % (type(error).__name__, error)
    stored = topology.load(config.state_dir)
    stored["status"], stored["reason"] = outcome
    topology.store(config.state_dir, stored)
    return topology.status(config.state_dir, stored) if outcome[0] != "OK" else "OK"


def _become_single(config):
    keepalived = Keepalived(config)
    with appliance_lock(config.state_dir):
        keepalived.stop()  # it takes ha_ip and the service IPs with it
        files.remove(keepalived.state_path)
        network = Network(config)
        if network.enabled:
            network.converge(sharedstate.ApplianceView(config).service_ips())
    return "OK", ""


def _become_pair_member(config, stored):
    from .appliance import own_addresses

    own = topology.own_address(stored, own_addresses(config))
    if own is None:
        return "FAILED", "none of all_ips is this appliance's own address"
    keepalived = Keepalived(config)
    started = time.time()
    with appliance_lock(config.state_dir):
        set_nonlocal_bind()
        desired = sharedstate.ApplianceView(config).service_ips()
        text = render(config, stored, own, desired)
        ok, output = keepalived.check(text)
        if not ok:
            return "FAILED", "keepalived refused its configuration: %s" % " ".join(
                output.split())[:300]
        keepalived.apply(text)
        Network(config).converge_accounting(desired)
    deadline = started + config.number("ha", "transition_timeout")
    restarted = False
    while time.time() < deadline:
        state, _when = keepalived.state()
        if state in ("MASTER", "BACKUP", "FAULT"):
            _hand_addresses_to_keepalived(config, stored)
            return "OK", ""
        if keepalived.process() is None:
            if restarted:
                return "FAILED", "keepalived exited"
            # It was on its way out when we found it running (a stop just
            # sent): start it afresh, once.
            restarted = True
            with appliance_lock(config.state_dir):
                keepalived.apply(text)
        time.sleep(0.1)
    return "FAILED", "keepalived reported no state within %gs" % (
        config.number("ha", "transition_timeout"))


def _hand_addresses_to_keepalived(config, stored):
    """From SINGLE to a pair: the service IPs the API put on the interface
    are keepalived's VRRP addresses from now on (it removed them itself on a
    node that entered BACKUP, and carries them on the MASTER)."""
    network = Network(config)
    if network.enabled:
        with appliance_lock(config.state_dir):
            network.forget_owned()


def render(config, stored, own, service_ips):
    return Keepalived(config).render(
        stored, own, service_ips,
        health_command=" ".join(octctl_command(config, "health")),
        notify_command=" ".join(octctl_command(config, "vrrp-notify")))


def update_service_ips(config, service_ips):
    """In a pair, the service IPs are keepalived's VRRP addresses: re-render
    and reload it (SIGHUP moves no address) when they change. Callers hold
    the appliance lock."""
    from .appliance import own_addresses

    stored = topology.load(config.state_dir)
    if topology.status(config.state_dir, stored) == topology.TRANSITION:
        return  # the worker renders and runs keepalived itself
    own = topology.own_address(stored, own_addresses(config))
    if own is not None:
        # Also what brings keepalived back after a reboot or a crash: the
        # stored topology is the desired state, keepalived running is part of it.
        Keepalived(config).apply(render(config, stored, own, service_ips))
