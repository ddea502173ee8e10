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


COMMANDS = {
    "reconcile": (reconcile, "converge service IPs and accounting rules to the stored configs"),
}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="octctl", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="the API's config file (default: $%s or %s)"
                        % ("APPLIANCE_API_CONFIG", "/etc/appliance-api/appliance-api.ini"))
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_function, summary) in COMMANDS.items():
        commands.add_parser(name, help=summary, description=summary)
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
