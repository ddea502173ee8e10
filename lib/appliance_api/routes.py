"""Every URL of the API, in one list of (method, pattern, handler).

Patterns are anchored regular expressions; {instance} and {filename} stand for
the contract's names. A handler is "module:function" under appliance_api.handlers,
imported only when its route matches, so each endpoint pays only for what it uses.
Anything that matches no row is 403 Invalid Request.
"""
from .layout import CERTIFICATE_NAME, INSTANCE_ID

ROUTES = [
    ("GET",    "/status",                                      "status:get_status"),
    ("GET",    "/service_status",                              "status:get_service_status"),
    ("GET",    "/topology",                                    "topology:get_topology"),
    ("POST",   "/topology",                                    "topology:post_topology"),
    ("GET",    "/manifest",                                    "manifest:get_manifest"),
    ("GET",    "/listeners",                                   "listeners:list_listeners"),
    ("GET",    "/listeners/{instance}",                        "listeners:get_listener"),
    ("GET",    "/instances",                                   "instances:list_instances"),
    ("GET",    "/instances/{instance}",                        "instances:check_instance"),
    ("DELETE", "/instances/{instance}",                        "instances:delete_instance"),
    ("PUT",    "/instances/{instance}/certificates/{filename}", "certificates:put_certificate"),
    ("GET",    "/instances/{instance}/certificates/{filename}", "certificates:get_certificate"),
    ("DELETE", "/instances/{instance}/certificates/{filename}", "certificates:delete_certificate"),
    ("PUT",    "/instances/{instance}/{service}",              "configs:put_config"),
    ("GET",    "/instances/{instance}/{service}",              "configs:get_config"),
    ("DELETE", "/instances/{instance}/{service}",              "configs:delete_config"),
    ("PUT",    "/instances/{instance}/custom503",              "custom503:put_custom503"),
    ("GET",    "/instances/{instance}/custom503",              "custom503:get_custom503"),
    ("DELETE", "/instances/{instance}/custom503",              "custom503:delete_custom503"),
]

PLACEHOLDERS = {
    "{instance}": "(?P<instance>%s)" % INSTANCE_ID,
    "{filename}": "(?P<filename>%s)" % CERTIFICATE_NAME,
    "{service}": "(?P<service>haproxy|stunnel)",
}


def compile_pattern(pattern):
    for placeholder, regex in PLACEHOLDERS.items():
        pattern = pattern.replace(placeholder, regex)
    return pattern + r"\Z"
