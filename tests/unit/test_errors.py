"""errors.py: HTTP errors as exceptions, each the contract's code and line."""
from appliance_api import errors
from appliance_api.system import Busy, MachineError


def test_each_error_is_its_contract_code_and_first_line():
    assert (errors.InvalidRequest().code, errors.InvalidRequest().body()) == (
        403, "Invalid Request\n")
    assert errors.NotFound().code == 404
    conflict = errors.Conflict("Invalid configuration", "line 2: no\n")
    assert conflict.code == 409 and conflict.body() == "Invalid configuration\nline 2: no\n"
    assert errors.RequestEntityTooLarge().code == 413
    assert errors.ServerError("disk").code == 500


def test_a_refusal_for_load_says_when_to_come_back():
    transition = errors.ClusterTransition()
    assert transition.code == 503 and ("Retry-After", "2") in transition.headers
    busy = errors.from_system(Busy("Too many changes in progress; retry later", retry_after=1))
    assert busy.code == 503 and ("Retry-After", "1") in busy.headers


def test_a_machine_failure_is_a_500_with_its_line():
    failure = errors.from_system(MachineError("Program not found: /usr/sbin/haproxy"))
    assert failure.code == 500 and "Program not found: /usr/sbin/haproxy" in failure.body()
