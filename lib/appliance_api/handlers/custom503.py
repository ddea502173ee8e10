"""/instances/:instance/custom503: the full HTTP response haproxy sends as its 503 page."""
from ..response import Response, text
from ..errors import NotFound
from ..layout import Instance
from ..system import files


def put_custom503(request, instance):
    from .. import changes  # daemons and psutil: only changes pay for them

    page = request.read_body(int(request.config.number("limits", "custom503_bytes")))
    return text("OK", *changes.put_custom503(request.config, instance, page), status=201)


def get_custom503(request, instance):
    data = files.read(Instance(request.config.state_dir, instance).custom503)
    if data is None:
        raise NotFound()
    return Response(data, content_type="application/octet-stream")


def delete_custom503(request, instance):
    from .. import changes

    return text("OK", *changes.delete_custom503(request.config, instance))
