"""Routing and the one place errors become responses."""
import pytest

from conftest import VERIFIED, make_config

ID = "7e9f91eb-b3e6-4e3b-a1a7-d6f7fdc1de7c"


@pytest.mark.parametrize("method, path", [
    ("GET", "/"),
    ("GET", "/nope"),
    ("GET", "/status/"),
    ("GET", "/instances/"),
    ("GET", "/instances/" + ID.upper()),
    ("GET", "/instances/7e9f91eb"),
    ("GET", "/instances/" + ID + "/"),
    ("GET", "/instances/" + ID + "/nginx"),
    ("GET", "/instances/" + ID + "/certificates/.hidden.pem"),
    ("GET", "/instances/" + ID + "/certificates/www.example.com"),
    ("GET", "/instances/" + ID + "/certificates/a%2Fb.pem"),
    ("GET", "/instances/" + ID + "/certificates/a/b.pem"),
    ("GET", "/instances/" + ID + "/certificates/" + "a" * 252 + ".pem"),
    ("GET", "/instances/../etc/passwd"),
    ("POST", "/status"),
    ("PUT", "/status"),
    ("DELETE", "/instances"),
    ("POST", "/instances/" + ID),
    ("PATCH", "/instances/" + ID + "/haproxy"),
    ("OPTIONS", "/instances"),
])
def test_unknown_url_or_method_is_403_invalid_request(app, method, path):
    response = app.request(path, method=method, expect_errors=True)
    assert response.status_int == 403
    assert response.text == "Invalid Request\n"
    assert response.content_type == "text/plain"


def test_longest_allowed_certificate_name_routes(app):
    name = "a" * 251 + ".pem"
    assert len(name) == 255
    response = app.get("/instances/%s/certificates/%s" % (ID, name), expect_errors=True)
    assert response.status_int == 404


def test_head_behaves_as_get_without_body(app):
    response = app.head("/instances")
    assert response.status_int == 200
    assert response.body == b""


def test_request_without_verified_client_is_refused(config):
    import webtest
    from appliance_api.app import make_application

    app = webtest.TestApp(make_application(config))
    for environ in ({}, {"SSL_CLIENT_VERIFY": "NONE"},
                    {"SSL_CLIENT_VERIFY": "FAILED:certificate has expired"}):
        response = app.get("/instances", extra_environ=environ, expect_errors=True)
        assert response.status_int == 403
        assert response.text == "Client certificate required\n"


def test_client_name_allow_list(state_dir):
    import webtest
    from appliance_api.app import make_application

    config = make_config(state_dir, api={"allowed_client_names": "controller other"})
    app = webtest.TestApp(make_application(config))
    assert app.get("/instances", extra_environ=VERIFIED).status_int == 200
    stranger = dict(VERIFIED, SSL_CLIENT_S_DN_CN="intruder")
    response = app.get("/instances", extra_environ=stranger, expect_errors=True)
    assert response.status_int == 403
    assert response.text == "Client certificate not allowed\n"


def test_verification_can_be_turned_off_for_in_process_use(state_dir):
    import webtest
    from appliance_api.app import make_application

    config = make_config(state_dir, api={"require_client_certificate": "no"})
    assert webtest.TestApp(make_application(config)).get("/instances").status_int == 200


def test_missing_config_file_is_a_clear_500(tmp_path):
    import webtest
    from appliance_api.app import make_application

    app = webtest.TestApp(make_application())
    environ = dict(VERIFIED, APPLIANCE_API_CONFIG=str(tmp_path / "missing.ini"))
    response = app.get("/status", extra_environ=environ, expect_errors=True)
    assert response.status_int == 500
    assert response.text == ("Configuration file %s is not readable: No such file or directory\n"
                             % (tmp_path / "missing.ini"))


@pytest.mark.parametrize("text, reason", [
    ("[paths\n", "is invalid"),
    ("[nope]\n", "unknown section [nope]"),
    ("[api]\nmanagment_address = 1.2.3.4\n", "unknown key managment_address in [api]"),
    ("[daemons]\nstop_timeout = soon\n", "is invalid"),
    ("[network]\nmanage = perhaps\n", "is invalid"),
])
def test_bad_config_file_is_a_clear_500(tmp_path, text, reason):
    import webtest
    from appliance_api.app import make_application

    path = tmp_path / "bad.ini"
    path.write_text(text)
    environ = dict(VERIFIED, APPLIANCE_API_CONFIG=str(path))
    response = webtest.TestApp(make_application()).get("/instances", extra_environ=environ,
                                                        expect_errors=True)
    assert response.status_int == 500
    assert reason in response.text
    assert "Traceback" not in response.text


def test_unexpected_failure_is_500_with_one_line_and_traceback_in_log(app, monkeypatch):
    def broken(state_dir):
        raise PermissionError(13, "Permission denied", "/var/lib/appliance-api/instances")

    from appliance_api.handlers import instances

    monkeypatch.setattr(instances, "instance_ids", broken)
    response = app.get("/instances", expect_errors=True)
    assert response.status_int == 500
    assert response.text == "Internal error: Permission denied (/var/lib/appliance-api/instances)\n"
    assert "Traceback" in response.errors  # what went to wsgi.errors
    assert "Traceback" not in response.text


def test_oversized_body_is_413_before_reading(app, instance_id):
    response = app.put("/instances/%s/custom503" % instance_id, b"x" * 16385, expect_errors=True)
    assert response.status_int == 413
    assert response.text.startswith("Request Entity Too Large\n")


def test_every_route_handler_exists():
    import importlib

    from appliance_api.routes import ROUTES

    for method, pattern, handler in ROUTES:
        module, function = handler.split(":")
        assert callable(getattr(importlib.import_module("appliance_api.handlers." + module),
                                function)), handler


GOOD_INI = [
    "[paths]\nstate_dir = /var/lib/x\n",
    "# comment\n; another\n[API]\n\n[api]\nManagement_Address: 10.0.0.1\n",
    "[status]\nfencing_command = /bin/check --opt=a:b\nrole_file=\n",
    "[limits]\n  concurrent_changes = 8\n",
    "[status]\nnetwork_interfaces = eth0\n    eth1\n",
    # Indented keys are keys, not a continuation of the key above.
    "[api]\n    management_address = 10.0.0.5\n    allowed_client_names = controller-1\n",
    "[api]\n  management_address = 10.0.0.5\n      allowed_client_names = controller-1\n",
]
BAD_INI = ["key = value\n", "[paths\n", "[]\n", "[paths]\nstate_dir\n", "[paths]\n= x\n",
           "[paths]\n[paths]\n", "[paths]\nstate_dir = a\nSTATE_DIR = b\n"]


@pytest.mark.parametrize("text", GOOD_INI)
def test_the_ini_reader_reads_what_configparser_reads(text):
    """The API's own reader (no configparser at each request's start) against
    the standard library's, interpolation off, on what an operator writes."""
    import configparser

    from appliance_api.config import read_ini

    reference = configparser.ConfigParser(interpolation=None)
    reference.read_string(text)
    assert read_ini(text) == {name: dict(reference[name]) for name in reference.sections()}


@pytest.mark.parametrize("text", BAD_INI)
def test_the_ini_reader_refuses_what_configparser_refuses(text):
    import configparser

    from appliance_api.config import read_ini

    with pytest.raises(configparser.Error):
        configparser.ConfigParser(interpolation=None).read_string(text)
    with pytest.raises(ValueError, match="line "):
        read_ini(text)


@pytest.mark.parametrize("name", [
    "7e9f91eb-b3e6-4e3b-a1a7-d6f7fdc1de7c", "7E9F91EB-B3E6-4E3B-A1A7-D6F7FDC1DE7C",
    "7e9f91eb-b3e6-4e3b-a1a7-d6f7fdc1de7", "7e9f91eb-b3e6-4e3b-a1a7-d6f7fdc1de7cc",
    "7e9f91ebb-3e6-4e3b-a1a7-d6f7fdc1de7c", "7e9f91eb-b3e6-4e3b-a1a7-d6f7fdc1de-c",
    "7e9f91eb-b3e6-4e3b-a1a7-d6f7fdc1de7g", "7e9f91eb-b3e6-4e3b-a1a7 d6f7fdc1de7c", "",
    "7e9f91eb\u2010b3e6-4e3b-a1a7-d6f7fdc1de7c",
])
def test_is_instance_id_is_the_routes_pattern(name):
    import re

    from appliance_api.layout import INSTANCE_ID, is_instance_id

    assert is_instance_id(name) == bool(re.fullmatch(INSTANCE_ID, name))


SAMPLE_VALUES = {"{instance}": ID, "{filename}": "www.example.com.pem", "{service}": "stunnel",
                 "{crtlist}": "listener-1.crtlist"}


def near_misses(path):
    """path, and every path one character away from it: dropped, replaced, or added."""
    yield path
    for position in range(len(path) + 1):
        yield path[:position] + path[position + 1:]
        for char in "a/.-_Z0g\n%\xe9":
            yield path[:position] + char + path[position + 1:]
            yield path[:position] + char + path[position:]


@pytest.mark.parametrize("pattern", sorted({pattern for _m, pattern, _h in __import__(
    "appliance_api.routes", fromlist=["ROUTES"]).ROUTES}))
def test_plain_matching_answers_as_the_rows_regular_expression(pattern):
    """The router's matcher without `re` agrees with each row's regex on every
    path one character away from one that matches, and on the other rows' paths."""
    import re

    from appliance_api.routes import ROUTES, compile_pattern, match

    regex = re.compile(compile_pattern(pattern))
    paths = set()
    for _method, other, _handler in ROUTES:
        for placeholder, value in SAMPLE_VALUES.items():
            other = other.replace(placeholder, value)
        paths.update(near_misses(other))
    paths.update(["", "/", "//", "/instances/" + ID + "/certificates/" + "a" * 251 + ".pem",
                  "/instances/" + ID + "/certificates/" + "a" * 252 + ".pem",
                  "/instances/" + ID + "/certificates/.pem", "/instances/" + ID + "/certificates/a.pem",
                  "/instances/" + ID + "/certificates/-.pem", "/instances/" + ID + "/certificates/a.PEM",
                  "/instances/" + ID + "/crt-lists/" + "a" * 255,
                  "/instances/" + ID + "/crt-lists/" + "a" * 256, "/instances/" + ID + "/crt-lists/.a",
                  "/instances/" + ID + "/crt-lists/a/b", "/instances/" + ID + "/crt-lists/"])
    matched = 0
    for path in paths:
        found = regex.match(path)
        assert match(pattern, path) == (found.groupdict() if found else None), path
        matched += found is not None
    assert matched > 0  # the sample values do reach the row


def test_a_pattern_with_other_regular_expressions_is_matched_by_re():
    from appliance_api.routes import match

    assert match("/instances/{instance}/logs/(?P<day>[0-9]{8})", "/instances/%s/logs/20261128"
                 % ID) == {"instance": ID, "day": "20261128"}
    assert match("/instances/{instance}/logs/(?P<day>[0-9]{8})", "/instances/%s/logs/2026"
                 % ID) is None
    assert match("/status|/health", "/health") == {}
    assert match("/status|/health", "/statusx") is None  # anchored: every alternative


@pytest.mark.parametrize("name", [
    "a.pem", ".pem", "x.pem", ".a.pem", "a" * 251 + ".pem", "a" * 252 + ".pem", "a.PEM",
    "a.pem.pem", "a..pem", "-.pem", "_x_.pem", "a b.pem", "a/b.pem", "a.pem\n", "\xe9.pem",
    "A-Z.0-9.pem", "a.pe", "pem", "", "a.pemx", "a\x00.pem"])
def test_is_certificate_name_is_the_routes_pattern(name):
    import re

    from appliance_api.layout import CERTIFICATE_NAME, is_certificate_name

    assert is_certificate_name(name) == bool(re.fullmatch(CERTIFICATE_NAME, name))
