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
from ..configread import haproxy_listener_type, stunnel_terminates_tls
from ..system import files

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
