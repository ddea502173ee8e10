"""Tests for appliance_api.certcheck.

Every key and certificate is generated here at test time: a root CA (RSA)
signs an intermediate (EC), which signs the leaves, so chains exercise both
RSA and ECDSA signature checks.  The main table lists, for each case, how to
build the upload body, the file name it is PUT under, and the 409 reason
expected (None: accepted).
"""

import datetime
import os
import subprocess
import sys

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from appliance_api import errors
from appliance_api.certcheck import (
    check_certificate_file, filename_for_common_name)

UTC = datetime.timezone.utc
NOW = datetime.datetime.now(UTC)
DAY = datetime.timedelta(days=1)
VALID = (NOW - DAY, NOW + 365 * DAY)
EXPIRED = (NOW - 30 * DAY, NOW - DAY)
FUTURE = (NOW + DAY, NOW + 30 * DAY)
CA_VALID = (NOW - DAY, NOW + 3650 * DAY)

LIB = os.path.normpath(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "lib"))


def name(cn=None, org="Example Test"):
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org)]
    if cn is not None:
        attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attributes)


def make_cert(subject, public_key, issuer, signing_key, validity, ca=False):
    not_before, not_after = validity
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None),
                       critical=True)
        .sign(signing_key, hashes.SHA256())
    )


class Pki:
    """The keys and certificates the table cases are built from."""

    def __init__(self):
        self.root_key = rsa.generate_private_key(65537, 2048)
        self.rsa_key = rsa.generate_private_key(65537, 2048)
        self.inter_key = ec.generate_private_key(ec.SECP256R1())
        self.ec_key = ec.generate_private_key(ec.SECP256R1())
        self.other_key = ec.generate_private_key(ec.SECP256R1())
        self.ed_key = ed25519.Ed25519PrivateKey.generate()

        root_name = name("Test Root CA")
        inter_name = name("Test Intermediate CA")

        def root_cert(validity=CA_VALID, key=self.root_key):
            return make_cert(root_name, key.public_key(), root_name, key,
                             validity, ca=True)

        def inter_cert(validity=CA_VALID):
            return make_cert(inter_name, self.inter_key.public_key(),
                             root_name, self.root_key, validity, ca=True)

        def leaf(subject, key=self.rsa_key, validity=VALID):
            return make_cert(subject, key.public_key(), inter_name,
                             self.inter_key, validity)

        self.root = root_cert()
        self.inter = inter_cert()
        self.leaf = leaf(name("www.example.com"))
        self.ec_leaf = leaf(name("ec.example.com"), key=self.ec_key)
        self.wildcard = leaf(name("*.example.com"))
        self.no_cn = leaf(name())
        self.expired_leaf = leaf(name("www.example.com"), validity=EXPIRED)
        self.future_leaf = leaf(name("www.example.com"), validity=FUTURE)
        self.expired_inter = inter_cert(EXPIRED)
        self.future_root = root_cert(FUTURE)
        # Same names as the real CAs but another key: only the signature
        # check can tell them apart.
        self.impostor_inter = make_cert(
            inter_name, self.other_key.public_key(), root_name,
            self.other_key, CA_VALID, ca=True)
        self.impostor_root = root_cert(key=self.other_key)
        self.other_ca = make_cert(
            name("Other CA"), self.other_key.public_key(), name("Other CA"),
            self.other_key, CA_VALID, ca=True)

    def chain(self):
        return [self.leaf, self.inter, self.root]


@pytest.fixture(scope="session")
def pki():
    return Pki()


def key_pem(key, fmt="traditional", encryption=None):
    formats = {
        "traditional": serialization.PrivateFormat.TraditionalOpenSSL,
        "pkcs8": serialization.PrivateFormat.PKCS8,
    }
    return key.private_bytes(
        serialization.Encoding.PEM, formats[fmt],
        encryption or serialization.NoEncryption())


def cert_pem(cert):
    return cert.public_bytes(serialization.Encoding.PEM)


def pem(*items):
    """Concatenate keys, certificates and raw bytes into one upload body."""
    out = b""
    for item in items:
        if isinstance(item, bytes):
            out += item
        elif isinstance(item, x509.Certificate):
            out += cert_pem(item)
        else:
            out += key_pem(item)
    return out


def block(label, payload):
    return b"-----BEGIN %s-----\n%s\n-----END %s-----\n" % (
        label.encode(), payload, label.encode())


def encrypted(key, fmt):
    return key_pem(key, fmt,
                   serialization.BestAvailableEncryption(b"secret"))


WWW = "www.example.com.pem"
NOT_PEM = "File contains data that is not a PEM key or certificate"

CASES = [
    # --- accepted ---
    ("valid RSA PKCS#1 key with chain",
     lambda p: pem(p.rsa_key, *p.chain()), WWW, None),
    ("valid RSA PKCS#8 key with chain",
     lambda p: pem(key_pem(p.rsa_key, "pkcs8"), *p.chain()), WWW, None),
    ("valid EC SEC1 key",
     lambda p: pem(p.ec_key, p.ec_leaf, p.inter, p.root),
     "ec.example.com.pem", None),
    ("valid EC PKCS#8 key",
     lambda p: pem(key_pem(p.ec_key, "pkcs8"), p.ec_leaf, p.inter),
     "ec.example.com.pem", None),
    ("valid wildcard",
     lambda p: pem(p.rsa_key, p.wildcard, p.inter, p.root),
     "WILDCARD.example.com.pem", None),
    ("valid leaf only, no chain",
     lambda p: pem(p.rsa_key, p.leaf), WWW, None),
    ("valid chain without the root",
     lambda p: pem(p.rsa_key, p.leaf, p.inter), WWW, None),
    ("valid with CRLF line endings",
     lambda p: pem(p.rsa_key, *p.chain()).replace(b"\n", b"\r\n"),
     WWW, None),
    ("valid with blank lines around blocks",
     lambda p: pem(b"\n\n", p.rsa_key, b"\n", p.leaf, b"  \n", p.inter,
                   b"\n\n"), WWW, None),
    ("valid with UTF-8 byte-order mark",
     lambda p: b"\xef\xbb\xbf" + pem(p.rsa_key, *p.chain()), WWW, None),

    # --- 1. not text ---
    ("empty body", lambda p: b"", WWW, "No certificate found"),
    ("binary bytes", lambda p: bytes(range(256)), WWW,
     "File is not a PEM text file"),
    ("DER certificate",
     lambda p: p.leaf.public_bytes(serialization.Encoding.DER), WWW,
     "File is not a PEM text file"),
    ("NUL byte in ASCII text",
     lambda p: pem(p.rsa_key, p.leaf) + b"\x00", WWW,
     "File is not a PEM text file"),

    # --- 2. not PEM key/certificate blocks ---
    ("garbage text", lambda p: b"hello, this is not a certificate\n", WWW,
     NOT_PEM),
    ("text before the first block",
     lambda p: pem(b"Bag Attributes\n", p.rsa_key, *p.chain()), WWW,
     NOT_PEM),
    ("text between blocks",
     lambda p: pem(p.rsa_key, b"subject=CN = www.example.com\n",
                   *p.chain()), WWW, NOT_PEM),
    ("text after the last block",
     lambda p: pem(p.rsa_key, *p.chain()) + b"trailing junk", WWW, NOT_PEM),
    ("public key block",
     lambda p: pem(p.rsa_key, p.leaf) + p.rsa_key.public_key().public_bytes(
         serialization.Encoding.PEM,
         serialization.PublicFormat.SubjectPublicKeyInfo), WWW, NOT_PEM),
    ("unterminated certificate block",
     lambda p: pem(p.rsa_key, p.leaf)
     + b"-----BEGIN CERTIFICATE-----\nMIIB\n", WWW, NOT_PEM),
    ("END label differs from BEGIN",
     lambda p: pem(p.rsa_key) + cert_pem(p.leaf).replace(
         b"END CERTIFICATE", b"END X509 CRL"), WWW, NOT_PEM),
    ("invalid base64 in a certificate",
     lambda p: pem(p.rsa_key, block("CERTIFICATE", b"MIIB!!notbase64")),
     WWW, NOT_PEM),
    ("empty certificate block",
     lambda p: pem(p.rsa_key, b"-----BEGIN CERTIFICATE-----\n"
                              b"-----END CERTIFICATE-----\n"), WWW, NOT_PEM),
    ("base64 that is not a certificate",
     lambda p: pem(p.rsa_key, block("CERTIFICATE", b"bm90IGEgY2VydA==")),
     WWW, NOT_PEM),
    ("base64 that is not a key",
     lambda p: pem(block("RSA PRIVATE KEY", b"bm90IGEga2V5"), p.leaf),
     WWW, NOT_PEM),
    ("unknown header in a key block",
     lambda p: pem(key_pem(p.rsa_key).replace(
         b"KEY-----\n", b"KEY-----\nComment: hello\n\n", 1), p.leaf),
     WWW, NOT_PEM),
    ("encrypted PKCS#8 key",
     lambda p: pem(encrypted(p.rsa_key, "pkcs8"), *p.chain()), WWW,
     "Private key is encrypted"),
    ("legacy encrypted RSA key (Proc-Type)",
     lambda p: pem(encrypted(p.rsa_key, "traditional"), *p.chain()), WWW,
     "Private key is encrypted"),
    ("legacy encrypted EC key (Proc-Type)",
     lambda p: pem(encrypted(p.ec_key, "traditional"), p.ec_leaf),
     "ec.example.com.pem", "Private key is encrypted"),
    ("encrypted PKCS#8 under a plain PRIVATE KEY label",
     lambda p: pem(encrypted(p.rsa_key, "pkcs8").replace(
         b"ENCRYPTED PRIVATE KEY", b"PRIVATE KEY"), *p.chain()), WWW,
     "Private key is encrypted"),

    # --- 3-5. missing, extra or unsupported key / certificate ---
    ("whitespace only", lambda p: b" \n\r\n\t", WWW, "No certificate found"),
    ("key only", lambda p: pem(p.rsa_key), WWW, "No certificate found"),
    ("certificates only", lambda p: pem(*p.chain()), WWW, "No RSA key found"),
    ("two keys",
     lambda p: pem(p.rsa_key, p.ec_key, *p.chain()), WWW,
     "More than one private key found"),
    ("Ed25519 key",
     lambda p: pem(key_pem(p.ed_key, "pkcs8"), *p.chain()), WWW,
     "Unsupported key type (RSA or EC only)"),

    # --- 6. block order ---
    ("certificate before key",
     lambda p: pem(p.leaf, p.rsa_key, p.inter, p.root), WWW,
     "Blocks out of order: expected key, certificate, then chain"),
    ("key at the end",
     lambda p: pem(*p.chain()) + key_pem(p.rsa_key), WWW,
     "Blocks out of order: expected key, certificate, then chain"),

    # --- 7. key/certificate match ---
    ("EC key with RSA certificate",
     lambda p: pem(p.ec_key, *p.chain()), WWW,
     "Certificate and key do not match"),
    ("other EC key with EC certificate",
     lambda p: pem(p.other_key, p.ec_leaf, p.inter),
     "ec.example.com.pem", "Certificate and key do not match"),
    ("intermediate listed before the leaf",
     lambda p: pem(p.rsa_key, p.inter, p.leaf, p.root), WWW,
     "Certificate and key do not match"),

    # --- 8. chain signatures ---
    ("chain out of order (root before intermediate)",
     lambda p: pem(p.rsa_key, p.leaf, p.root, p.inter), WWW,
     "Chain certificate 1 did not sign the certificate before it"),
    ("unrelated CA as chain",
     lambda p: pem(p.rsa_key, p.leaf, p.other_ca), WWW,
     "Chain certificate 1 did not sign the certificate before it"),
    ("impostor intermediate with the right name",
     lambda p: pem(p.rsa_key, p.leaf, p.impostor_inter), WWW,
     "Chain certificate 1 did not sign the certificate before it"),
    ("impostor root with the right name",
     lambda p: pem(p.rsa_key, p.leaf, p.inter, p.impostor_root), WWW,
     "Chain certificate 2 did not sign the certificate before it"),

    # --- 9. validity ---
    ("expired leaf",
     lambda p: pem(p.rsa_key, p.expired_leaf, p.inter, p.root), WWW,
     "Certificate has expired"),
    ("leaf not yet valid",
     lambda p: pem(p.rsa_key, p.future_leaf, p.inter, p.root), WWW,
     "Certificate is not yet valid"),
    ("expired intermediate",
     lambda p: pem(p.rsa_key, p.leaf, p.expired_inter, p.root), WWW,
     "Chain certificate 1 has expired"),
    ("root not yet valid",
     lambda p: pem(p.rsa_key, p.leaf, p.inter, p.future_root), WWW,
     "Chain certificate 2 is not yet valid"),
    ("expired leaf reported before a wrong filename",
     lambda p: pem(p.rsa_key, p.expired_leaf), "wrong.pem",
     "Certificate has expired"),

    # --- 10. filename ---
    ("filename for another name",
     lambda p: pem(p.rsa_key, *p.chain()), "mail.example.com.pem",
     "Filename does not match the certificate's common name "
     "(expected www.example.com.pem)"),
    ("filename differs in case",
     lambda p: pem(p.rsa_key, *p.chain()), "WWW.example.com.pem",
     "Filename does not match the certificate's common name "
     "(expected www.example.com.pem)"),
    ("wildcard filename with a literal asterisk",
     lambda p: pem(p.rsa_key, p.wildcard, p.inter), "*.example.com.pem",
     "Filename does not match the certificate's common name "
     "(expected WILDCARD.example.com.pem)"),
    ("certificate without a common name",
     lambda p: pem(p.rsa_key, p.no_cn, p.inter), WWW,
     "Certificate has no common name"),
]


@pytest.mark.parametrize(
    "build, filename, expected",
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES])
def test_check_certificate_file(pki, build, filename, expected):
    data = build(pki)
    if expected is None:
        check_certificate_file(data, filename)
    else:
        with pytest.raises(errors.Conflict) as caught:
            check_certificate_file(data, filename)
        assert caught.value.reason == expected
        assert caught.value.code == 409


@pytest.mark.parametrize("now, expected", [
    (NOW, None),
    (NOW.replace(tzinfo=None), None),  # naive means UTC
    (NOW + 400 * DAY, "Certificate has expired"),
    (NOW - 2 * DAY, "Certificate is not yet valid"),
    (NOW.astimezone(datetime.timezone(datetime.timedelta(hours=-5))), None),
], ids=["aware", "naive", "after leaf expiry", "before leaf start",
        "other timezone"])
def test_explicit_now(pki, now, expected):
    data = pem(pki.rsa_key, *pki.chain())
    if expected is None:
        check_certificate_file(data, WWW, now=now)
    else:
        with pytest.raises(errors.Conflict) as caught:
            check_certificate_file(data, WWW, now=now)
        assert caught.value.reason == expected


@pytest.mark.parametrize("cn, filename", [
    ("www.example.com", "www.example.com.pem"),
    ("*.example.com", "WILDCARD.example.com.pem"),
    ("example.com", "example.com.pem"),
    ("*.eu.example.com", "WILDCARD.eu.example.com.pem"),
])
def test_filename_for_common_name(cn, filename):
    assert filename_for_common_name(cn) == filename


def test_import_does_not_load_cryptography():
    code = ("import sys; import appliance_api.certcheck; "
            "sys.exit('cryptography' in sys.modules)")
    env = dict(os.environ, PYTHONPATH=LIB)
    subprocess.run([sys.executable, "-c", code], env=env, check=True)


# Issue 9: what the daemons' OpenSSL refuses is refused at upload, with a reason.
def _signed_leaf(pki, key, cn="www.example.com", algorithm=None, issuer_key=None,
                 issuer_name=None):
    builder = (x509.CertificateBuilder().subject_name(name(cn))
               .issuer_name(issuer_name or name("Test Intermediate CA"))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(VALID[0]).not_valid_after(VALID[1])
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True))
    return builder.sign(issuer_key or pki.inter_key, algorithm or hashes.SHA256())


def _weak_rsa(bits):
    """A small RSA key: cryptography refuses to generate one under 1024 bits,
    so the 512-bit one comes from openssl."""
    if bits >= 1024:
        return rsa.generate_private_key(65537, bits)
    pem_text = subprocess.run(["openssl", "genrsa", str(bits)], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, check=True).stdout
    return serialization.load_pem_private_key(pem_text, password=None)


@pytest.mark.parametrize("case, reason", [
    ("rsa512", "Key too small for the daemons' OpenSSL (RSA needs 2048 bits, EC 224)"),
    ("rsa1024", "Key too small for the daemons' OpenSSL (RSA needs 2048 bits, EC 224)"),
    ("ec192", "Key too small for the daemons' OpenSSL (RSA needs 2048 bits, EC 224)"),
    ("sha1", "Signature too weak for the daemons' OpenSSL (SHA-1 and MD5 are refused)"),
    ("md5", "Signature too weak for the daemons' OpenSSL (SHA-1 and MD5 are refused)"),
    ("ca1024", "Chain certificate key too small for the daemons' OpenSSL "
               "(RSA needs 2048 bits, EC 224)"),
])
def test_what_openssl_refuses_is_refused_with_a_reason(pki, case, reason, tmp_path):
    if case.startswith("rsa"):
        key = _weak_rsa(int(case[3:]))
        body = pem(key, _signed_leaf(pki, key), pki.inter, pki.root)
    elif case == "ec192":
        key = ec.generate_private_key(ec.SECP192R1())
        body = pem(key, _signed_leaf(pki, key), pki.inter, pki.root)
    elif case in ("sha1", "md5"):
        # cryptography 50 no longer signs with these: openssl does.
        folder = tmp_path
        with open(folder / "ca.key", "wb") as file:
            file.write(key_pem(pki.root_key))
        with open(folder / "ca.pem", "wb") as file:
            file.write(cert_pem(pki.root))
        with open(folder / "leaf.key", "wb") as file:
            file.write(key_pem(pki.rsa_key))
        subprocess.run(["openssl", "req", "-new", "-key", str(folder / "leaf.key"), "-subj",
                        "/CN=www.example.com", "-out", str(folder / "leaf.csr")], check=True)
        subprocess.run(["openssl", "x509", "-req", "-in", str(folder / "leaf.csr"), "-CA",
                        str(folder / "ca.pem"), "-CAkey", str(folder / "ca.key"),
                        "-CAcreateserial", "-days", "30", "-" + case,
                        "-out", str(folder / "leaf.pem")], check=True, stderr=subprocess.DEVNULL)
        body = pem(pki.rsa_key, (folder / "leaf.pem").read_bytes(), pki.root)
    else:  # a 1024-bit CA in the chain
        weak_ca_key = _weak_rsa(1024)
        weak_ca = make_cert(name("Weak CA"), weak_ca_key.public_key(), name("Weak CA"),
                            weak_ca_key, CA_VALID, ca=True)
        leaf = _signed_leaf(pki, pki.rsa_key, issuer_key=weak_ca_key,
                            issuer_name=name("Weak CA"))
        body = pem(pki.rsa_key, leaf, weak_ca)
    with pytest.raises(errors.Conflict) as refused:
        check_certificate_file(body, "www.example.com.pem")
    assert refused.value.reason == reason


@pytest.mark.parametrize("damage", ["blank line in base64", "END and BEGIN run together"])
def test_pem_that_openssl_cannot_read_is_refused(pki, damage):
    leaf = cert_pem(pki.leaf)
    if damage == "blank line in base64":
        lines = leaf.split(b"\n")
        leaf = b"\n".join(lines[:3] + [b""] + lines[3:])
        body = key_pem(pki.rsa_key) + leaf + cert_pem(pki.inter) + cert_pem(pki.root)
    else:
        body = key_pem(pki.rsa_key).rstrip(b"\n") + leaf + cert_pem(pki.inter) \
            + cert_pem(pki.root)
    with pytest.raises(errors.Conflict) as refused:
        check_certificate_file(body, "www.example.com.pem")
    assert refused.value.reason.startswith(("Malformed PEM", "File contains data that is not"))


def test_a_good_bundle_passes_openssl_too(pki):
    check_certificate_file(pem(pki.rsa_key, pki.leaf, pki.inter, pki.root),
                           "www.example.com.pem")
    check_certificate_file(pem(pki.ec_key, pki.ec_leaf, pki.inter, pki.root),
                           "ec.example.com.pem")
