"""/listeners and /listeners/:listener: the later draft's status view, where
instances are called listeners (/instances and /service_status stay as they are).

A listener appears when any file exists for it. `status` is /service_status's
word; `type` is HTTPS when TLS ends on the appliance (a stunnel config, or an
haproxy `bind ... ssl`), else the mode of haproxy's first listening section
(HTTP or TCP, haproxy's default), or null with no config to say; a key per
configured service: "running" or "stopped".
"""
import json

from ..response import Response
from ..errors import NotFound
from ..health import backing_off, service_states, supervision
from ..layout import Instance, existing_instances
from ..system import files

# Lines that open a section of an haproxy config.
SECTIONS = ("global", "defaults", "frontend", "listen", "backend", "peers", "resolvers",
            "userlist", "mailers", "program", "http-errors", "ring", "cache", "log-forward")

def list_listeners(request):
    instances = existing_instances(request.config.state_dir, snapshot=True)
    supervised = supervision(request.config.state_dir)
    listeners = [describe(instance, supervised) for instance in instances]
    return Response(json.dumps(listeners), content_type="application/json")


def get_listener(request, instance):
    instance = Instance(request.config.state_dir, instance)
    if not instance.exists():
        raise NotFound()
    return Response(json.dumps(describe(instance, supervision(request.config.state_dir))),
                    content_type="application/json")


def describe(instance, supervised):
    """The listener view; "supervision" only where the supervisor restarted a
    daemon ({service: restarts, backing_off, last_failure})."""
    states, state = service_states(instance)
    listener = {"id": instance.id, "status": state, "type": listener_type(instance)}
    for service, pid in states:
        listener[service] = "running" if pid else "stopped"
        entry = supervised.get("%s/%s" % (instance.id, service))
        if entry:
            listener.setdefault("supervision", {})[service] = {
                "restarts": entry["restarts"], "backing_off": backing_off(entry),
                "last_failure": entry.get("last_failure")}
    return listener


def listener_type(instance):
    stunnel = files.read(instance.template("stunnel"))
    if stunnel is not None and stunnel_terminates_tls(stunnel.decode("utf-8", "replace")):
        return "HTTPS"
    template = files.read(instance.template("haproxy"))
    if template is None:
        return "TCP" if stunnel is not None else None
    return haproxy_listener_type(template.decode("utf-8", "replace"))


def stunnel_terminates_tls(text):
    """Whether a service of the stunnel config accepts TLS: any without
    `client = yes` (set in the service, or in the global part before the
    first service, which is every service's default)."""
    default_client = False
    services = []  # `client` of each service
    for line in text.splitlines():
        line = line.split(";", 1)[0].split("#", 1)[0].strip()
        if line.startswith("["):
            services.append(default_client)
            continue
        name, _, value = line.partition("=")
        if name.strip().lower() == "client":
            client = value.strip().lower() == "yes"
            if services:
                services[-1] = client
            else:
                default_client = client
    return any(not client for client in services)


def haproxy_listener_type(text):
    """HTTPS if any bind ends TLS, else the mode of the first frontend or
    listen section that binds. A section starts from its defaults' mode (the
    section `from` names, else the last defaults before it); a defaults
    section starts from tcp (haproxy's default) or the one it comes `from`."""
    last_defaults = "tcp"
    named = {}  # mode of each named defaults section
    listening = []  # the frontend and listen sections
    section = None
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        keyword = words[0].lower()
        if keyword in SECTIONS:
            parent = words[words.index("from") + 1] if "from" in words[1:-1] else None
            name = words[1] if len(words) > 1 and words[1] != "from" else None
            if keyword == "defaults":
                mode = named.get(parent, "tcp")
            else:
                mode = named.get(parent, last_defaults) if parent else last_defaults
            section = {"kind": keyword, "name": name, "mode": mode, "binds": False}
            if keyword == "defaults":
                last_defaults = mode
                if name:
                    named[name] = mode
            elif keyword in ("frontend", "listen"):
                listening.append(section)
        elif section is None:
            continue
        elif keyword == "mode" and len(words) > 1:
            section["mode"] = words[1].lower()
            if section["kind"] == "defaults":
                last_defaults = section["mode"]
                if section["name"]:
                    named[section["name"]] = section["mode"]
        elif keyword == "bind" and section["kind"] in ("frontend", "listen"):
            if "ssl" in words[2:]:
                return "HTTPS"
            section["binds"] = True
    modes = [section["mode"] for section in listening if section["binds"]]
    return (modes[0] if modes else "tcp").upper()
