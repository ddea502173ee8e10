"""crt-lists, in process: the line reader (crtlist.py) judged line by line as
haproxy 2.6 reads one, and /instances/:instance/crt-lists/:name's rules: the
upload answered back as written, its {INSTANCE_DIR} filled in on disk,
404s, 413, and what may not be deleted while something reads it."""
import hashlib
import os

import pytest
from cryptography.hazmat.primitives import serialization

import pki  # tools/pki.py (conftest puts tools/ on sys.path)
from appliance_api import crtlist, manifest
from appliance_api.errors import Conflict
from appliance_api.layout import Instance
from test_write_endpoints import certificate_bundle

P = crtlist.PLACEHOLDER  # {INSTANCE_DIR}/certificates/
STORED = {"www.example.com.pem": "key", "api.example.com.pem": "key", "ca.pem": "ca",
          "client.crl.pem": "crl"}


def judge(line):
    return crtlist.parse_line(line, STORED.get)


@pytest.mark.parametrize("line, certificate, options, filters", [
    (P + "www.example.com.pem", "www.example.com.pem", [], []),
    ("  %swww.example.com.pem\t\r" % P, "www.example.com.pem", [], []),
    (P + "www.example.com.pem !*", "www.example.com.pem", [], ["!*"]),
    (P + "www.example.com.pem [alpn h2,http/1.1] www.example.com",
     "www.example.com.pem", ["alpn", "h2,http/1.1"], ["www.example.com"]),
    (P + "www.example.com.pem *.example.com !secure.example.com", "www.example.com.pem", [],
     ["*.example.com", "!secure.example.com"]),
    # haproxy splits at [ and ] wherever they stand.
    (P + "www.example.com.pem[verify required ca-file %sca.pem crl-file %sclient.crl.pem]a.b"
     % (P, P), "www.example.com.pem",
     ["verify", "required", "ca-file", P + "ca.pem", "crl-file", P + "client.crl.pem"], ["a.b"]),
    (P + "api.example.com.pem [curves X25519:P-256 ciphers ECDHE-ECDSA-AES256-GCM-SHA384 "
     "ciphersuites TLS_AES_128_GCM_SHA256 ecdhe prime256v1 ssl-min-ver TLSv1.2 "
     "ssl-max-ver TLSv1.3 no-ca-names allow-0rtt npn http/1.1] api.example.com",
     "api.example.com.pem", ["curves", "X25519:P-256", "ciphers",
                             "ECDHE-ECDSA-AES256-GCM-SHA384", "ciphersuites",
                             "TLS_AES_128_GCM_SHA256", "ecdhe", "prime256v1", "ssl-min-ver",
                             "TLSv1.2", "ssl-max-ver", "TLSv1.3", "no-ca-names", "allow-0rtt",
                             "npn", "http/1.1"], ["api.example.com"]),
    (P + "www.example.com.pem [] x.example.com", "www.example.com.pem", [], ["x.example.com"]),
])
def test_good_lines_are_read_as_haproxy_reads_them(line, certificate, options, filters):
    entry, _files = judge(line)
    assert (entry.certificate, entry.options, entry.filters) == (certificate, options, filters)


def test_a_line_names_every_file_it_reads():
    _entry, files = judge(P + "www.example.com.pem [ca-file %sca.pem crl-file %sclient.crl.pem]"
                          % (P, P))
    assert files == ["www.example.com.pem", "ca.pem", "client.crl.pem"]


@pytest.mark.parametrize("line, why", [
    # Files: only the instance's own stored ones, named as the API stores them.
    ("/etc/ssl/private/www.example.com.pem", "must be named {INSTANCE_DIR}/certificates/"),
    ("{INSTANCE_DIR}/certificates/../haproxy.cfg", "must be named"),
    ("{INSTANCE_DIR}/custom503.http", "must be named"),
    ("{INSTANCE_DIR}/certificates/sub/x.pem", "must be named"),
    ("{INSTANCE_DIR}/certificates/www.example.com", "must be named"),  # not .pem
    ("certificates/www.example.com.pem", "must be named"),
    (P + "missing.pem", "is not a stored key and certificate file of this instance"),
    (P + "ca.pem", "is not a stored key and certificate file"),  # a CA file is no certificate
    (P + "www.example.com.pem [ca-file /etc/ssl/certs/ca-certificates.crt]", "must be named"),
    (P + "www.example.com.pem [ca-file %smissing.pem]" % P, "is not a CA file stored"),
    (P + "www.example.com.pem [crl-file %sca.pem]" % P, "is not a CRL stored"),
    (P + "www.example.com.pem [ca-file %swww.example.com.pem]" % P, "is not a CA file"),
    (P + "www.example.com.pem [ca-file]", "ca-file needs a file"),
    # Options: the allowed list only, each value of its shape.
    (P + "www.example.com.pem [crt %sapi.example.com.pem]" % P, "crt: not an option"),
    (P + "www.example.com.pem [ocsp-update on]", "ocsp-update: not an option"),
    (P + "www.example.com.pem [verify maybe]", "verify needs none, optional or required"),
    (P + "www.example.com.pem [alpn]", "alpn needs protocol names"),
    (P + "www.example.com.pem [alpn /etc/passwd]", "alpn needs protocol names"),
    (P + "www.example.com.pem [ssl-min-ver TLSv9]", "ssl-min-ver needs"),
    # haproxy reads words as written: no quotes, escapes or variables to hide a path in.
    ('"%swww.example.com.pem"' % P, "quotes, escapes and variables"),
    (P + "${NAME}.pem", "quotes, escapes and variables"),
    ("${INSTANCE_DIR}/certificates/www.example.com.pem", "quotes, escapes and variables"),
    (P + "www\\x2e.pem", "quotes, escapes and variables"),
    (P + "www.example.com.pem [ciphers 'ALL']", "quotes, escapes and variables"),
    # Brackets as haproxy 2.6 refuses them, and filters where it would misread them.
    (P + "www.example.com.pem [alpn h2", "'[' without ']'"),
    (P + "www.example.com.pem alpn h2]", "']' without '['"),
    (P + "www.example.com.pem [alpn h2] [npn h2]", "more than one '['"),
    ("[alpn h2] " + P + "www.example.com.pem", "starts with its certificate"),
    (P + "www.example.com.pem a.example.com [alpn h2]", "SNI filters before the options"),
    # SNI filters: host names, wildcards, negations; a # in a line is no comment.
    (P + "www.example.com.pem # a comment", "# is not an SNI filter"),
    (P + "www.example.com.pem *", "* is not an SNI filter"),
    (P + "www.example.com.pem a.*.example.com", "is not an SNI filter"),
    (P + "www.example.com.pem -bad-.example.com", "is not an SNI filter"),
    # Garbage.
    ("\x00" + P + "www.example.com.pem", "a crt-list is plain ASCII text"),
    (P + "www.example.com.pem\x0bx", "a crt-list is plain ASCII text"),
    ("hello world", "must be named"),
    (P + "www.example.com.pem " + "a " * 300, "more than 256 words"),
    (P + "www.example.com.pem " + "a" * 5000, "longer than 4096 characters"),
])
def test_each_refusal_says_why(line, why):
    with pytest.raises(ValueError) as refused:
        judge(line)
    assert why in str(refused.value), str(refused.value)


def test_a_file_is_read_line_by_line_and_each_bad_line_named():
    good = ("# a comment\n\n  \t\n%swww.example.com.pem !*\r\n"
            "%sapi.example.com.pem api.example.com\n" % (P, P)).encode()
    assert crtlist.check(good, STORED.get) == ["www.example.com.pem", "api.example.com.pem"]
    with pytest.raises(Conflict) as refused:
        crtlist.check(good + b"%sother.pem\n%swww.example.com.pem [foo]\n"
                      % (P.encode(), P.encode()), STORED.get)
    assert refused.value.reason == "Invalid crt-list"
    assert refused.value.detail.splitlines() == [
        "line 6: %sother.pem: %sother.pem is not a stored key and certificate file of this "
        "instance" % (P, P),
        "line 7: %swww.example.com.pem [foo]: foo: not an option a crt-list may set here "
        "(allowed: allow-0rtt, alpn, ca-file, ca-verify-file, ciphers, ciphersuites, crl-file, "
        "curves, ecdhe, no-ca-names, npn, ssl-max-ver, ssl-min-ver, verify)" % P]
    for body, why in ((b"\xc3\xa9\n", "not ASCII text"), (b"# \x00\n", "line 1: a NUL"),
                      # haproxy skips only a line whose first byte is #: this one is an
                      # entry to it, and its options (a file to open) would be read.
                      (b"   #x [ca-file /etc/shadow]\n", "line 1:"),
                      (b"\t# a comment?\n", "a comment must start the line"),
                      (b"#" + b"c" * 70000 + b"\n", "longer than 4096")):
        with pytest.raises(Conflict) as refused:
            crtlist.check(body, STORED.get)
        assert why in refused.value.detail


def test_rendering_fills_in_entry_lines_only_and_comes_back_exactly():
    folder = "/srv/state/instances/11111111-1111-4111-8111-111111111111"
    upload = ("# keep {INSTANCE_DIR}/certificates/ as written here\n"
              "%swww.example.com.pem [ca-file %sca.pem] www.example.com\n" % (P, P)).encode()
    stored = crtlist.render(upload, folder)
    assert stored.splitlines()[1] == (
        "%s/certificates/www.example.com.pem [ca-file %s/certificates/ca.pem] www.example.com"
        % (folder, folder)).encode()
    assert stored.splitlines()[0] == upload.splitlines()[0]
    assert crtlist.unrender(stored, folder) == upload
    assert crtlist.named_files(stored) == {"www.example.com.pem", "ca.pem"}


# --- the endpoints ------------------------------------------------------------------------

def stored_certificate(app, instance_id, common_name="www.example.com"):
    app.put("/instances/%s/certificates/%s.pem" % (instance_id, common_name),
            certificate_bundle(common_name))


def test_put_get_delete(app, state_dir, instance_id):
    stored_certificate(app, instance_id)
    url = "/instances/%s/crt-lists/listener-1" % instance_id
    body = ("%swww.example.com.pem [alpn h2,http/1.1] www.example.com\n" % P).encode()
    etag = '"%s"' % hashlib.sha256(body).hexdigest()
    response = app.put(url, body)
    assert (response.status_int, response.text, response.headers["ETag"]) == (201, "OK\n", etag)
    instance = Instance(state_dir, instance_id)
    path = instance.crt_list("listener-1")
    with open(path, "rb") as file:
        assert file.read() == crtlist.render(body, instance.dir)
    assert os.stat(path).st_mode & 0o777 == 0o644  # no key in it
    response = app.get(url)
    assert (response.body, response.headers["ETag"]) == (body, etag)
    # The manifest hashes what GET answers, so that a standby's copy matches.
    assert manifest.instance_files(instance)["crt-lists"] == {"listener-1": etag.strip('"')}
    assert app.delete(url).text == "OK\n"
    assert app.get(url, expect_errors=True).status_int == 404
    assert not os.path.exists(instance.crt_lists_dir)


def test_a_refused_crt_list_stores_nothing(app, state_dir, instance_id):
    url = "/instances/%s/crt-lists/x" % instance_id
    response = app.put(url, ("%swww.example.com.pem\n" % P).encode(), expect_errors=True)
    assert response.status_int == 409
    assert response.text.startswith("Invalid crt-list\nline 1: ")
    assert not os.path.exists(Instance(state_dir, instance_id).dir)  # no instance made
    stored_certificate(app, instance_id)
    good = ("%swww.example.com.pem\n" % P).encode()
    app.put(url, good)
    response = app.put(url, b"/etc/shadow\n", expect_errors=True)
    assert response.status_int == 409
    assert app.get(url).body == good


def test_404s_and_unroutable_names(app, instance_id):
    for method in ("get", "delete"):
        response = getattr(app, method)("/instances/%s/crt-lists/none" % instance_id,
                                        expect_errors=True)
        assert response.status_int == 404
    for name in (".hidden", "a/b", "%2e%2e", "a" * 256):
        response = app.get("/instances/%s/crt-lists/%s" % (instance_id, name),
                           expect_errors=True)
        assert response.status_int in (403, 404) and response.text.startswith(
            ("Invalid Request", "Not Found")), (name, response.text)
        if name != "a/b":
            assert response.status_int == 403


def test_over_the_limit_is_413(app, instance_id, state_dir):
    stored_certificate(app, instance_id)
    url = "/instances/%s/crt-lists/big" % instance_id
    line = ("%swww.example.com.pem\n" % P).encode()
    response = app.put(url, line * (65536 // len(line) + 1), expect_errors=True)
    assert response.status_int == 413
    assert app.put(url, line * (65536 // len(line))).status_int == 201


def test_in_use_cannot_be_deleted_nor_the_certificates_it_names(app, state_dir, instance_id):
    stored_certificate(app, instance_id)
    base = "/instances/%s" % instance_id
    app.put(base + "/crt-lists/listener", ("%swww.example.com.pem\n" % P).encode())
    response = app.delete(base + "/certificates/www.example.com.pem", expect_errors=True)
    assert (response.status_int, response.text) == (
        409, "Certificate is in use by the crt-list listener\n")
    instance = Instance(state_dir, instance_id)
    # The config's file, as PUT haproxy would leave it (no daemon needed to name a file).
    for path in (instance.template("haproxy"), instance.rendered("haproxy")):
        with open(path, "w") as file:
            file.write("frontend f\n    bind :443 ssl crt-list %s\n"
                       % os.path.abspath(instance.crt_list("listener")))
    response = app.delete(base + "/crt-lists/listener", expect_errors=True)
    assert (response.status_int, response.text) == (
        409, "crt-list is in use by the haproxy configuration\n")
    assert os.path.exists(instance.crt_list("listener"))


def test_deleting_the_instance_removes_its_crt_lists(app, state_dir, instance_id):
    stored_certificate(app, instance_id)
    app.put("/instances/%s/crt-lists/listener" % instance_id,
            ("%swww.example.com.pem\n" % P).encode())
    assert app.delete("/instances/%s" % instance_id).status_int == 200
    assert not os.path.exists(Instance(state_dir, instance_id).dir)


def test_a_file_a_crt_list_names_cannot_become_another_kind(app, state_dir, instance_id):
    """A CA file PUT where a crt-list's key and certificate is: 409, the
    file unchanged (haproxy could no longer load the list)."""
    stored_certificate(app, instance_id)
    url = "/instances/%s/crt-lists/sites" % instance_id
    assert app.put(url, ("%swww.example.com.pem\n" % P).encode()).status_int == 201
    path = os.path.join(state_dir, "instances", instance_id, "certificates",
                        "www.example.com.pem")
    with open(path, "rb") as file:
        before = file.read()
    reply = app.put("/instances/%s/certificates/www.example.com.pem" % instance_id,
                    pki.make_ca("tenant CA")[0].public_bytes(serialization.Encoding.PEM),
                    expect_errors=True)
    assert reply.status_int == 409, reply
    assert "in use by the crt-list sites" in reply.text
    with open(path, "rb") as file:
        assert file.read() == before  # still the key and certificate
