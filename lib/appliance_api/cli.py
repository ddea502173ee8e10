"""octctl: the operator's command on the appliance.

The command line is the standard library's argparse; each command uses the
API's own library code (and so psutil or cryptography, where the API does),
on the local state folder, with the same locks and rollback as the API, not
over HTTP. It reads the same config file (--config, or
$APPLIANCE_API_CONFIG, or /etc/appliance-api/appliance-api.ini).

Exit status: 0 done (or all running); 1 something is not running, or an
action failed; 2 the command could not be carried out as asked (a bad or
unknown instance id, a config file that cannot be read, usage errors).
"""
import argparse
import json
import os
import sys

CONFIG_HELP = "the API's config file (default: $APPLIANCE_API_CONFIG or %s)" % (
    "/etc/appliance-api/appliance-api.ini")


class Refused(Exception):
    """The command cannot be carried out as asked: one line for stderr, exit 2."""


def status(config, arguments):
    """/service_status's text for every instance, or one; exit 1 unless all run."""
    from .health import service_states, service_status_block, supervision
    from .layout import existing_instances

    if arguments.target == "all":
        instances = existing_instances(config.state_dir, snapshot=True)
    else:
        instances = [_instance(config, arguments.target)]
    # Looked at once: what is printed is what the exit status says.
    seen = [(instance.id,) + service_states(instance) for instance in instances]
    if arguments.json:
        _print_json([{"id": instance_id, "status": state, "services": {
            service: {"running": pid is not None, "pid": pid} for service, pid in states}}
            for instance_id, states, state in seen])
    else:
        supervised = supervision(config.state_dir)
        for instance_id, states, state in seen:
            for line in service_status_block(instance_id, states, state, config.state_dir,
                                             supervised):
                print(line)
    return 0 if all(state == "OK" for _id, _states, state in seen) else 1


def instances(config, arguments):
    """The instance ids, one per line, sorted (what GET /instances answers)."""
    from .layout import instance_ids

    ids = instance_ids(config.state_dir)
    if arguments.json:
        _print_json(ids)
    else:
        for instance_id in ids:
            print(instance_id)
    return 0


def show(config, arguments):
    """One instance: its services and pids, the last start or reload of each,
    listeners and service IPs, certificates with CN and expiry."""
    from . import instance_report

    report = instance_report.describe(_instance(config, arguments.instance), config)
    if arguments.json:
        _print_json(report)
    else:
        for line in instance_report.as_text(report):
            print(line)
    return 0


def stats(config, arguments):
    """Each instance's haproxy at a glance (sessions, rate, bytes, servers up),
    or one instance's frontends, backends and servers: GET .../stats's figures."""
    from . import tenant_stats

    if arguments.instance:
        views = [tenant_stats.instance_stats(_instance(config, arguments.instance), config)]
    else:
        views = tenant_stats.all_stats(config)
    if arguments.json:
        _print_json(views if not arguments.instance else views[0])
    elif arguments.instance:
        for line in tenant_stats.detail_lines(views[0]):
            print(line)
    else:
        for line in tenant_stats.summary_lines(views):
            print(line)
    return 0


def start(config, arguments):
    return _control(config, arguments, "start")


def stop(config, arguments):
    return _control(config, arguments, "stop")


def reload(config, arguments):
    return _control(config, arguments, "reload")


def check(config, arguments):
    """The daemons' own checks and the API's rules on the stored configs; nothing changes."""
    from . import instance_report

    instance = _instance(config, arguments.instance)
    services = _services(instance, arguments.service)
    failed = False
    for service in services:
        ok, lines = instance_report.check(instance, service, config)
        failed |= not ok
        print("%s: %s" % (service, lines[0]))
        for line in lines[1:]:
            print("  " + line)
    return 1 if failed else 0


def reconcile(config, arguments):
    """Bring the service IPs and accounting rules to what the stored configs bind."""
    from . import sharedstate

    print(sharedstate.reconcile(config))
    return 0


def health(config, arguments):
    """Exit 0 when every configured daemon runs (keepalived's track script)."""
    from .health import problems

    found = problems(config.state_dir)
    for line in found:
        print(line)
    return 1 if found else 0


def topology_apply(config, arguments):
    """Carry out the stored topology (the worker POST /topology starts)."""
    from . import transition

    try:
        status = transition.apply(config)
    finally:
        if arguments.lock_fd is not None:
            os.close(arguments.lock_fd)  # the transition ends here
    print("topology_status: %s" % status)
    return 0 if status == "OK" else 1


def vrrp_notify(config, arguments):
    """What keepalived's notify runs: INSTANCE <name> <state> <priority>."""
    from .system.vrrp import STATES, Keepalived

    words = arguments.words
    state = words[2] if len(words) >= 3 else ""
    if state not in STATES:
        print("octctl vrrp-notify: unexpected arguments %r" % (words,), file=sys.stderr)
        return 2
    Keepalived(config).record_state(state, words[3] if len(words) > 3 else "0")
    return 0


def sync(config, arguments):
    """Finish the changes a killed request left, then, on a standby, one pull
    from the active node (the timer runs it every 10 s on every node).
    --allow-mass-delete: this run may delete what the sync refuses to (more
    than [sync] max_delete_share of the instances, or all of them)."""
    from . import sync as sync_module
    from .sync_state import load_state

    print(sync_module.run(config, allow_mass_delete=arguments.allow_mass_delete))
    state = load_state(config.state_dir)
    return 1 if state.get("failing") or state.get("error") or \
        state.get("interrupted_failing") else 0


def supervise(config, arguments):
    """Start every stored instance's daemons, then start again any that exits
    (appliance-api-supervisor.service runs this; `make run` too). SIGTERM or
    SIGINT ends it and leaves every daemon running."""
    import signal
    import threading
    import time

    from .supervisor import Supervisor, notify_ready

    supervisor = Supervisor(config)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: supervisor.stop())
    if arguments.while_pid:
        def watch_parent():
            while os.path.exists("/proc/%d" % arguments.while_pid):
                time.sleep(0.5)
            supervisor.stop()
        threading.Thread(target=watch_parent, daemon=True).start()
    supervisor.run(ready=notify_ready)
    return 0


def _control(config, arguments, action):
    """start, stop or reload the instance's daemons (or one), under the same
    change gate and instance lock as the API's changes (running.control)."""
    from .gate import change_gate
    from .running import control
    from .system.locks import instance_lock

    instance = _instance(config, arguments.instance)
    _services(instance, arguments.service)
    with change_gate(config), instance_lock(instance, create=False):
        # Again under the lock: a DELETE may have removed it while we waited.
        services = _services(_instance(config, arguments.instance), arguments.service)
        lines, errors = control(instance, services, action, config)
    for line in lines:
        print(line)
    for line in errors:
        print(line, file=sys.stderr)
    return 1 if errors else 0


def _instance(config, instance_id):
    """The layout.Instance for an id given on the command line, or Refused."""
    from .layout import Instance, is_instance_id

    if not is_instance_id(instance_id):
        raise Refused("not an instance id: %r (a lower-case UUID)" % instance_id)
    instance = Instance(config.state_dir, instance_id)
    if not instance.exists():
        raise Refused("no instance %s on this appliance" % instance_id)
    return instance


def _services(instance, service):
    configured = instance.configured_services()
    if service is None:
        return configured
    if service not in configured:
        raise Refused("instance %s has no %s config" % (instance.id, service))
    return [service]


def _print_json(value):
    json.dump(value, sys.stdout, indent=2)
    print()


# name: (function, summary, takes --json)
COMMANDS = {
    "status": (status, "the daemons of every instance (all) or one, as /service_status; "
               "exit 1 if any is DEGRADED or DOWN", True),
    "instances": (instances, "the instance ids, sorted", True),
    "show": (show, "an instance's services, pids, last reloads, listeners, service IPs "
             "and certificates", True),
    "stats": (stats, "haproxy's sessions, bytes and servers of every instance, or of one "
              "in detail (GET /instances/:instance/stats)", True),
    "start": (start, "start an instance's stopped daemons (or one)", False),
    "stop": (stop, "stop an instance's daemons (or one); its files stay", False),
    "reload": (reload, "reload an instance's running daemons (or one) on the stored config",
               False),
    "check": (check, "run the daemons' own checks and the API's rules on the stored configs; "
              "changes nothing", False),
    "reconcile": (reconcile, "converge service IPs and accounting rules to the stored configs",
                  False),
    "health": (health, "exit 0 when every configured daemon runs, else 1 (one line each)",
               False),
    "topology-apply": (topology_apply, "carry out the stored topology (POST /topology runs it)",
                       False),
    "vrrp-notify": (vrrp_notify, "record the state keepalived entered (its notify script)",
                    False),
    "supervise": (supervise, "start every stored instance's daemons, then start again any "
                             "that exits (appliance-api-supervisor.service runs it)", False),
    "sync": (sync, "finish changes a killed request left; on a standby, pull the active "
                   "node's configuration (the timer runs it)", False),
}


def parser():
    parser = argparse.ArgumentParser(
        prog="octctl", description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help=CONFIG_HELP)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    subparsers = {}
    for name, (_function, summary, reads) in COMMANDS.items():
        subparsers[name] = sub = commands.add_parser(name, help=summary, description=summary)
        if reads:
            sub.add_argument("--json", action="store_true", help="print JSON")
    subparsers["status"].add_argument("target", nargs="?", default="all",
                                      metavar="all|INSTANCE")
    subparsers["show"].add_argument("instance")
    subparsers["stats"].add_argument("instance", nargs="?")
    for name in ("start", "stop", "reload", "check"):
        subparsers[name].add_argument("instance")
        subparsers[name].add_argument("service", nargs="?", choices=("haproxy", "stunnel"))
    subparsers["sync"].add_argument(
        "--allow-mass-delete", action="store_true",
        help="this run may delete more than [sync] max_delete_share of the instances, "
             "or all of them (an empty manifest)")
    subparsers["supervise"].add_argument("--while-pid", type=int,
                                         help="end when this process does (make run)")
    subparsers["topology-apply"].add_argument("--lock-fd", type=int,
                                              help="topology.lock, held, inherited")
    subparsers["vrrp-notify"].add_argument("words", nargs="*",
                                           help="INSTANCE name state priority")
    return parser


def main(argv=None):
    arguments = parser().parse_args(argv)

    from . import config as config_module
    from .errors import HTTPError, from_system
    from .system import Busy, MachineError

    environ = dict(os.environ)
    if arguments.config:
        environ[config_module.ENV_VARIABLE] = arguments.config
    try:
        config = config_module.load(environ)
    except HTTPError as error:
        print("octctl %s: %s" % (arguments.command, error.reason), file=sys.stderr)
        return 2
    try:
        return COMMANDS[arguments.command][0](config, arguments)
    except Refused as refusal:
        print("octctl %s: %s" % (arguments.command, refusal), file=sys.stderr)
        return 2
    except (HTTPError, MachineError, Busy) as failure:
        error = failure if isinstance(failure, HTTPError) else from_system(failure)
        print("octctl %s: %s" % (arguments.command, error.reason), file=sys.stderr)
        if error.detail:
            print(error.detail.rstrip("\n"), file=sys.stderr)
        return 1
    except OSError as error:  # not root, a file gone: one line, not a traceback
        where = " (%s)" % error.filename if error.filename else ""
        print("octctl %s: %s%s" % (arguments.command, error.strerror or error, where),
              file=sys.stderr)
        return 1
