"""This node's keepalived for the pair it is stored in: its configuration
rendered from the stored topology, with the octctl commands keepalived runs
(the health check, the state notifications).

Below both sharedstate (which converges keepalived's addresses at every
change) and transition (the worker that carries a topology out).
"""
import os
import sys

from .system.vrrp import Keepalived

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
OCTCTL = os.path.join(ROOT, "bin", "octctl")


def octctl_command(config, *words):
    """How keepalived (or a worker) runs octctl with this appliance's config."""
    return [sys.executable, OCTCTL, "--config", config.path] + list(words)


def render(config, stored, own, service_ips):
    return Keepalived(config).render(
        stored, own, service_ips,
        health_command=" ".join(octctl_command(config, "health")),
        notify_command=" ".join(octctl_command(config, "vrrp-notify")))
