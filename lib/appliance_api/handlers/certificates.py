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

from ..response import Response, text
from ..errors import NotFound
from ..layout import Instance
from ..system import files

# The header a GET answer carries when it left the key out, so that a sync
# that was not let have it can say why instead of failing on "No RSA key found".
KEY_WITHHELD_HEADER = "X-Private-Key"


def put_certificate(request, instance, filename):
    from .. import changes  # daemons, psutil and cryptography: only uploads pay for them

    data = request.read_body(int(request.config.number("limits", "certificate_bytes")))
    lines = changes.put_certificate(request.config, instance, filename, data)
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
    from .. import changes

    return text("OK", *changes.delete_certificate(request.config, instance, filename))


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
_BEGIN, _END = b"-----BEGIN CERTIFICATE-----", b"-----END CERTIFICATE-----"


def has_private_key(data):
    return _KEY_MARK in data


def without_private_keys(data):
    """The certificate blocks of data, in order, and nothing else: built from
    what is kept, not by cutting out what is not, so that no spelling of a
    key (a byte-order mark before it, text before its BEGIN line, an older
    release's layout) can come along."""
    kept, position = [], 0
    while True:
        start = data.find(_BEGIN, position)
        if start < 0:
            break
        end = data.find(_END, start)
        if end < 0:
            break
        position = end + len(_END)
        kept.append(data[start:position].replace(b"\r\n", b"\n") + b"\n")
    answer = b"".join(kept)
    return b"" if _KEY_MARK in answer else answer

