"""/instances/:instance/certificates/:filename.pem: listener certificates.

A stored file is key + certificate + chain, mode 0600, named after the
certificate's CN (the route only matches safe names). The ETag is the file's
SHA-256, so a controller can skip re-sending an unchanged certificate.
"""
import hashlib
import os

from ..response import Response, text
from ..errors import Conflict, NotFound
from ..layout import Instance
from ..system import files
from ..system.locks import instance_lock


def put_certificate(request, instance, filename):
    from .. import services  # daemons and psutil: only changes pay for them
    from ..certcheck import check_certificate_file  # cryptography: only uploads pay for it

    data = request.read_body(int(request.config.number("limits", "certificate_bytes")))
    check_certificate_file(data, filename)
    instance = Instance(request.config.state_dir, instance)
    with instance_lock(instance, create=True):
        lines = services.replace_file(
            instance, instance.certificate(filename), data, request.config, mode=0o600,
            certificate=request.config.flag("daemons", "swap_certificates"))
    return text("OK", *lines, status=201, headers=[etag(data)])


def get_certificate(request, instance, filename):
    data = files.read(Instance(request.config.state_dir, instance).certificate(filename))
    if data is None:
        raise NotFound()
    return Response(data, content_type="application/x-pem-file", headers=[etag(data)])


def delete_certificate(request, instance, filename):
    instance = Instance(request.config.state_dir, instance)
    path = instance.certificate(filename)
    with instance_lock(instance, create=False):
        if not os.path.exists(path):
            raise NotFound()
        users = [service for service in instance.configured_services()
                 if _reads(instance, service, path, request.config)]
        if users:
            raise Conflict("Certificate is in use by the %s configuration" % " and ".join(users))
        files.remove(path)
        if not os.listdir(instance.certificates_dir):
            os.rmdir(instance.certificates_dir)
    return text("OK")


def etag(data):
    return ("ETag", '"%s"' % hashlib.sha256(data).hexdigest())


def _reads(instance, service, certificate_path, config):
    """Whether the stored config reads the certificate, as the daemon resolves
    its paths: crt-base and ca-base, a folder given as `crt`, // and .. folded."""
    from ..sharedstate import scan_template

    template = files.read(instance.template(service))
    if template is None:
        return False
    scan = scan_template(instance, service, template.decode("utf-8", "replace"), config)
    return scan.names_file(certificate_path)
