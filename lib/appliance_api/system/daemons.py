"""The daemon kinds of an instance, by service name: haproxy (system/haproxy.py)
and stunnel (system/stunnel.py), both on system/daemon.py's Daemon."""
from .daemon import DaemonFailed
from .haproxy import Haproxy
from .stunnel import Stunnel

__all__ = ["DAEMONS", "DaemonFailed", "daemon_for"]  # DaemonFailed: what callers catch

DAEMONS = {"haproxy": Haproxy, "stunnel": Stunnel}


def daemon_for(service, instance, config):
    return DAEMONS[service](instance, config)
