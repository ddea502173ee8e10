"""system/network: the one reader of `ip -j addr show`, on what ip prints."""
import json
import subprocess

from appliance_api.system.network import addresses_in

SAMPLE = json.dumps([
    {"ifname": "lo", "addr_info": [{"family": "inet", "local": "127.0.0.1", "scope": "host"},
                                   {"family": "inet6", "local": "::1", "scope": "host"}]},
    {"ifname": "eth0", "addr_info": [
        {"family": "inet", "local": "192.0.2.10", "scope": "global"},
        {"family": "inet6", "local": "2001:DB8:0::5", "scope": "global"},
        {"family": "inet6", "local": "fe80::1", "scope": "link"},
        {"family": "inet", "scope": "global"},                 # no address: left out
        {"family": "inet", "local": "not-an-address", "scope": "global"}]},
    {"ifname": "eth1"},
])


def test_every_address_normalised_in_order():
    assert addresses_in(SAMPLE) == ["127.0.0.1", "::1", "192.0.2.10", "2001:db8::5", "fe80::1"]


def test_global_scope_only():
    assert addresses_in(SAMPLE, scope="global") == ["192.0.2.10", "2001:db8::5"]


def test_no_answer_is_no_address():
    assert addresses_in("") == [] and addresses_in(None) == [] and addresses_in("[]") == []


def test_what_this_machines_ip_prints_is_read():
    output = subprocess.run(["ip", "-j", "addr", "show", "dev", "lo"], check=True,
                            capture_output=True, text=True).stdout
    assert "127.0.0.1" in addresses_in(output)
