"""system/vrrp.py: this node's keepalived.conf, rendered from the topology
(keepalived itself is run end to end: tests/e2e/test_pair*.py)."""
from appliance_api.system.vrrp import Keepalived
from conftest import make_config

PAIR = {"topology": "ACTIVE-STANDBY", "role": "PRIMARY", "ha_ip": "192.0.2.100",
        "primary_ip": "192.0.2.1", "all_ips": ["192.0.2.1", "192.0.2.2", "2001:db8::2"],
        "secret": "supersecret", "routing-mode": "LAYER2"}


def render(state_dir, service_ips=()):
    config = make_config(state_dir, network={"vip_interface": "eth1"})
    return Keepalived(config).render(PAIR, "192.0.2.1", set(service_ips),
                                     health_command="/usr/sbin/octctl health",
                                     notify_command="/usr/sbin/octctl vrrp-notify")


def test_the_peer_is_every_other_address_of_the_same_family(state_dir):
    text = render(state_dir)
    assert "    unicast_src_ip 192.0.2.1\n    unicast_peer {\n        192.0.2.2\n    }" in text
    assert "2001:db8::2" not in text


def test_the_ha_ip_is_the_vrrp_address_and_service_ips_are_excluded_ones(state_dir):
    text = render(state_dir, {"192.0.2.20", "192.0.2.3"})
    assert "    virtual_ipaddress {\n        192.0.2.100/32 dev eth1\n    }" in text
    assert ("    virtual_ipaddress_excluded {\n        192.0.2.3/32 dev eth1\n"
            "        192.0.2.20/32 dev eth1\n    }") in text  # in address order
    assert "virtual_ipaddress_excluded" not in render(state_dir)


def test_the_health_check_and_the_secret_as_keepalived_takes_them(state_dir):
    text = render(state_dir)
    assert '    script "/usr/sbin/octctl health"' in text and "    fall 1" in text
    assert "        auth_pass supersec\n" in text  # VRRP's PASS: 8 characters
    assert '    notify "/usr/sbin/octctl vrrp-notify"' in text
    assert "    state BACKUP" in text  # no node claims MASTER (see render's comment)
