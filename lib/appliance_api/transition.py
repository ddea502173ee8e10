"""Carry out a stored topology: the worker POST /topology starts.

The worker runs detached from the request (its own session), so a restart
of lighttpd does not stop it, and it holds topology.lock (inherited from the
POST) until it ends: instance changes get 503 meanwhile, and a worker that
dies leaves the lock free, which reads as a failed transition.
"""
import os
import subprocess
import time

from . import sharedstate, topology
from .layout import vrrp_dir
from .system import files
from .system.commands import in_scope
from .system.locks import appliance_lock
from .system.network import Network
from .pair import octctl_command, render
from .system.vrrp import Keepalived, set_nonlocal_bind

def start_worker(config, lock_fd):
    """`octctl topology-apply`, detached, holding lock_fd (topology.lock)."""
    log = os.path.join(vrrp_dir(config.state_dir), "transition.log")
    os.makedirs(os.path.dirname(log), mode=0o700, exist_ok=True)
    with open(log, "ab") as output:
        # In a scope of its own under systemd: it must outlive the CGI that
        # starts it, and lighttpd's stop (KillMode=mixed) must not cut it.
        subprocess.Popen(in_scope(octctl_command(config, "topology-apply", "--lock-fd",
                                                 str(lock_fd)), "appliance-topology"),
                         stdin=subprocess.DEVNULL, stdout=output, stderr=output,
                         pass_fds=(lock_fd,), start_new_session=True)


def apply(config):
    """Make the machine run the stored topology; store the outcome as its
    topology_status (OK, or FAILED with a reason). Returns that status.

    Success is stored by the last step, under the appliance lock, together
    with what that step converged to: a change that comes after it sees OK
    and converges itself; one that came before it is in it. A failure puts
    the machine back to the last topology carried out (topology.carried_out)."""
    stored = topology.load(config.state_dir)
    try:
        if stored["topology"] == "ACTIVE-STANDBY":
            outcome = _become_pair_member(config, stored)
        else:
            outcome = _become_single(config)
    except Exception as error:  # any failure is the transition's outcome, not a crash
        outcome = "FAILED", "%s: %s" % (type(error).__name__, error)
    if outcome[0] != "OK":
        _fail(config, outcome[1])
    # Not topology.status(): this process holds topology.lock still.
    stored = topology.load(config.state_dir)
    return "OK" if stored["status"] == "OK" else "FAILED: %s" % stored["reason"]


def _record_outcome(config, status, reason):
    """Store the transition's outcome; callers hold the appliance lock."""
    stored = topology.load(config.state_dir)
    stored["status"], stored["reason"] = status, reason
    if status == "OK":
        stored["applied"] = topology.carried_out(stored)
    topology.store(config.state_dir, stored)


def _fail(config, reason):
    with appliance_lock(config.state_dir):
        _record_outcome(config, "FAILED", reason)
        try:
            # Back to the last topology carried out, with every stored config.
            sharedstate.converge_locked(config, Network(config),
                                        sharedstate.ApplianceView(config).service_ips())
        except Exception as error:
            _record_outcome(config, "FAILED", "%s; putting the machine back failed too: %s: %s"
                            % (reason, type(error).__name__, error))


def _become_single(config):
    keepalived = Keepalived(config)
    with appliance_lock(config.state_dir):
        keepalived.stop()  # it takes ha_ip and the service IPs with it
        files.remove(keepalived.state_path)
        Network(config).converge(sharedstate.ApplianceView(config).service_ips())
        _record_outcome(config, "OK", "")
    return "OK", ""


def _become_pair_member(config, stored):
    """Start (or reload) keepalived for this node of the pair.

    keepalived 2.2.7 starts in BACKUP whatever `state` says, removes the
    addresses of its configuration, and takes them only when it becomes
    MASTER, after its master-down interval (~3 s). So the service IPs the API
    put on the interface (a node that served alone) are left out of the first
    configuration and stay the API's: they stay on the interface until
    keepalived has settled. Then the last step hands them over: on a MASTER,
    the full configuration (SIGHUP) makes them keepalived's own (it keeps an
    address it finds present, and removes it on leaving MASTER); on a BACKUP,
    the API takes them off."""
    from .appliance import own_addresses

    own = topology.own_address(stored, own_addresses(config))
    if own is None:
        return "FAILED", "none of all_ips is this appliance's own address"
    keepalived = Keepalived(config)
    network = Network(config)
    started = time.time()
    with appliance_lock(config.state_dir):
        set_nonlocal_bind()
        desired = sharedstate.ApplianceView(config).service_ips()
        held = network.owned() & desired if network.enabled else set()
        text = render(config, stored, own, desired - held)
        ok, output = keepalived.check(text)
        if not ok:
            return "FAILED", "keepalived refused its configuration: %s" % " ".join(
                output.split())[:300]
        keepalived.apply(text)
        network.converge_accounting(desired)
    deadline = started + config.number("ha", "transition_timeout")
    # A BACKUP held this long is not the start's: another node is MASTER.
    settled = config.number("ha", "down_timer_adverts") + 1.0
    restarted = False
    while time.time() < deadline:
        state, when = keepalived.state()
        if state == "MASTER" or (state in ("BACKUP", "FAULT")
                                 and (not held or time.time() - when >= settled)):
            _hand_addresses_to_keepalived(config, stored, own)
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


def _hand_addresses_to_keepalived(config, stored, own):
    """The transition's last step, under the appliance lock: the stored
    configs read again (a change during the transition left its service IPs
    to this step), keepalived given all of them, the API's own addresses
    handed over (kept by a MASTER, taken off on a BACKUP), and OK stored."""
    keepalived = Keepalived(config)
    network = Network(config)
    with appliance_lock(config.state_dir):
        desired = sharedstate.ApplianceView(config).service_ips()
        owned = network.owned() if network.enabled else set()
        master = keepalived.state()[0] == "MASTER"
        keepalived.apply(render(config, stored, own, desired))
        network.converge_accounting(desired)
        if network.enabled:
            let_go = owned - desired if master else owned
            if let_go:
                network.remove_addresses(let_go & network.addresses_on_interface())
            network.forget_owned()
        _record_outcome(config, "OK", "")


def check_pair(config, wanted):
    """What POST /topology runs before it answers: `keepalived -t` on the
    configuration this node would run (with the stored configs' service IPs);
    Conflict with keepalived's reason if it refuses it."""
    from .appliance import own_addresses
    from .errors import Conflict

    own = topology.own_address(wanted, own_addresses(config))
    if own is None:
        return  # parse_form said so already
    with appliance_lock(config.state_dir):
        desired = sharedstate.ApplianceView(config).service_ips()
    ok, output = Keepalived(config).check(render(config, wanted, own, desired))
    if not ok:
        lines = [line.split(": ", 1)[-1] for line in output.splitlines() if line.strip()]
        raise Conflict("Invalid request", "keepalived refused the pair's configuration: %s"
                       % " / ".join(lines[-5:])[:500])
