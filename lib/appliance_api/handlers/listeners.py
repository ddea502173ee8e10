"""/listeners and /listeners/:listener: the later draft's status view, where
instances are called listeners (/instances and /service_status stay as they are).

A listener appears when any file exists for it. `status` is /service_status's
word; `type` is HTTPS when TLS ends on the appliance (a stunnel config, or an
haproxy `bind ... ssl`), else the mode of haproxy's first listening section
(HTTP or TCP, haproxy's default), or null with no config to say; a key per
configured service: "running" or "stopped".
"""
import json

from ..app import Response
from ..errors import NotFound
from ..health import service_states
from ..layout import Instance, existing_instances
from ..system import files

# Lines that open a section of an haproxy config.
SECTIONS = ("global", "defaults", "frontend", "listen", "backend", "peers", "resolvers",
            "userlist", "mailers", "program", "http-errors", "ring", "cache")


def list_listeners(request):
    instances = existing_instances(request.config.state_dir, snapshot=True)
    listeners = [describe(instance) for instance in instances]
    return Response(json.dumps(listeners), content_type="application/json")


def get_listener(request, instance):
    instance = Instance(request.config.state_dir, instance)
    if not instance.exists():
        raise NotFound()
    return Response(json.dumps(describe(instance)), content_type="application/json")


def describe(instance):
    states, state = service_states(instance)
    listener = {"id": instance.id, "status": state, "type": listener_type(instance)}
    for service, pid in states:
        listener[service] = "running" if pid else "stopped"
    return listener


def listener_type(instance):
    if "stunnel" in instance.configured_services():
        return "HTTPS"
    template = files.read(instance.template("haproxy"))
    if template is None:
        return None
    return haproxy_listener_type(template.decode("utf-8", "replace"))


def haproxy_listener_type(text):
    """HTTPS if any bind ends TLS, else the mode of the first frontend or
    listen section that binds (its own `mode`, else the defaults' before it)."""
    default_mode = "tcp"
    sections = []  # [kind, mode, binds] of each frontend and listen section
    current = None
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        keyword = words[0].lower()
        if keyword in SECTIONS:
            current = [keyword, default_mode, False]
            if keyword in ("frontend", "listen"):
                sections.append(current)
        elif current is None:
            continue
        elif keyword == "mode" and len(words) > 1:
            current[1] = words[1].lower()
            if current[0] == "defaults":
                default_mode = current[1]
        elif keyword == "bind" and current[0] in ("frontend", "listen"):
            if "ssl" in words[2:]:
                return "HTTPS"
            current[2] = True
    modes = [mode for _kind, mode, binds in sections if binds]
    return (modes[0] if modes else default_mode).upper()
