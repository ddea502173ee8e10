"""The write side: every change to an instance's stored files, whoever asks
(a controller's PUT or DELETE through handlers/, the standby's sync). Each
function checks what it is given as the contract says, takes the
instance's lock, has services.py carry the change out, and returns the
answer's lines; a refusal is an errors.HTTPError, nothing else of HTTP is
known here. Callers pass the change gate first (gate.change_gate), as
app.handle does for every request and the sync for each change.
"""
import os

from .errors import Conflict, NotFound, RequestEntityTooLarge
from .layout import Instance
from .system import files
from .system.locks import instance_lock


def within_limit(data, config, limit):
    """data, or 413 when it is over [limits] <limit>_bytes."""
    most = int(config.number("limits", limit + "_bytes"))
    if len(data) > most:
        raise RequestEntityTooLarge(detail="Limit for this resource: %d bytes" % most)
    return data


def put_config(config, instance_id, service, template):
    from . import services  # daemons and psutil: only changes pay for them

    within_limit(template, config, "config")
    instance = Instance(config.state_dir, instance_id)
    with instance_lock(instance, create=True):
        return services.put_config(instance, service, template, config)


def delete_config(config, instance_id, service):
    from . import services

    instance = Instance(config.state_dir, instance_id)
    with instance_lock(instance, create=False):
        if not os.path.exists(instance.template(service)):
            raise NotFound()
        return [services.delete_config(instance, service, config)]


def put_certificate(config, instance_id, filename, data):
    """A key + certificate file, a CA file or a CRL (certcheck.check_upload)."""
    from . import services
    from .certcheck import check_upload  # cryptography: only uploads pay for it

    within_limit(data, config, "certificate")
    instance = Instance(config.state_dir, instance_id)
    # Before the lock, which makes the instance's folder: a refused upload
    # leaves nothing behind. (A CA file deleted meanwhile would have to go
    # while no config uses it, and a CRL is only read beside one.)
    kind = check_upload(data, filename, ca_files=_other_files(instance, filename))
    with instance_lock(instance, create=True):
        _refuse_a_change_of_kind(instance, filename, kind, config)
        return services.replace_file(
            instance, instance.certificate(filename), data, config, mode=0o600,
            certificate=config.flag("daemons", "swap_certificates"))


def _refuse_a_change_of_kind(instance, filename, kind, config):
    """Conflict when a stored file that a config or a crt-list reads would
    become another kind of file (a CA file where a key and certificate was):
    the daemon reading it could no longer start."""
    from .certcheck import CA_FILE, CRL_FILE, KEY_PAIR

    stored = files.read(instance.certificate(filename))
    if stored is None:
        return
    was = KEY_PAIR if b"PRIVATE KEY-----" in stored else \
        CRL_FILE if b"X509 CRL-----" in stored else CA_FILE
    if was == kind:
        return
    users = ["the crt-list %s" % name for name in _crt_lists_naming(instance, filename)] + [
        "the %s configuration" % service for service in instance.configured_services()
        if _reads(instance, service, instance.certificate(filename), config)]
    if users:
        raise Conflict("%s is a %s in use by %s: a %s cannot replace it" % (
            filename, was, " and ".join(users), kind))


def _other_files(instance, filename):
    """The bytes of the instance's other stored files without a key (a CRL's
    possible issuers)."""
    found = []
    for name in instance.certificate_names():
        if name != filename:
            data = files.read(instance.certificate(name))
            if data is not None and b"PRIVATE KEY-----" not in data:
                found.append(data)
    return found


def delete_certificate(config, instance_id, filename):
    instance = Instance(config.state_dir, instance_id)
    with instance_lock(instance, create=False):
        lists = _crt_lists_naming(instance, filename)
        if lists and os.path.exists(instance.certificate(filename)):
            raise Conflict("Certificate is in use by the crt-list %s" % " and ".join(lists))
        _remove_unused(instance, instance.certificate(filename), "Certificate", config)
    return []


def _crt_lists_naming(instance, filename):
    """The instance's stored crt-lists that name the certificate file."""
    from .crtlist import named_files

    return [name for name in instance.crt_list_names()
            if filename in named_files(files.read(instance.crt_list(name)) or b"")]


def _remove_unused(instance, path, what, config):
    """Remove a stored file no config reads (404 when there is none, 409 when
    one does), and its folder once empty. The caller holds the lock."""
    if not os.path.exists(path):
        raise NotFound()
    users = [service for service in instance.configured_services()
             if _reads(instance, service, path, config)]
    if users:
        raise Conflict("%s is in use by the %s configuration" % (what, " and ".join(users)))
    files.remove(path)
    folder = os.path.dirname(path)
    if not os.listdir(folder):
        os.rmdir(folder)


def put_crt_list(config, instance_id, name, data):
    """A crt-list (crtlist.py): each line a stored certificate of the
    instance, allowed options, SNI filters. A running haproxy whose stored
    config reads it reloads (haproxy 2.6's runtime API cannot replace a
    crt-list's default certificate nor reorder its lines)."""
    from . import crtlist, services

    within_limit(data, config, "crt_list")
    instance = Instance(config.state_dir, instance_id)
    # Before the lock, which makes the instance's folder: a refused upload
    # leaves nothing behind. Again under it: a certificate may have gone since.
    crtlist.check(data, crtlist.file_kind_in(instance.certificates_dir))
    with instance_lock(instance, create=True):
        crtlist.check(data, crtlist.file_kind_in(instance.certificates_dir))
        path = instance.crt_list(name)
        readers = [service for service in instance.configured_services()
                   if _reads(instance, service, path, config)]
        return services.replace_file(instance, path, crtlist.render(data, instance.dir),
                                     config, services=readers)


def delete_crt_list(config, instance_id, name):
    instance = Instance(config.state_dir, instance_id)
    with instance_lock(instance, create=False):
        _remove_unused(instance, instance.crt_list(name), "crt-list", config)
    return []


def _reads(instance, service, certificate_path, config):
    """Whether the stored config reads the file (a certificate, a crt-list),
    as the daemon resolves its paths: crt-base and ca-base, a folder given as
    `crt`, // and .. folded."""
    from .sharedstate import scan_template

    template = files.read(instance.template(service))
    if template is None:
        return False
    scan = scan_template(instance, service, template.decode("utf-8", "replace"), config)
    return scan.names_file(certificate_path)


def put_custom503(config, instance_id, page):
    from . import services

    within_limit(page, config, "custom503")
    check_http_response(page)
    instance = Instance(config.state_dir, instance_id)
    with instance_lock(instance, create=True):
        return services.replace_file(instance, instance.custom503, page, config,
                                     services=["haproxy"])


def check_http_response(page):
    """Conflict unless page is a status line, header lines, a blank line (then
    a body): haproxy's errorfile sends the file as it is."""
    import re

    status_line, newline, rest = page.replace(b"\r\n", b"\n").partition(b"\n")
    if not newline or not re.fullmatch(rb"HTTP/1\.[01] [1-5][0-9][0-9]( [^\r\n]*)?",
                                       status_line):
        raise Conflict("Not an HTTP response: the first line must be a status line "
                       "such as 'HTTP/1.1 503 Service Unavailable'")
    head, blank_line, _body = (b"\n" + rest).partition(b"\n\n")
    if not blank_line:
        raise Conflict("Not an HTTP response: no blank line ends the headers")
    for line in head.split(b"\n")[1:]:
        if not re.fullmatch(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+:[^\r\n]*", line):
            raise Conflict("Not an HTTP response: bad header line %r"
                           % line[:80].decode("latin-1"))


def delete_custom503(config, instance_id):
    from . import services

    instance = Instance(config.state_dir, instance_id)
    with instance_lock(instance, create=False):
        if not os.path.exists(instance.custom503):
            raise NotFound()
        return services.remove_file(instance, instance.custom503, config,
                                    services=["haproxy"])


def delete_instance(config, instance_id):
    from . import services

    instance = Instance(config.state_dir, instance_id)
    with instance_lock(instance, create=False):
        if not instance.exists():
            raise NotFound()
        return services.delete_instance(instance, config)
