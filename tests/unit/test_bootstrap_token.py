"""The bootstrap token dynamic provider, called directly (mocks never run it)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from providers.bootstrap_token import TOKEN_FORMAT, BootstrapTokenProvider, generate_token
from tests.program import PROJECT_DIR, run_serialized_provider

DAY = 86400
INPUTS = {"ttl_seconds": DAY, "renew_before_seconds": DAY // 4}


class Clock:
    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock(1_800_000_000)


@pytest.fixture
def provider(clock):
    return BootstrapTokenProvider(clock=clock)


def test_token_format_is_what_kubeadm_accepts():
    for _ in range(200):
        assert TOKEN_FORMAT.match(generate_token())


def test_two_tokens_differ():
    assert len({generate_token() for _ in range(50)}) == 50


def test_create_records_token_and_expiry(provider, clock):
    result = provider.create(dict(INPUTS))
    assert TOKEN_FORMAT.match(result.outs["token"])
    assert result.id == result.outs["token"].split(".")[0]
    assert result.outs["expires_epoch"] == clock.now + DAY
    assert result.outs["expires"] == "2027-01-16T08:00:00Z"


def test_fresh_token_is_not_replaced(provider, clock):
    outs = provider.create(dict(INPUTS)).outs
    clock.now += DAY // 2
    diff = provider.diff("id", outs, dict(INPUTS))
    assert not diff.changes and not diff.replaces


def test_near_expiry_token_is_replaced(provider, clock):
    outs = provider.create(dict(INPUTS)).outs
    clock.now += DAY - DAY // 4  # inside the renewal window
    diff = provider.diff("id", outs, dict(INPUTS))
    assert diff.changes and diff.replaces == ["token"] and diff.delete_before_replace is False


def test_expired_token_is_replaced_weeks_later(provider, clock):
    outs = provider.create(dict(INPUTS)).outs
    clock.now += 21 * DAY
    assert provider.diff("id", outs, dict(INPUTS)).replaces == ["token"]
    renewed = provider.create(dict(INPUTS)).outs
    assert renewed["token"] != outs["token"] and renewed["expires_epoch"] == clock.now + DAY


def test_changed_lifetime_updates_without_a_new_token(provider, clock):
    outs = provider.create(dict(INPUTS)).outs
    news = {"ttl_seconds": 2 * DAY, "renew_before_seconds": DAY // 4}
    diff = provider.diff("id", outs, news)
    assert diff.changes and not diff.replaces
    updated = provider.update("id", outs, news).outs
    assert updated["token"] == outs["token"] and updated["ttl_seconds"] == 2 * DAY


def test_check_rejects_bad_lifetimes(provider):
    assert provider.check({}, dict(INPUTS)).failures == []
    failures = provider.check({}, {"ttl_seconds": 0, "renew_before_seconds": 10}).failures
    assert [f.property for f in failures] == ["ttl_seconds"]
    failures = provider.check({}, {"ttl_seconds": 100, "renew_before_seconds": 100}).failures
    assert [f.property for f in failures] == ["renew_before_seconds"]


def test_delete_is_a_no_op(provider):
    assert provider.delete("id", {"token": "abcdef.0123456789abcdef"}) is None


def test_provider_survives_pulumi_serialisation_in_a_fresh_interpreter():
    """Serialise as pulumi.dynamic does; load and use it where Pulumi's provider process would."""
    result = run_serialized_provider(
        BootstrapTokenProvider(),
        "outs = provider.create({'ttl_seconds': 3600, 'renew_before_seconds': 600}).outs\n"
        "print(type(provider).__module__, outs['token'].count('.'), outs['expires_epoch'] > 0)\n",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["providers.bootstrap_token", "1", "True"]


def test_providers_package_imports_cleanly_in_a_fresh_interpreter():
    result = subprocess.run(
        [sys.executable, "-c", "import providers.bootstrap_token as m; print(m.BootstrapTokenProvider.__name__)"],
        capture_output=True, text=True, cwd=PROJECT_DIR, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "BootstrapTokenProvider"
