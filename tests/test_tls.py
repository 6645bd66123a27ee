"""Races over TLS: the held final byte travels as its own pre-encrypted record."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import trustme

from tests.support import OneWinnerApp, serve_app


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, str]:
    """(certificate chain, key, CA bundle) for 127.0.0.1, from a throwaway CA."""
    directory = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    chain, key, bundle = directory / "chain.pem", directory / "key.pem", directory / "ca.pem"
    for blob, path in ((cert.cert_chain_pems[0], chain), (cert.private_key_pem, key), (ca.cert_pem, bundle)):
        blob.write_to_path(str(path))
    for extra in cert.cert_chain_pems[1:]:
        with Path(chain).open("ab") as fh:
            fh.write(extra.bytes())
    return str(chain), str(key), str(bundle)


@pytest.mark.parametrize("mode", ["last-byte", "gate"])
def test_race_over_tls(race, tls_files, mode):
    chain, key, bundle = tls_files
    with serve_app(OneWinnerApp(loser_status=409), tls=(chain, key)) as url:
        assert url.startswith("https://")
        seat_url = lambda a: f"{url}/seat/{a.resource}"  # noqa: E731
        result = race.post(seat_url, resources=2, concurrency=10, tls_verify=Path(bundle), sync=mode)
    assert (result.wins, result.rejections, result.errors) == (2, 18, 0)
    assert result.spread.median_ns > 0


def test_tls_with_an_ssl_context(race, tls_files):
    chain, key, bundle = tls_files
    context = ssl.create_default_context(cafile=bundle)
    with serve_app(OneWinnerApp(loser_status=409), tls=(chain, key)) as url:
        result = race.post(url + "/seat/1", concurrency=5, tls_verify=context)
    assert result.wins == 1


def test_untrusted_certificate_is_a_clear_error(race, tls_files):
    chain, key, _ = tls_files
    with serve_app(OneWinnerApp(loser_status=409), tls=(chain, key)) as url:
        result = race.post(url + "/seat/1", concurrency=3, check=False)
    assert result.errors == 3
    reason = next(iter(result.error_reasons))
    assert "TLS handshake" in reason
    assert "CERTIFICATE_VERIFY_FAILED" in reason


def test_bad_tls_verify_value_is_named(race):
    from pytest_seatrace import RaceUsageError

    with pytest.raises(RaceUsageError, match=r"tls_verify=42: expected True, False, a CA bundle path"):
        race.post("https://127.0.0.1:1/x", concurrency=1, tls_verify=42)
