"""CA files, CRLs and keys that stay on the appliance, in process:
certcheck's judgement of a body without a key (a CA bundle, CRLs), and
GET's rule that only the pair's peer ([sync] peer_client_names) reads a
private key. Every key, certificate and CRL is made here at test time."""
import datetime
import hashlib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

import pki
from appliance_api import errors
from appliance_api.certcheck import CA_FILE, CRL_FILE, KEY_PAIR, check_upload
from conftest import VERIFIED, make_config

NOW = datetime.datetime.now(datetime.timezone.utc)
HOUR, DAY = datetime.timedelta(hours=1), datetime.timedelta(days=1)
PEER = "appliance-sync"


def cert_pem(cert):
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_crl(ca, ca_key, revoked=(), this_update=None, next_update=None):
    return pki.make_crl(ca, ca_key, revoked, last_update=this_update, next_update=next_update)


@pytest.fixture(scope="module")
def cas():
    client_ca, client_ca_key = pki.make_ca("tenant client CA")
    other_ca, other_ca_key = pki.make_ca("another CA")
    leaf, leaf_key = pki.make_leaf(client_ca, client_ca_key, "client1", client=True)
    return {"ca": client_ca, "key": client_ca_key, "other": other_ca, "other_key": other_ca_key,
            "leaf": leaf, "leaf_key": leaf_key}


def refusal(data, filename="ca.pem", ca_files=(), now=None):
    with pytest.raises(errors.Conflict) as caught:
        check_upload(data, filename, ca_files=ca_files, now=now)
    assert caught.value.code == 409
    assert "\n" not in caught.value.reason
    return caught.value.reason


def test_a_bundle_of_ca_certificates_is_a_ca_file_under_any_name(cas):
    bundle = cert_pem(cas["ca"]) + cert_pem(cas["other"])
    assert check_upload(bundle, "client-cas.pem") == CA_FILE
    assert check_upload(cert_pem(cas["ca"]), "x.pem") == CA_FILE


def test_a_certificate_without_ca_true_is_no_ca_file(cas):
    assert refusal(cert_pem(cas["leaf"])).startswith(
        "No RSA key found (and certificate 1 is not a CA certificate")
    # A leaf slipped in among CAs is named by its position.
    assert "certificate 2 is not a CA" in refusal(cert_pem(cas["ca"]) + cert_pem(cas["leaf"]))


def test_an_expired_ca_certificate_is_refused():
    ca, _key = pki.make_ca("old CA", days=1)
    assert refusal(cert_pem(ca), now=NOW + 3 * DAY) == "CA certificate 1 has expired"


def test_a_ca_bundle_with_a_key_is_judged_as_a_key_pair(cas):
    # The key is not the CA certificate's: refused as a key + certificate file would be.
    assert refusal(key_pem(cas["leaf_key"]) + cert_pem(cas["ca"])) == \
        "Certificate and key do not match"


def test_a_crl_signed_by_a_stored_ca_is_a_crl(cas):
    crl = make_crl(cas["ca"], cas["key"], revoked=[cas["leaf"]])
    stored = [cert_pem(cas["other"]), cert_pem(cas["ca"])]
    assert check_upload(crl, "client.crl.pem", ca_files=stored) == CRL_FILE
    # Two CRLs of two CAs in one file, each with its issuer stored.
    both = crl + make_crl(cas["other"], cas["other_key"])
    assert check_upload(both, "all.pem", ca_files=[b"".join(stored)]) == CRL_FILE


@pytest.mark.parametrize("case, expected", [
    ("expired", "CRL 1 has expired (its next-update has passed)"),
    ("not yet valid", "CRL 1 is not yet valid (its this-update is in the future)"),
    ("wrong issuer", "CRL 1 was not signed by a CA certificate of this instance's CA files "
                     "(issuer CN=another CA)"),
    ("no ca files", "CRL 1 was not signed by a CA certificate of this instance's CA files "
                    "(issuer CN=tenant client CA)"),
    ("forged name", "CRL 1 was not signed by a CA certificate of this instance's CA files "
                    "(issuer CN=tenant client CA)"),
])
def test_a_crl_out_of_its_validity_or_from_another_ca_is_refused(cas, case, expected):
    stored = [cert_pem(cas["ca"])]
    crl = {
        "expired": lambda: make_crl(cas["ca"], cas["key"], this_update=NOW - 8 * DAY,
                                    next_update=NOW - DAY),
        "not yet valid": lambda: make_crl(cas["ca"], cas["key"], this_update=NOW + DAY,
                                          next_update=NOW + 8 * DAY),
        "wrong issuer": lambda: make_crl(cas["other"], cas["other_key"]),
        "no ca files": lambda: make_crl(cas["ca"], cas["key"]),
        # The stored CA's name, another key's signature.
        "forged name": lambda: _crl_named(cas["ca"].subject, cas["other_key"]),
    }[case]()
    assert refusal(crl, ca_files=[] if case == "no ca files" else stored) == expected


def _crl_named(issuer_name, signing_key):
    return (x509.CertificateRevocationListBuilder().issuer_name(issuer_name)
            .last_update(NOW - HOUR).next_update(NOW + DAY)
            .sign(signing_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))


def test_garbage_and_mixed_crl_files_are_refused(cas):
    crl = make_crl(cas["ca"], cas["key"])
    stored = [cert_pem(cas["ca"])]
    assert refusal(b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n",
                   ca_files=stored) == "File contains a CRL that does not parse"
    assert refusal(b"\x30\x82\x01\x00binary", ca_files=stored) == "File is not a PEM text file"
    assert refusal(key_pem(cas["leaf_key"]) + crl, ca_files=stored).startswith(
        "A CRL file holds X509 CRL blocks only")
    assert refusal(cert_pem(cas["ca"]) + crl, ca_files=stored).startswith(
        "A CRL file holds X509 CRL blocks only")
    assert refusal(crl + b"trailing words\n", ca_files=stored) == \
        "File contains data that is not a PEM key or certificate"


def test_a_key_pair_is_still_named_after_its_common_name(cas):
    server, server_key = pki.make_leaf(cas["ca"], cas["key"], "www.example.com", server=True)
    body = key_pem(server_key) + cert_pem(server)
    assert check_upload(body, "www.example.com.pem") == KEY_PAIR
    assert refusal(body, "other.pem").startswith("Filename does not match")


# --- through the API: the CRL's issuers are the instance's stored CA files --------------

def test_a_crl_put_is_judged_against_the_instance_s_ca_files(app, instance_id, cas):
    base = "/instances/%s/certificates/" % instance_id
    crl = make_crl(cas["ca"], cas["key"], revoked=[cas["leaf"]])
    response = app.put(base + "client.crl.pem", crl, expect_errors=True)
    assert response.status_int == 409 and "was not signed by a CA certificate" in response.text
    assert app.get("/instances/" + instance_id, expect_errors=True).status_int == 404
    assert app.put(base + "client-ca.pem", cert_pem(cas["ca"])).status_int == 201
    response = app.put(base + "client.crl.pem", crl)
    assert response.status_int == 201
    assert response.headers["ETag"] == '"%s"' % hashlib.sha256(crl).hexdigest()
    assert app.get(base + "client.crl.pem").body == crl  # no key in it: answered whole


# --- GET never answers a private key but to the pair's peer ------------------------------

@pytest.fixture
def stored_key_pair(app, instance_id, cas):
    server, server_key = pki.make_leaf(cas["ca"], cas["key"], "www.example.com", server=True)
    body = key_pem(server_key) + cert_pem(server) + cert_pem(cas["ca"])
    url = "/instances/%s/certificates/www.example.com.pem" % instance_id
    assert app.put(url, body).status_int == 201
    return url, body


def peer_app(state_dir, cn, peers=PEER):
    import webtest
    from appliance_api.app import make_application

    config = make_config(state_dir, sync={"peer_client_names": peers})
    return webtest.TestApp(make_application(config),
                           extra_environ=dict(VERIFIED, SSL_CLIENT_S_DN_CN=cn))


def test_get_of_a_key_pair_answers_certificate_and_chain_only(app, stored_key_pair):
    url, body = stored_key_pair
    response = app.get(url)
    assert b"PRIVATE KEY" not in response.body
    assert response.body == body[body.index(b"-----BEGIN CERTIFICATE"):]
    assert response.body.count(b"BEGIN CERTIFICATE") == 2  # the leaf and its chain
    assert response.headers["ETag"] == '"%s"' % hashlib.sha256(body).hexdigest()
    assert response.headers["X-Private-Key"] == "withheld"


def test_only_a_peer_name_reads_the_key(state_dir, stored_key_pair):
    url, body = stored_key_pair
    assert peer_app(state_dir, PEER).get(url).body == body
    assert "X-Private-Key" not in peer_app(state_dir, PEER).get(url).headers
    # The controller, a name not listed, or a list naming someone else: no key.
    for cn, peers in (("controller", PEER), ("appliance-sync2", PEER), (PEER, "")):
        assert b"PRIVATE KEY" not in peer_app(state_dir, cn, peers).get(url).body


def test_a_peer_name_without_a_verified_certificate_reads_no_key(state_dir, stored_key_pair):
    import webtest
    from appliance_api.app import make_application

    url, _body = stored_key_pair
    config = make_config(state_dir, sync={"peer_client_names": PEER},
                         api={"require_client_certificate": "no"})
    unverified = webtest.TestApp(make_application(config),
                                 extra_environ={"SSL_CLIENT_VERIFY": "NONE",
                                                "SSL_CLIENT_S_DN_CN": PEER})
    assert b"PRIVATE KEY" not in unverified.get(url).body


# --- lighttpd's own judgement of a candidate API certificate (a real lighttpd -tt) -------

def test_lighttpd_tt_judges_a_candidate_certificate(cas):
    import shutil

    from appliance_api.system.lighttpd import refuses_certificate

    program = shutil.which("lighttpd") or "/usr/sbin/lighttpd"
    server, server_key = pki.make_leaf(cas["ca"], cas["key"], "127.0.0.1", server=True,
                                       sans=["127.0.0.1"])
    assert refuses_certificate(program, key_pem(server_key) + cert_pem(server)) is None
    refused = refuses_certificate(program, cert_pem(server))  # no key
    assert refused and "private key" in refused and "\n" not in refused
    mismatched = key_pem(cas["leaf_key"]) + cert_pem(server)
    assert "does not match" in refuses_certificate(program, mismatched)


@pytest.mark.parametrize("spoil", [
    lambda pem: b"\xef\xbb\xbf" + pem,                    # a byte-order mark first (Windows editors)
    lambda pem: pem.replace(b"\n", b"\r\n"),              # CRLF
    lambda pem: b"junk before " + pem,                    # text before the BEGIN line (older files)
    lambda pem: pem.replace(b"PRIVATE KEY", b"EC PRIVATE KEY"),
])
def test_a_get_by_a_controller_never_carries_the_key_however_it_is_spelt(spoil):
    from appliance_api.handlers.certificates import without_private_keys

    ca, ca_key = pki.make_ca("CA")
    leaf, leaf_key = pki.make_leaf(ca, ca_key, "www.example.com")
    stored = spoil(key_pem(leaf_key) + cert_pem(leaf) + cert_pem(ca))
    answer = without_private_keys(stored)
    assert b"PRIVATE KEY" not in answer
    body_line = key_pem(leaf_key).splitlines()[1]
    assert body_line not in answer
    assert answer == cert_pem(leaf) + cert_pem(ca)
