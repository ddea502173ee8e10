"""Fixtures of the systemd tier: the image (built once and cached by
`make system-image`), the checkout installed over it once per session, and
a freshly booted machine per test (an overlay of its own: nothing a test
does reaches the next one)."""
import pytest

from support import nspawn


@pytest.fixture(scope="session")
def appliance_layers(tmp_path_factory):
    base = nspawn.system_image()
    layer = nspawn.install_appliance(base, str(tmp_path_factory.mktemp("installed")))
    return [layer, base]


@pytest.fixture
def machine(appliance_layers, tmp_path):
    with nspawn.Machine(appliance_layers, str(tmp_path / "machine")) as booted:
        yield booted
