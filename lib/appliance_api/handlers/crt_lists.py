"""/instances/:instance/crt-lists/:name: haproxy crt-lists (crtlist.py).

A GET answers the crt-list as uploaded ({INSTANCE_DIR} as written; the
stored file has it filled in for haproxy), and its ETag is that text's
SHA-256, as the manifest's: a controller can skip re-sending an unchanged one.
"""
from ..response import Response, text
from ..errors import NotFound
from ..layout import Instance
from ..system import files
from .certificates import etag


def put_crt_list(request, instance, crtlist):
    from .. import changes  # daemons and psutil: only changes pay for them

    data = request.read_body(int(request.config.number("limits", "crt_list_bytes")))
    lines = changes.put_crt_list(request.config, instance, crtlist, data)
    return text("OK", *lines, status=201, headers=[etag(data)])


def get_crt_list(request, instance, crtlist):
    from ..crtlist import unrender

    stored = Instance(request.config.state_dir, instance)
    data = files.read(stored.crt_list(crtlist))
    if data is None:
        raise NotFound()
    uploaded = unrender(data, stored.dir)
    return Response(uploaded, content_type="text/plain; charset=us-ascii",
                    headers=[etag(uploaded)])


def delete_crt_list(request, instance, crtlist):
    from .. import changes

    return text("OK", *changes.delete_crt_list(request.config, instance, crtlist))
