"""changes.py: the write side's own checks, before any lock or daemon."""
import pytest

from appliance_api import changes
from appliance_api.errors import Conflict, NotFound, RequestEntityTooLarge


def test_a_body_over_its_limit_is_413_naming_the_limit(config):
    most = int(config.number("limits", "custom503_bytes"))
    assert changes.within_limit(b"x" * most, config, "custom503")
    with pytest.raises(RequestEntityTooLarge) as raised:
        changes.within_limit(b"x" * (most + 1), config, "custom503")
    assert str(most) in raised.value.detail


@pytest.mark.parametrize("page", [
    b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain\r\n\r\nsorry\n",
    b"HTTP/1.1 503\n\n",
    b"HTTP/1.1 200 OK\r\nCache-Control: no-cache\r\n\r\n",
])
def test_an_http_response_is_a_custom503_page(page):
    changes.check_http_response(page)


@pytest.mark.parametrize("page, said", [
    (b"sorry", "status line"),
    (b"HTTP/2 503\r\n\r\n", "status line"),
    (b"HTTP/1.1 503\r\nContent-Type: text/plain\r\n", "no blank line"),
    (b"HTTP/1.1 503\r\nno colon here\r\n\r\n", "bad header line"),
])
def test_anything_else_is_409_with_its_reason(page, said):
    with pytest.raises(Conflict) as raised:
        changes.check_http_response(page)
    assert said in raised.value.reason


def test_deleting_what_is_not_stored_is_404_and_makes_no_folder(config, instance_id):
    import os

    from appliance_api.layout import Instance

    for delete in (lambda: changes.delete_config(config, instance_id, "haproxy"),
                   lambda: changes.delete_custom503(config, instance_id),
                   lambda: changes.delete_certificate(config, instance_id, "x.pem"),
                   lambda: changes.delete_instance(config, instance_id)):
        with pytest.raises(NotFound):
            delete()
    assert not os.path.exists(Instance(config.state_dir, instance_id).dir)
