"""config.py: the one config file, read by the API's own small INI reader."""
import pytest

from appliance_api import config
from appliance_api.errors import ServerError


def test_a_missing_key_takes_its_default_and_values_are_typed():
    loaded = config.parse("[daemons]\nstart_timeout = 7\n[api]\nallowed_client_names = a b\n")
    assert loaded.number("daemons", "start_timeout") == 7.0
    assert loaded.number("daemons", "stop_timeout") == float(config.DEFAULTS["daemons"]["stop_timeout"])
    assert loaded.words("api", "allowed_client_names") == ["a", "b"]
    assert loaded.flag("daemons", "confine_checks") is True


@pytest.mark.parametrize("text, said", [
    ("[nowhere]\nx = 1\n", "unknown section [nowhere]"),
    ("[daemons]\nstart_timeuot = 1\n", "unknown key start_timeuot in [daemons]"),
    ("[daemons]\nstart_timeout = soon\n", "invalid"),
    ("[daemons]\nconfine_checks = perhaps\n", "invalid"),
    ("[sync]\nmax_delete_share = 2\n", "not between 0 and 1"),
    ("key = outside\n", "invalid"),
    ("[api]\n[api]\n", "section [api] again"),
])
def test_a_bad_file_is_refused_naming_what_is_wrong(text, said):
    with pytest.raises(ServerError) as raised:
        config.parse(text, "/etc/x.ini")
    assert said in raised.value.reason and "/etc/x.ini" in raised.value.reason


def test_comments_and_continuation_lines_read_as_configparser_reads_them():
    assert config.read_ini("# c\n; c\n[a]\nk: v\n  more\nK2 = w\n") == {
        "a": {"k": "v\nmore", "k2": "w"}}


def test_the_shipped_file_holds_every_default():
    """conf/appliance-api.ini documents every key with its default value
    ([testing] aside: the test sites' knobs, never set on an appliance)."""
    import os

    from conftest import ROOT

    with open(os.path.join(ROOT, "conf", "appliance-api.ini")) as file:
        shipped = config.read_ini(file.read())
    differ = [(section, key, shipped.get(section, {}).get(key), default)
              for section, keys in config.DEFAULTS.items() if section != "testing"
              for key, default in keys.items()
              if shipped.get(section, {}).get(key) != default]
    assert not differ
