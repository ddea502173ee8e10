"""/instances/:instance/certificates/:filename.pem: a tenant's TLS files.

A stored file is key + certificate + chain (named after the certificate's
CN), a CA file (CA certificates only) or a CRL (X509 CRL blocks only); see
certcheck. Every one is mode 0600 (the route only matches safe names). The
ETag is the stored file's SHA-256, so a controller (and the standby's sync)
can skip re-sending an unchanged file.

A GET answers a key + certificate file without its private key: the key
leaves the appliance only towards its pair's peer, a client certificate
whose CN is in [sync] peer_client_names (the standby's sync copies keys).
"""
import hashlib
import os

from ..response import Response, text
from ..errors import Conflict, NotFound
from ..layout import Instance
from ..system import files
from ..system.locks import instance_lock

# The header a GET answer carries when it left the key out, so that a sync
# that was not let have it can say why instead of failing on "No RSA key found".
KEY_WITHHELD_HEADER = "X-Private-Key"


def put_certificate(request, instance, filename):
    from .. import services  # daemons and psutil: only changes pay for them
    from ..certcheck import check_upload  # cryptography: only uploads pay for it

    data = request.read_body(int(request.config.number("limits", "certificate_bytes")))
    instance = Instance(request.config.state_dir, instance)
    # Before the lock, which makes the instance's folder: a refused upload
    # leaves nothing behind. (A CA file deleted meanwhile would have to go
    # while no config uses it, and a CRL is only read beside one.)
    check_upload(data, filename, ca_files=_other_files(instance, filename))
    with instance_lock(instance, create=True):
        lines = services.replace_file(
            instance, instance.certificate(filename), data, request.config, mode=0o600,
            certificate=request.config.flag("daemons", "swap_certificates"))
    return text("OK", *lines, status=201, headers=[etag(data)])


def get_certificate(request, instance, filename):
    data = files.read(Instance(request.config.state_dir, instance).certificate(filename))
    if data is None:
        raise NotFound()
    headers = [etag(data)]
    if may_read_keys(request) or not has_private_key(data):
        return Response(data, content_type="application/x-pem-file", headers=headers)
    headers.append((KEY_WITHHELD_HEADER, "withheld"))
    return Response(without_private_keys(data), content_type="application/x-pem-file",
                    headers=headers)


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


def may_read_keys(request):
    """Whether this request's client is the pair's peer ([sync]
    peer_client_names), the only one a private key may leave the appliance
    for. lighttpd verified the certificate and set its CN."""
    if request.environ.get("SSL_CLIENT_VERIFY") != "SUCCESS":
        return False
    return request.environ.get("SSL_CLIENT_S_DN_CN") in request.config.words(
        "sync", "peer_client_names")


# Every PEM label a private key is stored under (certcheck takes only
# unencrypted ones, but a file stored by an older release is answered too).
_KEY_MARK = b"PRIVATE KEY-----"


def has_private_key(data):
    return _KEY_MARK in data


def without_private_keys(data):
    """data with every private key block left out (the certificate and its chain)."""
    kept, skipping = [], False
    for line in data.splitlines(keepends=True):
        stripped = line.strip()
        if stripped.startswith(b"-----BEGIN ") and stripped.endswith(_KEY_MARK):
            skipping = True
        elif skipping and stripped.startswith(b"-----END "):
            skipping = False
            continue
        if not skipping:
            kept.append(line)
    return b"".join(kept).lstrip(b"\r\n")


def _other_files(instance, filename):
    """The bytes of the instance's other stored files (a CRL's possible issuers)."""
    found = []
    for name in instance.certificate_names():
        if name != filename:
            data = files.read(instance.certificate(name))
            if data is not None and not has_private_key(data):
                found.append(data)
    return found


def _reads(instance, service, certificate_path, config):
    """Whether the stored config reads the certificate, as the daemon resolves
    its paths: crt-base and ca-base, a folder given as `crt`, // and .. folded."""
    from ..sharedstate import scan_template

    template = files.read(instance.template(service))
    if template is None:
        return False
    scan = scan_template(instance, service, template.decode("utf-8", "replace"), config)
    return scan.names_file(certificate_path)
