"""Checks on an uploaded TLS file (PUT .../certificates/:filename.pem, PUT /certificate).

A stored file is one of three kinds, told apart by its PEM blocks alone:

- KEY_PAIR: an unencrypted RSA or EC private key, the leaf certificate, then
  its chain, in that order (../shared/spec/api-contract.md), named after the
  leaf's CN; ``check_certificate_file``.
- CA_FILE: CA certificates only (each basicConstraints CA:TRUE), for
  haproxy's ca-file / ca-verify-file and stunnel's CAfile; any valid name.
- CRL_FILE: X509 CRL blocks only, each in its validity and signed by a CA
  certificate of one of the instance's stored CA files; haproxy's crl-file
  and stunnel's CRLfile.

``check_upload`` judges a body of any kind and says which it is; every check
raises ``errors.Conflict(reason)`` for the first problem it finds. The reasons
are part of the contract, so tests assert them.

cryptography is imported inside the functions: every CGI request imports the
handlers, and only certificate uploads should pay for loading it.  The code
sticks to APIs present in both Debian 12's cryptography 38 and current PyPI
releases.
"""

import base64
import binascii
import datetime
import re

from .errors import Conflict

KEY_LABELS = ("PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY")
CERT_LABEL = "CERTIFICATE"
CRL_LABEL = "X509 CRL"
KEY_PAIR, CA_FILE, CRL_FILE = "key and certificate", "CA file", "CRL"

# The END label must repeat the BEGIN label; a block that is never closed
# is left unmatched and so counts as stray text.
_PEM_BLOCK = re.compile(
    r"-----BEGIN ([^-\r\n]+)-----\r?\n(.*?)-----END \1-----", re.DOTALL)

# Text files may hold tabs and line breaks; other control characters mean
# someone sent DER or some other binary file.
_BINARY = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")

_NOT_PEM = "File contains data that is not a PEM key or certificate"
_ENCRYPTED = "Private key is encrypted"


class _Block:
    """One parsed PEM block: ``kind`` is "key", "cert" or "crl"; ``obj`` is the
    loaded object, or None for a key of a type cryptography cannot load."""

    def __init__(self, kind, obj):
        self.kind = kind
        self.obj = obj


def filename_for_common_name(cn: str) -> str:
    """The file name a certificate for ``cn`` is stored under:
    "*.example.com" -> "WILDCARD.example.com.pem"."""
    return cn.replace("*", "WILDCARD") + ".pem"


def check_upload(data: bytes, filename: str, ca_files=(), now=None) -> str:
    """The kind of file `data` is (KEY_PAIR, CA_FILE or CRL_FILE), or
    errors.Conflict(<one-line reason>) if it is usable as none of them.
    ca_files: the bytes of the instance's stored CA files, the only issuers
    a CRL may have."""
    blocks = _read_blocks(data)
    kinds = {block.kind for block in blocks}
    now = _utc(now) if now is not None else datetime.datetime.now(datetime.timezone.utc)
    if "crl" in kinds:
        if kinds != {"crl"}:
            raise Conflict("A CRL file holds X509 CRL blocks only (found a key or "
                           "certificate with them)")
        _check_crls([block.obj for block in blocks], ca_files, now)
        return CRL_FILE
    if kinds == {"cert"}:
        _check_ca_certificates([block.obj for block in blocks], now)
        check_with_openssl(data, as_ca_file=True)
        return CA_FILE
    _check_key_pair(blocks, data, now, filename=filename)
    return KEY_PAIR


def check_certificate_file(data: bytes, filename: str, now=None) -> None:
    """Raise errors.Conflict(<one-line reason>) if `data` is not a usable PEM
    for a listener named `filename`."""
    now = _utc(now) if now is not None else datetime.datetime.now(datetime.timezone.utc)
    _check_key_pair(_read_blocks(data), data, now, filename=filename)


def check_api_certificate(data: bytes, names, issuers=None, now=None) -> None:
    """The API's own certificate (PUT /certificate): a tenant certificate's
    checks, but the leaf's CN or one of its subject alternative names must be
    one of `names` (the management address, the host name) instead of the
    file name. issuers: the bytes of PEM files whose certificates may have
    signed it (the chain of the certificate served now, the CA beside it):
    a leaf from any other CA would lock every controller out, with no API
    call left to undo it. None: not checked."""
    now = _utc(now) if now is not None else datetime.datetime.now(datetime.timezone.utc)
    blocks = _read_blocks(data)
    if any(block.kind == "crl" for block in blocks):
        raise Conflict(_NOT_PEM)
    leaf = _check_key_pair(blocks, data, now, filename=None)
    served = _names_of(leaf)
    wanted = {_normal_name(name) for name in names}
    if not served & wanted:
        raise Conflict("Certificate names none of this appliance's management names (%s)"
                       % _one_line(", ".join(sorted(names))))
    if issuers is None:
        return
    candidates = []
    for pem in issuers:
        try:
            candidates += [block.obj for block in _read_blocks(pem) if block.kind == "cert"]
        except Conflict:
            continue  # an unreadable file signs nothing
    if not any(_signed_by(leaf, issuer) for issuer in candidates):
        raise Conflict("Certificate is not issued by the CA of the certificate served now "
                       "(%s): controllers would not trust it" % _one_line(
                           leaf.issuer.rfc4514_string()))


def _check_key_pair(blocks, data, now, filename):
    """The checks of a key + certificate + chain file; its leaf. filename
    None: no file name rule (the API's own certificate)."""
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    if any(block.kind == "crl" for block in blocks):
        raise Conflict("A key and certificate file holds no CRL (a CRL goes in a file of "
                       "its own)")
    keys = [b for b in blocks if b.kind == "key"]
    certs = [b.obj for b in blocks if b.kind == "cert"]

    if not certs:
        raise Conflict("No certificate found")
    if not keys:
        # The original API only took RSA keys; clients match on this wording.
        raise Conflict("No RSA key found")
    if len(keys) > 1:
        raise Conflict("More than one private key found")
    key = keys[0].obj
    if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
        raise Conflict("Unsupported key type (RSA or EC only)")
    if blocks[0].kind != "key":
        raise Conflict(
            "Blocks out of order: expected key, certificate, then chain")

    leaf, chain = certs[0], certs[1:]
    if not _same_public_key(key, leaf):
        raise Conflict("Certificate and key do not match")

    signed = leaf
    for position, signer in enumerate(chain, 1):
        if not _signed_by(signed, signer):
            raise Conflict(
                "Chain certificate %d did not sign the certificate before it"
                % position)
        signed = signer

    problem = _validity_problem(leaf, now)
    if problem:
        raise Conflict("Certificate " + problem)
    for position, cert in enumerate(chain, 1):
        problem = _validity_problem(cert, now)
        if problem:
            raise Conflict("Chain certificate %d %s" % (position, problem))

    if filename is not None:
        cn = _common_name(leaf)
        if cn is None:
            raise Conflict("Certificate has no common name")
        expected = filename_for_common_name(cn)
        if filename != expected:
            raise Conflict(
                "Filename does not match the certificate's common name "
                "(expected %s)" % _one_line(expected))
    check_with_openssl(data)
    return leaf


def _check_ca_certificates(certs, now):
    """Every certificate of a CA file a CA's (basicConstraints CA:TRUE), in its validity."""
    from cryptography import x509

    for position, cert in enumerate(certs, 1):
        try:
            constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        except x509.ExtensionNotFound:
            constraints = None
        except Exception:  # a malformed extension: not something OpenSSL would trust either
            raise Conflict(_NOT_PEM) from None
        if constraints is None or not constraints.ca:
            # A leaf without its key is the common mistake: the original's
            # wording first, which clients match on.
            raise Conflict("No RSA key found (and certificate %d is not a CA certificate: no "
                           "basicConstraints CA:TRUE; a file without a key holds CA "
                           "certificates only)" % position)
        problem = _validity_problem(cert, now)
        if problem:
            raise Conflict("CA certificate %d %s" % (position, problem))


def _check_crls(crls, ca_files, now):
    """Every CRL in its validity (this update <= now < next update) and signed
    by a CA certificate of one of the instance's stored CA files."""
    issuers = [cert for data in ca_files for cert in stored_ca_certificates(data)]
    for position, crl in enumerate(crls, 1):
        this_update, next_update = _crl_time(crl, "last_update"), _crl_time(crl, "next_update")
        if now < this_update:
            raise Conflict("CRL %d is not yet valid (its this-update is in the future)"
                           % position)
        if next_update is not None and now >= next_update:
            raise Conflict("CRL %d has expired (its next-update has passed)" % position)
        if not any(_crl_signed_by(crl, issuer) for issuer in issuers):
            raise Conflict("CRL %d was not signed by a CA certificate of this instance's CA "
                           "files (issuer %s)" % (position, _one_line(crl.issuer.rfc4514_string())))


def stored_ca_certificates(data):
    """The CA certificates of a stored file that is a CA file, else []."""
    try:
        blocks = _read_blocks(data)
    except Conflict:
        return []
    if not blocks or any(block.kind != "cert" for block in blocks):
        return []
    return [block.obj for block in blocks]


def _crl_signed_by(crl, issuer):
    if crl.issuer != issuer.subject:
        return False
    try:
        return crl.is_signature_valid(issuer.public_key())
    except Exception:  # a key type or algorithm this cryptography cannot check
        return False


def _crl_time(crl, name):
    aware = getattr(crl, name + "_utc", None)  # cryptography 42 and later
    if aware is not None:
        return aware
    value = getattr(crl, name)
    return None if value is None else value.replace(tzinfo=datetime.timezone.utc)


def _names_of(cert):
    """The CN and the DNS and IP subject alternative names, normalised."""
    import ipaddress

    from cryptography import x509

    names = set()
    cn = _common_name(cert)
    if cn:
        names.add(_normal_name(cn))
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return names
    names.update(_normal_name(n) for n in san.get_values_for_type(x509.DNSName))
    names.update(str(ipaddress.ip_address(a)) for a in san.get_values_for_type(x509.IPAddress))
    return names


def _normal_name(name):
    import ipaddress

    try:
        return str(ipaddress.ip_address(name.strip("[]")))
    except ValueError:
        return name.lower().rstrip(".")


# What OpenSSL (at Debian 12's security level 2) says, in the contract's words.
_OPENSSL_REASONS = {
    "EE_KEY_TOO_SMALL": "Key too small for the daemons' OpenSSL (RSA needs 2048 bits, "
                        "EC 224)",
    "CA_KEY_TOO_SMALL": "Chain certificate key too small for the daemons' OpenSSL "
                        "(RSA needs 2048 bits, EC 224)",
    "CA_MD_TOO_WEAK": "Signature too weak for the daemons' OpenSSL (SHA-1 and MD5 "
                      "are refused)",
    "EE_MD_TOO_WEAK": "Signature too weak for the daemons' OpenSSL (SHA-1 and MD5 "
                      "are refused)",
    "KEY_VALUES_MISMATCH": "Certificate and key do not match",
}


def check_with_openssl(data: bytes, as_ca_file=False) -> None:
    """Load the bundle the way haproxy and stunnel will: with the system's
    OpenSSL (Python's ssl module links the same libssl 3 on Debian 12, with the
    same security level). What it refuses, the daemons would refuse at reload,
    with a far less useful message. as_ca_file: load it as trusted CAs."""
    import os
    import ssl
    import tempfile

    # Key material goes to memory-backed /dev/shm where there is one.
    folder = "/dev/shm" if os.path.isdir("/dev/shm") else None
    fd, path = tempfile.mkstemp(prefix=".appliance-api-", suffix=".pem", dir=folder)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            if as_ca_file:
                context.load_verify_locations(path)
            else:
                context.load_cert_chain(path)
        except ssl.SSLError as error:
            reason = getattr(error, "reason", None) or ""
            if reason in _OPENSSL_REASONS:
                raise Conflict(_OPENSSL_REASONS[reason]) from None
            if reason.startswith(("PEM", "BAD_BASE64", "NO_START_LINE", "BAD_END_LINE",
                                  "SHORT_HEADER", "ASN1", "NESTED_ASN1", "WRONG_TAG",
                                  "HEADER_TOO_LONG", "TOO_LONG", "NOT_ENOUGH_DATA")) \
                    or error.library in ("PEM", "ASN1") or "PEM lib" in str(error):
                raise Conflict("Malformed PEM: OpenSSL cannot read the file") from None
            raise Conflict("Certificate refused by OpenSSL: %s"
                           % _one_line(reason or str(error))) from None
    finally:
        os.unlink(path)


def _read_blocks(data):
    """Split the body into parsed PEM blocks, in file order, raising
    Conflict for anything that is not a key or certificate block."""
    if not data:
        raise Conflict("No certificate found")
    try:
        # utf-8-sig drops the byte-order mark some Windows editors write.
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise Conflict("File is not a PEM text file") from None
    if _BINARY.search(text):
        raise Conflict("File is not a PEM text file")

    blocks = []
    end = 0
    for match in _PEM_BLOCK.finditer(text):
        if text[end:match.start()].strip():
            raise Conflict(_NOT_PEM)
        end = match.end()
        blocks.append(_parse_block(match.group(1), match.group(2)))
    if text[end:].strip():
        raise Conflict(_NOT_PEM)
    return blocks


def _parse_block(label, body):
    from cryptography import x509
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives.serialization import (
        load_der_private_key)

    if label == "ENCRYPTED PRIVATE KEY":
        raise Conflict(_ENCRYPTED)
    if label not in KEY_LABELS and label not in (CERT_LABEL, CRL_LABEL):
        raise Conflict(_NOT_PEM)

    headers, payload = _split_headers(body)
    if "ENCRYPTED" in headers.get("Proc-Type", ""):
        raise Conflict(_ENCRYPTED)
    # Headers only ever carry legacy encryption parameters; anything else
    # is not something we know how to store.
    if headers:
        raise Conflict(_NOT_PEM)
    try:
        der = base64.b64decode("".join(payload.split()), validate=True)
    except (binascii.Error, ValueError):
        raise Conflict(_NOT_PEM) from None
    if not der:
        raise Conflict(_NOT_PEM)

    # The exception types for malformed DER differ between cryptography
    # releases (and between its OpenSSL and Rust parsers), so any failure
    # to load untrusted bytes is the client's problem, not a server error.
    if label == CERT_LABEL:
        try:
            cert = x509.load_der_x509_certificate(der)
            cert.subject, cert.issuer  # names are parsed lazily: refuse bad ones here
        except Exception:
            raise Conflict(_NOT_PEM) from None
        return _Block("cert", cert)
    if label == CRL_LABEL:
        try:
            crl = x509.load_der_x509_crl(der)
            crl.issuer, crl.signature_hash_algorithm  # parsed lazily: refuse bad ones here
        except Exception:
            raise Conflict("File contains a CRL that does not parse") from None
        return _Block("crl", crl)
    try:
        return _Block("key", load_der_private_key(der, password=None))
    except UnsupportedAlgorithm:
        # A well-formed key of a type we do not take is reported as such
        # once the key count is known, not as garbage.
        return _Block("key", None)
    except TypeError:
        # Raised for a password-protected PKCS#8 key under a plain label.
        raise Conflict(_ENCRYPTED) from None
    except Exception:
        raise Conflict(_NOT_PEM) from None


def _split_headers(body):
    """RFC 1421 headers ("Proc-Type: 4,ENCRYPTED") come before a blank line;
    return them as a dict and the rest of the block as the base64 text."""
    lines = body.splitlines()
    if not lines or ":" not in lines[0]:
        return {}, body
    headers = {}
    for number, line in enumerate(lines):
        if not line.strip():
            return headers, "\n".join(lines[number + 1:])
        name, _, value = line.partition(":")
        headers[name.strip()] = value.strip()
    return headers, ""


def _same_public_key(key, cert):
    from cryptography.hazmat.primitives.serialization import (
        Encoding, PublicFormat)

    def spki(public_key):
        return public_key.public_bytes(
            Encoding.DER, PublicFormat.SubjectPublicKeyInfo)

    try:
        return spki(key.public_key()) == spki(cert.public_key())
    except Exception:
        # A certificate key type cryptography cannot load cannot match ours.
        return False


def _signed_by(cert, issuer):
    """True if `issuer` is named as, and really is, the signer of `cert`.

    Done by hand because Certificate.verify_directly_issued_by only exists
    from cryptography 40 on."""
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

    if cert.issuer != issuer.subject:
        return False
    try:
        public_key = issuer.public_key()
        hash_algorithm = cert.signature_hash_algorithm
        if isinstance(public_key, rsa.RSAPublicKey):
            # signature_algorithm_parameters (cryptography >= 41) also
            # covers RSA-PSS; before it, only PKCS#1 v1.5 can be checked.
            rsa_padding = getattr(cert, "signature_algorithm_parameters",
                                  None) or padding.PKCS1v15()
            public_key.verify(cert.signature, cert.tbs_certificate_bytes,
                              rsa_padding, hash_algorithm)
        elif isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(cert.signature, cert.tbs_certificate_bytes,
                              ec.ECDSA(hash_algorithm))
        else:
            return False
    except Exception:
        # InvalidSignature, or a signature algorithm this cryptography
        # cannot check: either way we cannot show the issuer signed it.
        return False
    return True


def _validity_problem(cert, now):
    """"has expired" / "is not yet valid", or None if `now` is in range."""
    if now < _cert_time(cert, "not_valid_before"):
        return "is not yet valid"
    if now > _cert_time(cert, "not_valid_after"):
        return "has expired"
    return None


def _cert_time(cert, name):
    # The *_utc properties arrived in cryptography 42, which deprecates the
    # naive ones; older releases only have the naive (UTC) values.
    aware = getattr(cert, name + "_utc", None)
    if aware is not None:
        return aware
    return getattr(cert, name).replace(tzinfo=datetime.timezone.utc)


def _utc(moment):
    """Treat a naive datetime as UTC, so callers may pass either kind."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=datetime.timezone.utc)
    return moment.astimezone(datetime.timezone.utc)


def _common_name(cert):
    from cryptography.x509.oid import NameOID

    # The first CN is the primary one, as OpenSSL reports it.
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not names:
        return None
    value = names[0].value
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return value


def _one_line(text):
    # A CN is attacker-chosen; keep the reason on one line regardless.
    if text.isprintable():
        return text
    return text.encode("unicode_escape").decode("ascii")
