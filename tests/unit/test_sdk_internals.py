"""The private Pulumi SDK names that tests/program.py relies on are still there and
still of the shape it uses, so an SDK upgrade that breaks them fails here, by name."""

from __future__ import annotations

import inspect

from pulumi.runtime.proto import resource_pb2

from tests import program


def test_the_register_request_still_has_every_field_the_recording_monitor_reads():
    fields = resource_pb2.RegisterResourceRequest.DESCRIPTOR.fields_by_name
    missing = [name for name in program.REGISTER_FIELDS if name not in fields]
    assert not missing, f"RegisterResourceRequest lost {missing}: adapt RecordingMonitor in tests/program.py"


def test_the_mock_monitor_still_registers_through_register_resource():
    assert callable(getattr(program.MockMonitor, "RegisterResource", None)), "adapt RecordingMonitor in tests/program.py"


def test_the_program_runner_and_awaiter_keep_their_shape():
    assert inspect.iscoroutinefunction(program.run_pulumi_func), "adapt run_program in tests/program.py"
    assert list(inspect.signature(program._sync_await).parameters) == ["awaitable"], "adapt tests/program.py"


def test_an_sdk_without_a_private_name_fails_with_a_clear_message():
    try:
        program.sdk_internal("pulumi.runtime.stack", "no_such_name")
    except ImportError as error:
        assert "tests/program.py relies on the Pulumi SDK's private pulumi.runtime.stack.no_such_name" in str(error)
    else:
        raise AssertionError("a missing SDK name must raise")
