"""The daemon kinds of an instance, by service name: haproxy (system/haproxy.py)
and stunnel (system/stunnel.py), both on system/daemon.py's Daemon."""
from .daemon import DaemonFailed  # noqa: F401  (what callers of daemon_for catch)
from .haproxy import Haproxy
from .stunnel import Stunnel

DAEMONS = {"haproxy": Haproxy, "stunnel": Stunnel}


def daemon_for(service, instance, config):
    return DAEMONS[service](instance, config)
