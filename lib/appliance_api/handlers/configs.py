"""/instances/:instance/haproxy and /instances/:instance/stunnel: config templates."""
from ..response import Response, text
from ..errors import NotFound
from ..layout import Instance
from ..system import files


def put_config(request, instance, service):
    from .. import changes  # daemons and psutil: only changes pay for them

    template = request.read_body(int(request.config.number("limits", "config_bytes")))
    return text("OK", *changes.put_config(request.config, instance, service, template),
                status=201)


def get_config(request, instance, service):
    data = files.read(Instance(request.config.state_dir, instance).template(service))
    if data is None:
        raise NotFound()
    return Response(data)


def delete_config(request, instance, service):
    from .. import changes

    return text("OK", *changes.delete_config(request.config, instance, service))
