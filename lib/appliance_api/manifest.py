"""The manifest: every stored file of every instance with its SHA-256, and the
topology. A standby compares it with its own (sync.py) and fetches only what
differs, with the ordinary GET endpoints.

    {"active_node": 1,
     "topology": {"topology": ..., "role": ..., "ha_ip": ..., "primary_ip": ...,
                  "all_ips": [...], "routing-mode": ...},
     "instances": {"<id>": {"haproxy": "<sha256>", "stunnel": "<sha256>",
                            "custom503": "<sha256>",
                            "certificates": {"<name>.pem": "<sha256>"}}}}

A key is present only for a file that exists. The pair's secret is never in it.
"""
import hashlib

from .layout import SERVICES, existing_instances
from .system import files


def digest(data):
    return hashlib.sha256(data).hexdigest()


def instance_files(instance):
    """{"haproxy": sha, "stunnel": sha, "custom503": sha, "certificates": {...}}."""
    found = {}
    for service in SERVICES:
        data = files.read(instance.template(service))
        if data is not None:
            found[service] = digest(data)
    data = files.read(instance.custom503)
    if data is not None:
        found["custom503"] = digest(data)
    certificates = {}
    for name in instance.certificate_names():
        data = files.read(instance.certificate(name))
        if data is not None:
            certificates[name] = digest(data)
    if certificates:
        found["certificates"] = certificates
    return found


def build(config):
    from . import topology

    from .appliance import active_node

    stored = topology.load(config.state_dir)
    return {
        # A standby syncs only from a node that holds ha_ip now: two nodes
        # that both lost it must not copy each other's state back and forth.
        "active_node": active_node(config, stored),
        "topology": {key: stored[key] for key in ("topology", "role", "ha_ip", "primary_ip",
                                                  "all_ips", "routing-mode")},
        "instances": {instance.id: instance_files(instance)
                      for instance in existing_instances(config.state_dir)},
    }
