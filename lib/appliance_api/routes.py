"""Every URL of the API, in one list of (method, pattern, handler).

Patterns are anchored regular expressions; {instance}, {filename},
{crtlist} and {service} stand for the contract's names. A handler is "module:function"
under appliance_api.handlers, imported only when its route matches, so each
endpoint pays only for what it uses. Anything that matches no row is 403
Invalid Request.
"""
from .layout import (CERTIFICATE_NAME, CRT_LIST_NAME, INSTANCE_ID, SERVICES,
                     is_certificate_name, is_crt_list_name, is_instance_id)

ROUTES = [
    ("GET",    "/status",                                      "status:get_status"),
    ("GET",    "/service_status",                              "status:get_service_status"),
    ("PUT",    "/certificate",                                 "api_certificate:put_api_certificate"),
    ("GET",    "/topology",                                    "topology:get_topology"),
    ("POST",   "/topology",                                    "topology:post_topology"),
    ("GET",    "/manifest",                                    "manifest:get_manifest"),
    ("GET",    "/metrics",                                     "stats:get_metrics"),
    ("GET",    "/listeners",                                   "listeners:list_listeners"),
    ("GET",    "/listeners/{instance}",                        "listeners:get_listener"),
    ("GET",    "/instances",                                   "instances:list_instances"),
    ("GET",    "/instances/{instance}",                        "instances:check_instance"),
    ("GET",    "/instances/{instance}/stats",                  "stats:get_instance_stats"),
    ("DELETE", "/instances/{instance}",                        "instances:delete_instance"),
    ("PUT",    "/instances/{instance}/certificates/{filename}", "certificates:put_certificate"),
    ("GET",    "/instances/{instance}/certificates/{filename}", "certificates:get_certificate"),
    ("DELETE", "/instances/{instance}/certificates/{filename}", "certificates:delete_certificate"),
    ("PUT",    "/instances/{instance}/crt-lists/{crtlist}",    "crt_lists:put_crt_list"),
    ("GET",    "/instances/{instance}/crt-lists/{crtlist}",    "crt_lists:get_crt_list"),
    ("DELETE", "/instances/{instance}/crt-lists/{crtlist}",    "crt_lists:delete_crt_list"),
    ("PUT",    "/instances/{instance}/{service}",              "configs:put_config"),
    ("GET",    "/instances/{instance}/{service}",              "configs:get_config"),
    ("DELETE", "/instances/{instance}/{service}",              "configs:delete_config"),
    ("PUT",    "/instances/{instance}/custom503",              "custom503:put_custom503"),
    ("GET",    "/instances/{instance}/custom503",              "custom503:get_custom503"),
    ("DELETE", "/instances/{instance}/custom503",              "custom503:delete_custom503"),
]

# Each placeholder's regular expression, and the same test in plain Python.
# A pattern made only of plain text and whole-segment placeholders is matched
# segment by segment with the plain tests, and a request then never imports
# `re` (5 ms, half a null CGI's start-up). Any other regular expression in a
# pattern is matched by `re`. tests/unit/test_routing.py and the hostile-input
# proof check that both ways answer alike for every row.
PLACEHOLDERS = {
    "{instance}": (INSTANCE_ID, is_instance_id),
    "{filename}": (CERTIFICATE_NAME, is_certificate_name),
    "{crtlist}": (CRT_LIST_NAME, is_crt_list_name),
    "{service}": ("|".join(SERVICES), SERVICES.__contains__),
}
_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_-")  # no regex meaning outside []


def match(pattern, path):
    """The URL parameters ({name: value}) if path matches pattern, else None."""
    parts = pattern.split("/")
    if not all(part in PLACEHOLDERS or _PLAIN.issuperset(part) for part in parts):
        import re

        found = re.match(compile_pattern(pattern), path)
        return found.groupdict() if found else None
    values = path.split("/")
    if len(values) != len(parts):
        return None
    params = {}
    for part, value in zip(parts, values):
        placeholder = PLACEHOLDERS.get(part)
        if placeholder is None:
            if value != part:
                return None
        elif placeholder[1](value):
            params[part[1:-1]] = value
        else:
            return None
    return params


def compile_pattern(pattern):
    """The pattern as one regular expression, anchored at both ends."""
    for placeholder, (regex, _plain_test) in PLACEHOLDERS.items():
        pattern = pattern.replace(placeholder, "(?P<%s>%s)" % (placeholder[1:-1], regex))
    return r"(?:%s)\Z" % pattern
