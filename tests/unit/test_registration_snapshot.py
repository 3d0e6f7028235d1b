"""What the engine receives, compared with a recorded snapshot.

Each case runs the program under mocks and reduces every registration to what
`pulumi preview` compares against a stack's state: URN (type, name, parent
chain), inputs with their secret markers, dependencies and resource options. A
refactor must leave that unchanged; a deliberate change re-records the snapshot
and shows up, line by line, in the diff of `tests/data/registrations/`:

    UPDATE_SNAPSHOTS=1 .venv/bin/pytest tests/unit/test_registration_snapshot.py
"""

from __future__ import annotations

import copy
import json
import os

import pytest

from tests.conftest import with_keys
from tests.program import PROJECT_DIR, load_stack_config, run_program

SNAPSHOT_DIR = PROJECT_DIR / "tests" / "data" / "registrations"


def dev_with(**sections) -> dict:
    config = load_stack_config("dev")
    config.update(copy.deepcopy(sections))
    return config


CASES = {
    **{stack: (stack, load_stack_config(stack)) for stack in ("dev", "single", "lab")},
    "dev-cn-mirrors": ("dev", dev_with(mirrors="cn", firewall="open-ports")),
    "dev-os-prep": ("dev", dev_with(stages="os-prep")),
    "dev-kernel-boot": ("dev", dev_with(image={"source": "https://example.test/debian.qcow2", "kernel": "/srv/vmlinuz",
                                               "initrd": "/srv/initrd.img", "cmdline": "root=/dev/vda rw console=ttyS0"})),
    "dev-prepared": ("dev", dev_with(image={"source": "https://example.test/debian.qcow2", "prepared": True})),
}


def normalised(text: str, keys) -> str:
    """The throwaway key pair, where it lies and the checkout's path are the only things that vary between runs."""
    private, public = keys
    for value, placeholder in (
        (private.read_text().strip(), "<ssh-private-key>"),
        (public.read_text().strip(), "<ssh-public-key>"),
        (str(private), "<ssh-private-key-path>"),
        (str(PROJECT_DIR), "<project>"),
    ):
        text = text.replace(json.dumps(value)[1:-1], placeholder)
    return text


def snapshot(config: dict, stack: str, keys) -> list[dict]:
    run = run_program(with_keys(config, keys), stack=stack)
    assert run.error is None, run.error
    records = [
        {
            "urn": r.urn,
            "parent": r.parent,
            "dependencies": sorted(r.dependencies),
            "property_dependencies": {k: sorted(v) for k, v in sorted(r.property_dependencies.items())},
            "inputs": r.raw_inputs,
            "ignore_changes": sorted(r.ignore_changes),
            "additional_secret_outputs": sorted(r.additional_secret_outputs),
            "deleted_with": r.deleted_with,
            "delete_before_replace": r.delete_before_replace,
            "provider": r.provider,
            "create_timeout": r.create_timeout,
        }
        for r in run.registrations
    ]
    text = json.dumps(sorted(records, key=lambda record: record["urn"]), indent=1, sort_keys=True)
    return json.loads(normalised(text, keys))


@pytest.mark.parametrize("case", sorted(CASES))
def test_registrations_match_the_snapshot(case, ssh_keys):
    stack, config = CASES[case]
    current = snapshot(config, stack, ssh_keys)
    path = SNAPSHOT_DIR / f"{case}.json"
    if os.environ.get("UPDATE_SNAPSHOTS") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(current, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    recorded = json.loads(path.read_text(encoding="utf-8"))
    recorded_by_urn = {r["urn"]: r for r in recorded}
    current_by_urn = {r["urn"]: r for r in current}
    assert sorted(current_by_urn) == sorted(recorded_by_urn), "the set of resources (URNs) changed"
    for urn, record in current_by_urn.items():
        assert record == recorded_by_urn[urn], f"{urn} is registered differently"
