"""Client-certificate authentication on a tenant's listener, end to end: a
CA file and a CRL stored through the certificate URL, named by a real
haproxy (`verify required ca-file ... crl-file ...`) and a real stunnel
(CAfile, CRLfile). A new CRL that revokes a client shuts it out from the
next connection on, and haproxy takes it without a reload (the same master
and worker); a CA file or CRL a config names cannot be deleted."""
import ssl
import types

import pytest
from cryptography.hazmat.primitives import serialization

from .conftest import pki_tool
from .helpers import eventually, free_port, haproxy_template, http_get
from .test_certificates import haproxy_processes, listener_certificate

def pem(cert):
    return cert.public_bytes(serialization.Encoding.PEM)


crl_of = pki_tool.make_crl


@pytest.fixture(scope="module")
def tenant_pki(tmp_path_factory):
    """The tenant's server CA (for its listener's certificate), its client CA
    with two clients, a second client CA (a rollover) with one."""
    folder = tmp_path_factory.mktemp("tenant-pki")
    server_ca = pki_tool.make_ca("tenant server CA")
    client_ca = pki_tool.make_ca("tenant client CA")
    next_ca = pki_tool.make_ca("tenant next client CA")

    def client(ca, name):
        cert, key = pki_tool.make_leaf(ca[0], ca[1], name, client=True)
        path = str(folder / (name + ".pem"))
        pki_tool.write_private(path, pki_tool.pem_bundle(cert, key))
        return types.SimpleNamespace(cert=cert, path=path)

    context_ca = str(folder / "server-ca.pem")
    with open(context_ca, "wb") as file:
        file.write(pem(server_ca[0]))
    return types.SimpleNamespace(
        server_ca=server_ca, server_ca_file=context_ca, client_ca=client_ca, next_ca=next_ca,
        alice=client(client_ca, "alice"), bob=client(client_ca, "bob"),
        carol=client(next_ca, "carol"))


def gets_in(port, tenant_pki, client):
    """Whether a new TLS connection with client's certificate (None: none) is answered 200."""
    context = ssl.create_default_context(cafile=tenant_pki.server_ca_file)
    if client is not None:
        context.load_cert_chain(client.path)
    try:
        status, _headers, _body = http_get(port, host="localhost", context=context)
    except (ssl.SSLError, OSError):
        return False
    return status == 200


def store_tls_files(api, instance_id, tenant_pki):
    """localhost.pem (the listener's), client-ca.pem and client.crl.pem (revoking nobody)."""
    base = "/instances/%s/certificates/" % instance_id
    listener, _der = listener_certificate(tenant_pki.server_ca)
    for name, body in (("localhost.pem", listener),
                       ("client-ca.pem", pem(tenant_pki.client_ca[0])),
                       ("client.crl.pem", crl_of(*tenant_pki.client_ca))):
        reply = api.put(base + name, body)
        assert reply.status == 201, reply
    return base


@pytest.fixture
def mutual_tls_haproxy(api, backend, instance_id, tenant_pki):
    base = store_tls_files(api, instance_id, tenant_pki)
    port = free_port()
    template = haproxy_template(port, backend.port).replace(
        "bind {MYIP}:%d\n" % port,
        "bind {MYIP}:%d ssl crt {INSTANCE_DIR}/certificates/localhost.pem verify required "
        "ca-file {INSTANCE_DIR}/certificates/client-ca.pem "
        "crl-file {INSTANCE_DIR}/certificates/client.crl.pem\n" % port)
    reply = api.put("/instances/%s/haproxy" % instance_id, template)
    assert reply.status == 201, reply
    return types.SimpleNamespace(base=base, port=port, instance=instance_id)


def test_a_client_of_the_stored_ca_gets_in_and_others_do_not(mutual_tls_haproxy, tenant_pki):
    port = mutual_tls_haproxy.port
    assert gets_in(port, tenant_pki, tenant_pki.alice)
    assert not gets_in(port, tenant_pki, None)
    assert not gets_in(port, tenant_pki, tenant_pki.carol)  # another CA's client


def test_a_new_crl_shuts_a_client_out_from_the_next_connection_without_a_reload(
        api, mutual_tls_haproxy, tenant_pki):
    port, instance = mutual_tls_haproxy.port, mutual_tls_haproxy.instance
    before = haproxy_processes(api, instance)
    reply = api.put(mutual_tls_haproxy.base + "client.crl.pem",
                    crl_of(*tenant_pki.client_ca, revoked=[tenant_pki.alice.cert]))
    assert reply.status == 201, reply
    assert reply.lines == ["OK", "haproxy daemon for %s took client.crl.pem without a reload "
                                 "(pid %d)" % (instance, before[0])]
    # The very next connection: the commit has answered before the PUT does.
    assert not gets_in(port, tenant_pki, tenant_pki.alice)
    assert gets_in(port, tenant_pki, tenant_pki.bob)
    assert haproxy_processes(api, instance) == before  # the same master and worker
    # Taken back: alice is let in again, still without a reload.
    assert api.put(mutual_tls_haproxy.base + "client.crl.pem",
                   crl_of(*tenant_pki.client_ca)).status == 201
    assert gets_in(port, tenant_pki, tenant_pki.alice)
    assert haproxy_processes(api, instance) == before


def test_a_ca_file_rolled_over_to_two_cas_lets_clients_of_both_in(
        api, mutual_tls_haproxy, tenant_pki):
    port, instance = mutual_tls_haproxy.port, mutual_tls_haproxy.instance
    before = haproxy_processes(api, instance)
    reply = api.put(mutual_tls_haproxy.base + "client-ca.pem",
                    pem(tenant_pki.client_ca[0]) + pem(tenant_pki.next_ca[0]))
    assert reply.status == 201, reply
    assert "took client-ca.pem without a reload" in reply.lines[1]
    # With crl-file, OpenSSL wants a CRL from every CA: none yet from the new one.
    assert not gets_in(port, tenant_pki, tenant_pki.carol)
    reply = api.put(mutual_tls_haproxy.base + "client.crl.pem",
                    crl_of(*tenant_pki.client_ca) + crl_of(*tenant_pki.next_ca))
    assert reply.status == 201, reply
    assert gets_in(port, tenant_pki, tenant_pki.carol)
    assert gets_in(port, tenant_pki, tenant_pki.alice)
    assert haproxy_processes(api, instance) == before


def test_a_crl_from_another_ca_and_a_leaf_posing_as_a_ca_change_nothing(
        api, mutual_tls_haproxy, tenant_pki):
    base, instance = mutual_tls_haproxy.base, mutual_tls_haproxy.instance
    before = haproxy_processes(api, instance)
    stored = {name: api.get(base + name).body for name in ("client-ca.pem", "client.crl.pem")}
    reply = api.put(base + "client.crl.pem", crl_of(*tenant_pki.next_ca))
    assert reply.status == 409 and reply.body.startswith(
        "CRL 1 was not signed by a CA certificate of this instance's CA files"), reply
    reply = api.put(base + "client-ca.pem", pem(tenant_pki.alice.cert))
    assert reply.status == 409 and "is not a CA certificate" in reply.body, reply
    assert {name: api.get(base + name).body for name in stored} == stored
    assert haproxy_processes(api, instance) == before
    assert gets_in(mutual_tls_haproxy.port, tenant_pki, tenant_pki.alice)


def test_a_ca_file_or_crl_a_config_names_cannot_be_deleted(api, mutual_tls_haproxy):
    for name in ("client-ca.pem", "client.crl.pem"):
        reply = api.delete(mutual_tls_haproxy.base + name)
        assert (reply.status, reply.body) == (
            409, "Certificate is in use by the haproxy configuration\n"), reply
        assert api.get(mutual_tls_haproxy.base + name).status == 200


def test_stunnel_verifies_clients_with_the_stored_ca_file_and_crl(
        api, backend, instance_id, tenant_pki):
    base = store_tls_files(api, instance_id, tenant_pki)
    port = free_port()
    template = ("[tls]\naccept = {MYIP}:%d\nconnect = 127.0.0.1:%d\n"
                "cert = {INSTANCE_DIR}/certificates/localhost.pem\n"
                "verifyChain = yes\nCAfile = {INSTANCE_DIR}/certificates/client-ca.pem\n"
                "CRLfile = {INSTANCE_DIR}/certificates/client.crl.pem\n" % (port, backend.port))
    reply = api.put("/instances/%s/stunnel" % instance_id, template)
    assert reply.status == 201, reply
    assert gets_in(port, tenant_pki, tenant_pki.alice)
    assert not gets_in(port, tenant_pki, None)
    reply = api.put(base + "client.crl.pem",
                    crl_of(*tenant_pki.client_ca, revoked=[tenant_pki.alice.cert]))
    assert reply.status == 201, reply
    # stunnel re-reads its files on the reload the PUT ran: the next connection.
    assert eventually(lambda: not gets_in(port, tenant_pki, tenant_pki.alice), 5)
    assert gets_in(port, tenant_pki, tenant_pki.bob)
    reply = api.delete(base + "client-ca.pem")
    assert (reply.status, reply.body) == (409, "Certificate is in use by the stunnel "
                                               "configuration\n")


def test_octctl_show_lists_the_ca_file_and_the_crl_with_their_expiry(api, mutual_tls_haproxy):
    import json

    from .test_octctl import octctl

    instance = mutual_tls_haproxy.instance
    report = json.loads(octctl(api, "show", instance, "--json").stdout)
    found = {entry["name"]: entry for entry in report["certificates"]}
    assert (found["client-ca.pem"]["kind"], found["client-ca.pem"]["cn"]) == (
        "CA file", "tenant client CA")
    assert 800 <= found["client-ca.pem"]["days_left"] <= 825  # tools/pki.py's CAs
    assert (found["client.crl.pem"]["kind"], found["client.crl.pem"]["days_left"]) == ("CRL", 6)
    assert found["localhost.pem"]["kind"] == "key and certificate"
    text = octctl(api, "show", instance).stdout
    assert "  client.crl.pem  CRL, 1, issuer CN=tenant client CA  next update %s (6 days left)" \
        % found["client.crl.pem"]["expires"] in text
    assert "  client-ca.pem  CA file of 1, first CN=tenant client CA  expires %s" \
        % found["client-ca.pem"]["expires"] in text
