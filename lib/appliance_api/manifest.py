"""The manifest: every stored file of every instance with its SHA-256, and the
topology. A standby compares it with its own (sync.py) and fetches only what
differs, with the ordinary GET endpoints.

    {"active_node": 1,
     "topology": {"topology": ..., "role": ..., "ha_ip": ..., "primary_ip": ...,
                  "all_ips": [...], "routing-mode": ...},
     "instances": {"<id>": {"haproxy": "<sha256>", "stunnel": "<sha256>",
                            "custom503": "<sha256>",
                            "certificates": {"<name>.pem": "<sha256>"},
                            "crt-lists": {"<name>": "<sha256>"}}}}

A crt-list's hash is that of the text as uploaded (what GET answers, with
{INSTANCE_DIR} as written), not of the stored file, which has it filled in
with this node's own folder.

A key is present only for a file that exists. The pair's secret is never in it.
A standby reads a peer's manifest only through checked(): any other shape is
refused whole, with the place it went wrong.
"""
import hashlib
import os

from .layout import (SERVICES, existing_instances, is_certificate_name, is_crt_list_name,
                     is_instance_id)
from .system import files


def digest(data):
    return hashlib.sha256(data).hexdigest()


def instance_files(instance):
    """{"haproxy": sha, "stunnel": sha, "custom503": sha, "certificates": {...}}.
    Only regular files count: something else where a stored file belongs (a
    socket a daemon made there, a FIFO, which would block the read) is left
    out of that instance's entry instead of failing the whole manifest, and
    with it every tenant's sync."""
    found = {}
    for service in SERVICES:
        data = _stored(instance.template(service))
        if data is not None:
            found[service] = digest(data)
    data = _stored(instance.custom503)
    if data is not None:
        found["custom503"] = digest(data)
    certificates = {}
    for name in instance.certificate_names():
        data = _stored(instance.certificate(name))
        if data is not None:
            certificates[name] = digest(data)
    if certificates:
        found["certificates"] = certificates
    crt_lists = _crt_lists(instance)
    if crt_lists:
        found["crt-lists"] = crt_lists
    return found


def _crt_lists(instance):
    names = instance.crt_list_names()
    if not names:
        return {}
    from .crtlist import unrender

    found = {}
    for name in names:
        data = _stored(instance.crt_list(name))
        if data is not None:
            found[name] = digest(unrender(data, instance.dir))
    return found


def _stored(path):
    """The bytes of a regular file at path, or None."""
    import stat

    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return None
    except FileNotFoundError:
        return None
    return files.read(path)


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


FILE_KEYS = SERVICES + ("custom503",)
# The keys whose value names files: what each is, and the test of a name.
NAMED_FILES = {"certificates": ("certificate", is_certificate_name),
               "crt-lists": ("crt-list", is_crt_list_name)}
_HEX = frozenset("0123456789abcdef")


class Malformed(ValueError):
    """A peer's manifest is not of the shape build() makes; one line saying where."""


def checked(document):
    """A peer's parsed manifest, refused (Malformed) unless it has build()'s
    shape: an object whose active_node is 0 or 1 and whose instances map
    instance ids to objects of SHA-256 hex digests (haproxy, stunnel,
    custom503), certificates (certificate names to digests) and crt-lists
    (crt-list names to digests), none empty.
    Returns (active_node, instances)."""
    if not isinstance(document, dict):
        raise Malformed("not a JSON object")
    active = document.get("active_node")
    if type(active) is not int or active not in (0, 1):
        raise Malformed("active_node: not 0 or 1")
    instances = document.get("instances")
    if not isinstance(instances, dict):
        raise Malformed("instances: not an object")
    for instance, entry in instances.items():
        if not is_instance_id(instance):
            raise Malformed("instances: %s is not an instance id" % _shown(instance))
        where = "instances[%s]" % instance
        if not isinstance(entry, dict) or not entry:
            raise Malformed("%s: not an object of files" % where)
        for key, value in entry.items():
            if key in NAMED_FILES:
                what, is_name = NAMED_FILES[key]
                if not isinstance(value, dict) or not value:
                    raise Malformed("%s.%s: not an object of %ss" % (where, key, what))
                for name, hashed in value.items():
                    if not is_name(name):
                        raise Malformed("%s.%s: %s is not a %s name"
                                        % (where, key, _shown(name), what))
                    _digest(hashed, "%s.%s[%s]" % (where, key, name))
            elif key in FILE_KEYS:
                _digest(value, "%s.%s" % (where, key))
            else:
                raise Malformed("%s: unexpected key %s" % (where, _shown(key)))
    return active, instances


def _digest(value, where):
    if not (isinstance(value, str) and len(value) == 64 and _HEX.issuperset(value)):
        raise Malformed("%s: not a SHA-256 hex digest" % where)


def _shown(text):
    """A name from the peer, for a one-line ASCII message."""
    shown = ascii(text)
    return shown if len(shown) <= 60 else shown[:57] + "..."
