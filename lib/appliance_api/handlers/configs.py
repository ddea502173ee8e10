"""/instances/:instance/haproxy and /instances/:instance/stunnel: config templates."""
import os

from ..response import Response, text
from ..errors import NotFound
from ..layout import Instance
from ..system import files
from ..system.locks import instance_lock


def put_config(request, instance, service):
    from .. import services  # daemons and psutil: only changes pay for them

    template = request.read_body(int(request.config.number("limits", "config_bytes")))
    instance = Instance(request.config.state_dir, instance)
    with instance_lock(instance, create=True):
        lines = services.put_config(instance, service, template, request.config)
    return text("OK", *lines, status=201)


def get_config(request, instance, service):
    data = files.read(Instance(request.config.state_dir, instance).template(service))
    if data is None:
        raise NotFound()
    return Response(data)


def delete_config(request, instance, service):
    from .. import services  # daemons and psutil: only changes pay for them

    instance = Instance(request.config.state_dir, instance)
    with instance_lock(instance, create=False):
        if not os.path.exists(instance.template(service)):
            raise NotFound()
        line = services.delete_config(instance, service, request.config)
    return text("OK", line)
