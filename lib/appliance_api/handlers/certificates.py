"""/instances/:instance/certificates/:filename.pem: listener certificates.

A stored file is key + certificate + chain, mode 0600, named after the
certificate's CN (the route only matches safe names). The ETag is the file's
SHA-256, so a controller can skip re-sending an unchanged certificate.
"""
import hashlib

from ..response import Response, text
from ..errors import NotFound
from ..layout import Instance
from ..system import files


def put_certificate(request, instance, filename):
    from .. import changes  # daemons, psutil and cryptography: only uploads pay for them

    data = request.read_body(int(request.config.number("limits", "certificate_bytes")))
    lines = changes.put_certificate(request.config, instance, filename, data)
    return text("OK", *lines, status=201, headers=[etag(data)])


def get_certificate(request, instance, filename):
    data = files.read(Instance(request.config.state_dir, instance).certificate(filename))
    if data is None:
        raise NotFound()
    return Response(data, content_type="application/x-pem-file", headers=[etag(data)])


def delete_certificate(request, instance, filename):
    from .. import changes

    return text("OK", *changes.delete_certificate(request.config, instance, filename))


def etag(data):
    return ("ETag", '"%s"' % hashlib.sha256(data).hexdigest())
