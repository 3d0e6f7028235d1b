"""The certificate key provider, called directly (mocks never run dynamic providers)."""

from __future__ import annotations

from providers.certificate_key import KEY_FORMAT, CertificateKeyProvider
from tests.program import run_serialized_provider


def test_a_new_key_is_64_hex_digits_from_a_fresh_draw_and_not_in_the_id():
    first, second = (CertificateKeyProvider().create({}) for _ in range(2))
    for created in (first, second):
        assert KEY_FORMAT.match(created.outs["key"]), created.outs
        assert created.outs["key"] not in created.id
    assert first.outs["key"] != second.outs["key"]


def test_the_key_never_changes_once_made():
    provider = CertificateKeyProvider()
    assert not provider.diff("certificate-key", {"key": "0" * 64}, {}).changes


def test_the_provider_survives_serialisation_into_a_fresh_interpreter():
    result = run_serialized_provider(CertificateKeyProvider(), "print(len(provider.create({}).outs['key']))")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "64"
