#!/usr/bin/env python3
"""Development PKI for appliance-api (lighttpd HTTPS with mandatory client certs).

    python3 tools/pki.py --out var/pki [--server-address ADDR ...] [--days N] [--force]

Writes ca.pem, ca.key, server.pem (cert + key, for lighttpd ssl.pemfile) and
client.pem (cert + key, for `curl -E`). Does nothing if ca.pem exists, unless --force.

Sticks to APIs shared by Debian 12's python3-cryptography (38.x) and current PyPI.
cryptography is imported lazily so tests can import this module without it.
"""
import argparse
import datetime
import ipaddress
import os
import sys

DEFAULT_DAYS = 825
CA_NAME = "appliance-api development CA"
SERVER_NAME = "appliance-api"
CLIENT_NAME = "controller"
# Clock skew between the host making the PKI and the appliance should not break TLS.
BACKDATE = datetime.timedelta(hours=1)


def _now():
    return datetime.datetime.now(datetime.timezone.utc)


def _new_key():
    from cryptography.hazmat.primitives.asymmetric import ec
    # P-256: fast to generate and accepted everywhere TLS 1.2+ is.
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name):
    from cryptography import x509
    from cryptography.x509.oid import NameOID
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key_usage(**on):
    from cryptography import x509
    flags = ("digital_signature", "content_commitment", "key_encipherment",
             "data_encipherment", "key_agreement", "key_cert_sign", "crl_sign",
             "encipher_only", "decipher_only")
    return x509.KeyUsage(**{f: on.get(f, False) for f in flags})


def _builder(subject, issuer, key, not_before, not_after):
    from cryptography import x509
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
    )


def make_ca(common_name, *, days=DEFAULT_DAYS):
    """Self-signed CA certificate and its key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    key = _new_key()
    not_before = _now() - BACKDATE
    cert = (
        _builder(_name(common_name), _name(common_name), key, not_before,
                 not_before + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _san(value):
    from cryptography import x509
    try:
        return x509.IPAddress(ipaddress.ip_address(value))
    except ValueError:
        return x509.DNSName(value)


def make_leaf(ca_cert, ca_key, common_name, *, server=False, client=False, sans=(),
              not_before=None, not_after=None):
    """Certificate signed by ca_cert/ca_key, and its key. sans: IP literals become IP
    SANs, anything else DNS. A not_after in the past gives an expired certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID

    if not_before is None:
        not_before = _now() - BACKDATE
        # Keep the validity window well-formed when a test asks for an expired cert.
        if not_after is not None and not_after <= not_before:
            not_before = not_after - datetime.timedelta(days=1)
    if not_after is None:
        not_after = not_before + datetime.timedelta(days=DEFAULT_DAYS)

    key = _new_key()
    builder = (
        _builder(_name(common_name), ca_cert.subject, key, not_before, not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        # ECDHE-ECDSA only ever signs with the leaf key.
        .add_extension(_key_usage(digital_signature=True), critical=True)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
            ca_key.public_key()), critical=False)
    )
    usages = [oid for want, oid in ((server, ExtendedKeyUsageOID.SERVER_AUTH),
                                    (client, ExtendedKeyUsageOID.CLIENT_AUTH)) if want]
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    names = list(dict.fromkeys(_san(v) for v in sans))  # duplicates would be rejected
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def make_crl(ca_cert, ca_key, revoked=(), *, last_update=None, next_update=None):
    """A PEM CRL of ca_cert's revoking the certificates in revoked; valid from
    an hour ago for a week unless told otherwise."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization

    now = _now()
    builder = (x509.CertificateRevocationListBuilder().issuer_name(ca_cert.subject)
               .last_update(last_update or now - BACKDATE)
               .next_update(next_update or now + datetime.timedelta(days=7)))
    for cert in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(cert.serial_number)
            .revocation_date(now - BACKDATE).build())
    return builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def _key_pem(key):
    from cryptography.hazmat.primitives import serialization as s
    return key.private_bytes(s.Encoding.PEM, s.PrivateFormat.PKCS8, s.NoEncryption())


def _cert_pem(cert):
    from cryptography.hazmat.primitives import serialization as s
    return cert.public_bytes(s.Encoding.PEM)


def pem_bundle(cert, key):
    """Certificate PEM then unencrypted PKCS#8 key PEM (lighttpd ssl.pemfile, curl -E)."""
    return _cert_pem(cert) + _key_pem(key)


def _write_atomic(path, data, mode):
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    tmp = "%s.tmp.%d" % (path, os.getpid())
    # Created with the final mode so a key is never readable by others, even briefly.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)  # umask may have narrowed it; never widens beyond mode
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dfd = os.open(directory, os.O_RDONLY)  # make the rename itself durable
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def write_private(path, data):
    _write_atomic(path, data, 0o600)


def generate(out, server_addresses=(), days=DEFAULT_DAYS, force=False):
    """Create the PKI in out; returns False if it already existed and force is off."""
    ca_path = os.path.join(out, "ca.pem")
    if os.path.exists(ca_path) and not force:
        return False
    os.makedirs(out, mode=0o700, exist_ok=True)
    os.chmod(out, 0o700)

    ca_cert, ca_key = make_ca(CA_NAME, days=days)
    not_before = _now() - BACKDATE
    not_after = not_before + datetime.timedelta(days=days)
    sans = ["localhost", "127.0.0.1", "::1", *server_addresses]
    server = make_leaf(ca_cert, ca_key, SERVER_NAME, server=True, sans=sans,
                       not_before=not_before, not_after=not_after)
    client = make_leaf(ca_cert, ca_key, CLIENT_NAME, client=True,
                       not_before=not_before, not_after=not_after)

    write_private(os.path.join(out, "ca.key"), _key_pem(ca_key))
    write_private(os.path.join(out, "server.pem"), pem_bundle(*server))
    write_private(os.path.join(out, "client.pem"), pem_bundle(*client))
    # ca.pem is the "already done" marker, so it goes last: an interrupted run is redone.
    _write_atomic(ca_path, _cert_pem(ca_cert), 0o644)
    return True


def main(argv=None):
    p = argparse.ArgumentParser(description="Create the appliance-api development PKI.")
    p.add_argument("--out", required=True, help="output directory (created 0700)")
    p.add_argument("--server-address", action="append", default=[], metavar="ADDR",
                   help="extra server SAN: IPv4/IPv6 literal or DNS name (repeatable)")
    p.add_argument("--days", type=int, default=DEFAULT_DAYS,
                   help="validity in days (default %(default)s)")
    p.add_argument("--force", action="store_true", help="regenerate even if ca.pem exists")
    args = p.parse_args(argv)
    if args.days < 1:
        p.error("--days must be positive")
    if generate(args.out, args.server_address, args.days, args.force):
        print("wrote ca.pem ca.key server.pem client.pem to %s" % args.out)
    else:
        print("%s already exists; leaving PKI untouched (use --force)"
              % os.path.join(args.out, "ca.pem"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
