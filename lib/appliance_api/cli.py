"""octctl: the operator's command on the appliance (standard library only).

It works on the local state folder through the same library code and locks
as the API, not over HTTP, and reads the same config file
(APPLIANCE_API_CONFIG, or --config, or /etc/appliance-api/appliance-api.ini).
"""
import argparse
import os
import sys


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
    """One pull from the active node, on a standby (the timer runs it)."""
    from . import sync as sync_module

    print(sync_module.run(config))
    state = sync_module.load_state(config.state_dir)
    return 1 if state.get("failing") or state.get("error") else 0


COMMANDS = {
    "reconcile": (reconcile, "converge service IPs and accounting rules to the stored configs"),
    "health": (health, "exit 0 when every configured daemon runs, else 1 (one line each)"),
    "topology-apply": (topology_apply, "carry out the stored topology (POST /topology runs it)"),
    "vrrp-notify": (vrrp_notify, "record the state keepalived entered (its notify script)"),
    "sync": (sync, "on a standby, pull the active node's configuration (the timer runs it)"),
}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="octctl", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="the API's config file (default: $%s or %s)"
                        % ("APPLIANCE_API_CONFIG", "/etc/appliance-api/appliance-api.ini"))
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    subparsers = {}
    for name, (_function, summary) in COMMANDS.items():
        subparsers[name] = commands.add_parser(name, help=summary, description=summary)
    subparsers["topology-apply"].add_argument("--lock-fd", type=int,
                                              help="topology.lock, held, inherited")
    subparsers["vrrp-notify"].add_argument("words", nargs="*",
                                           help="INSTANCE name state priority")
    arguments = parser.parse_args(argv)

    from . import config as config_module
    from .errors import HTTPError

    environ = dict(os.environ)
    if arguments.config:
        environ[config_module.ENV_VARIABLE] = arguments.config
    try:
        config = config_module.load(environ)
        return COMMANDS[arguments.command][0](config, arguments)
    except HTTPError as error:
        print("octctl %s: %s" % (arguments.command, error.reason), file=sys.stderr)
        return 1
