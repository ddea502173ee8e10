"""PUT /certificate: the API's own TLS certificate, rotated over the API.

The body is key + certificate + chain, checked as a tenant's certificate is
(certcheck), except that the leaf must name this appliance (its CN or a
subject alternative name is the management address, the host name, or one
of [api] certificate_names) rather than a file name. lighttpd itself judges
it next (`lighttpd -tt` on a candidate); only then is [api] certificate_file
replaced, atomically, and lighttpd restarted gracefully (SIGUSR1): requests
in flight, this one included, finish on the old certificate, new
connections get the new one. The answer comes once a new connection to this
request's own address is shown the new certificate; if none is within
system.lighttpd.RESTART_TIMEOUT, the old file is put back and lighttpd
restarted again (409).
"""
from ..errors import Conflict
from ..response import text
from ..system import files


def put_api_certificate(request):
    from ..certcheck import check_api_certificate  # cryptography: only uploads pay for it
    from ..system import lighttpd
    from ..system.locks import api_certificate_lock

    config = request.config
    data = request.read_body(int(config.number("limits", "certificate_bytes")))
    path = config.get("api", "certificate_file")
    check_api_certificate(data, management_names(config), issuers=trusted_issuers(path))
    refused = lighttpd.refuses_certificate(config.get("programs", "lighttpd"), data)
    if refused:
        raise Conflict("lighttpd refuses the certificate: %s" % refused)
    with api_certificate_lock(config.state_dir):
        old = files.read(path)
        files.write_atomic(path, data, 0o600)
        pid = lighttpd.running_pid(config.get("api", "lighttpd_pid_file"))
        if pid is None:
            return text("OK", "lighttpd is not running: it serves the new certificate when it "
                        "starts", status=201)
        lighttpd.graceful_restart(pid)
        address, port = request.environ.get("SERVER_ADDR"), request.environ.get("SERVER_PORT")
        if address and port and not lighttpd.wait_serving(address, port, _leaf_der(data)):
            files.restore(path, old, 0o600)
            lighttpd.graceful_restart(pid)
            raise Conflict("lighttpd did not serve the new certificate within %ds; the "
                           "previous certificate is back in place" % lighttpd.RESTART_TIMEOUT)
    return text("OK", "lighttpd (pid %d) serves the new certificate to new connections" % pid,
                status=201)


def trusted_issuers(certificate_file):
    """What may sign a new API certificate: the chain served now, and the
    controller CA beside it (ca.pem, as tools/lighttpd_local.py reads it)."""
    import os

    found = [files.read(certificate_file),
             files.read(os.path.join(os.path.dirname(certificate_file), "ca.pem"))]
    return [data for data in found if data]


def management_names(config):
    """What the API's certificate may name: the management address, the host
    name, and [api] certificate_names."""
    from ..system.statistics import hostname

    return [config.get("api", "management_address"), hostname()] + config.words(
        "api", "certificate_names")


def _leaf_der(data):
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    end_marker = b"-----END CERTIFICATE-----"
    start = data.index(b"-----BEGIN CERTIFICATE-----")
    end = data.index(end_marker, start) + len(end_marker)
    return x509.load_pem_x509_certificate(data[start:end]).public_bytes(Encoding.DER)
