"""The web config file: what it accepts, and a clear refusal for everything else."""

from __future__ import annotations

import pytest

from exporter import WebConfig, load_web_config
from tracker.errors import ConfigurationError

HASH = "$2y$10$mDwo.lAisC94iLAyP81MCesa29IzH37oigHC/42V2pdJlUprsJPze"


def write(tmp_path, text):
    path = tmp_path / "web.yml"
    path.write_text(text)
    return path


def test_an_empty_file_means_plain_http_without_auth(tmp_path):
    config = load_web_config(write(tmp_path, "# nothing\n"))
    assert config == WebConfig()
    assert config.ssl_context() is None
    assert config.authenticator() is None


def test_users_without_tls_are_accepted(tmp_path):
    config = load_web_config(write(tmp_path, f"basic_auth_users:\n  alice: {HASH}\n"))
    assert config.tls is None
    assert dict(config.users) == {"alice": HASH}


def test_tls_section_without_files_means_plain_http(tmp_path):
    assert load_web_config(write(tmp_path, "tls_server_config: {}\n")).tls is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: [unclosed\n", "not valid YAML"),
        ("- a\n- b\n", "must be a mapping"),
        ("tls_config: {}\n", "unknown key 'tls_config'"),
        ("rate_limit:\n  interval: 1s\n", "rate_limit is not supported"),
        ("http_server_config:\n  http2: false\n", "http_server_config is not supported"),
        ("tls_server_config:\n  cert_file: a.crt\n", "key_file is missing"),
        ("tls_server_config:\n  key_file: a.key\n", "cert_file is missing"),
        ("tls_server_config:\n  cert_file: a.crt\n  key_file: a.key\n", "cannot load certificate"),
        (
            "tls_server_config:\n  cert_file: a.crt\n  key_file: a.key\n  client_ca_file: ca.crt\n",
            "client_auth_type is NoClientCert",
        ),
        (
            "tls_server_config:\n  cert_file: a.crt\n  key_file: a.key\n"
            "  client_auth_type: RequireAndVerifyClientCert\n",
            "needs client_ca_file",
        ),
        (
            "tls_server_config:\n  cert_file: a.crt\n  key_file: a.key\n"
            "  client_auth_type: RequestClientCert\n",
            "is not supported",
        ),
        (
            "tls_server_config:\n  cert_file: a.crt\n  key_file: a.key\n"
            "  client_auth_type: Sometimes\n",
            "unknown client_auth_type",
        ),
        (
            "tls_server_config:\n  cert_file: a.crt\n  key_file: a.key\n  min_version: TLS14\n",
            "unknown min_version",
        ),
        (
            "tls_server_config:\n  cert_file: a.crt\n  key_file: a.key\n"
            "  min_version: TLS13\n  max_version: TLS12\n",
            "min_version is above max_version",
        ),
        ("basic_auth_users:\n  alice: hunter2\n", "not a bcrypt hash"),
        ("basic_auth_users:\n  alice:\n", "not a bcrypt hash"),
        ("basic_auth_users: [alice]\n", "must be a mapping"),
        (f"basic_auth_users:\n  'a:b': {HASH}\n", "without ':'"),
    ],
)
def test_bad_files_are_refused_with_the_reason(tmp_path, text, message):
    with pytest.raises(ConfigurationError, match=message) as caught:
        load_web_config(write(tmp_path, text))
    assert "\n" not in str(caught.value)


def test_a_missing_file_is_refused(tmp_path):
    with pytest.raises(ConfigurationError, match="cannot read web config"):
        load_web_config(tmp_path / "absent.yml")


def test_a_password_is_never_echoed_in_the_refusal(tmp_path):
    with pytest.raises(ConfigurationError) as caught:
        load_web_config(write(tmp_path, "basic_auth_users:\n  alice: s3cret-plain\n"))
    assert "s3cret-plain" not in str(caught.value)


def _bcrypt(password: str, cost: int) -> str:
    import bcrypt

    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(cost)).decode().replace("$2b$", "$2y$")


def _header(user: str, password: str) -> str:
    import base64

    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _cost(hashed: bytes | str) -> int:
    text = hashed.decode() if isinstance(hashed, bytes) else hashed
    return int(text.split("$")[2])


@pytest.fixture(scope="module")
def cheap_and_dear():
    """A web config's users: htpasswd -nB's default cost 5, and a deliberate cost 12."""
    return {"cheap": _bcrypt("cheap secret", 5), "dear": _bcrypt("dear secret", 12)}


def test_unknown_users_are_checked_at_the_dearest_users_cost(tmp_path, cheap_and_dear):
    text = "basic_auth_users:\n" + "".join(f"  {u}: '{h}'\n" for u, h in cheap_and_dear.items())
    auth = load_web_config(write(tmp_path, text)).authenticator()
    assert [_cost(h) for h in cheap_and_dear.values()] == [5, 12]
    assert _cost(auth.dummy_hash) == 12


def test_an_unknown_user_costs_a_bcrypt_check_at_that_cost(monkeypatch, cheap_and_dear):
    import bcrypt

    from exporter._basic_auth import BasicAuth

    costs = []
    real = bcrypt.checkpw

    def recording(password, hashed):
        costs.append(_cost(hashed))
        return real(password, hashed)

    auth = BasicAuth(cheap_and_dear)
    monkeypatch.setattr(bcrypt, "checkpw", recording)
    assert not auth.check(_header("nobody", "guess")).allowed
    assert costs == [12]
    assert not auth.check(_header("cheap", "guess")).allowed
    assert costs == [12, 5]  # a known user is checked against their own hash


def test_a_hash_of_a_cost_bcrypt_refuses_is_refused_at_start(tmp_path):
    bad = "$2y$03$" + HASH[7:]
    with pytest.raises(ConfigurationError, match="cost 3"):
        load_web_config(write(tmp_path, f"basic_auth_users:\n  alice: '{bad}'\n"))


def test_only_successes_are_cached_so_wrong_passwords_cannot_flush_the_right_one(monkeypatch):
    import bcrypt

    from exporter._basic_auth import BasicAuth

    auth = BasicAuth({"alice": _bcrypt("right", 4)})
    assert auth.check(_header("alice", "right"), "10.0.0.1").allowed
    # More distinct wrong passwords than the cache holds, from as many addresses (so that the
    # failure limit does not stop them before bcrypt does).
    for i in range(BasicAuth._CACHE_LIMIT + 100):
        client = f"10.1.{i // 250}.{i % 250}"
        assert not auth.check(_header("alice", f"wrong {i}"), client).allowed
    calls = []
    monkeypatch.setattr(bcrypt, "checkpw", lambda *a: calls.append(a) or False)
    assert auth.check(_header("alice", "right"), "10.0.0.1").allowed
    assert calls == []  # answered from the cache
    assert not auth.check(_header("alice", "wrong 0"), "10.0.0.2").allowed
    assert len(calls) == 1  # a failure is checked again, never cached


def test_failed_checks_are_rate_limited_per_client_without_running_bcrypt(monkeypatch):
    import bcrypt

    from exporter._basic_auth import DEFAULT_FAILURE_BURST, BasicAuth

    auth = BasicAuth({"alice": _bcrypt("right", 4), "bob": _bcrypt("bobs", 4)})
    assert auth.check(_header("alice", "right"), "192.0.2.1").allowed  # cached from now on
    for i in range(DEFAULT_FAILURE_BURST):
        verdict = auth.check(_header("alice", f"wrong {i}"), "192.0.2.1")
        assert (verdict.allowed, verdict.limited) == (False, False)
    calls = []
    monkeypatch.setattr(bcrypt, "checkpw", lambda *a: calls.append(a) or False)
    limited = auth.check(_header("mallory", "guess"), "192.0.2.1")
    assert limited.limited
    assert not limited.allowed
    assert limited.retry_after >= 1
    # Even a right password that needs bcrypt waits; one already proven is let in.
    assert auth.check(_header("bob", "bobs"), "192.0.2.1").limited
    assert auth.check(_header("alice", "right"), "192.0.2.1").allowed
    assert calls == []
    # Another address is not held back.
    assert not auth.check(_header("mallory", "guess"), "192.0.2.2").limited
    assert len(calls) == 1


def test_the_failure_limiter_refills_and_groups_ipv6_by_64():
    from exporter._basic_auth import FailureLimiter

    now = [0.0]
    limiter = FailureLimiter(burst=2, per_second=0.5, clock=lambda: now[0], max_clients=3)
    assert limiter.take("2001:db8:1:2::1") == 0
    assert limiter.take("2001:db8:1:2:ffff::9") == 0  # the same /64
    assert limiter.take("2001:db8:1:2::1") == pytest.approx(2.0)
    assert limiter.take("2001:db8:1:3::1") == 0  # the next /64 is another client
    now[0] = 2.0
    assert limiter.take("2001:db8:1:2::1") == 0  # one token back after 2 s
    limiter.give_back("2001:db8:1:2::1")
    assert limiter.take("2001:db8:1:2::1") == 0
    assert limiter.take("::ffff:192.0.2.7") == 0
    assert limiter.take("192.0.2.7") == 0  # an IPv4-mapped address is its IPv4 client
    assert limiter.take("192.0.2.7") > 0
    for i in range(10):
        limiter.take(f"198.51.100.{i}")
    assert len(limiter._buckets) <= 3  # memory stays bounded
