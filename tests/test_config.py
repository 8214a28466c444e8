"""Unit tests for keyapi_mcp.config: defaults, environment and .env parsing, refusal of bad values."""

from __future__ import annotations

from pathlib import Path

import pytest

from keyapi_mcp.config import DEFAULT_BASE_URL, Settings, is_loopback_host, load_settings
from keyapi_mcp.errors import ConfigError

# A value that looks like a secret: if a user pastes the key into the wrong variable, the error
# must name the variable without echoing what was pasted.
PASTED_SECRET = "sk_live_PASTED_secret_value_42"


def test_defaults_match_the_documented_configuration_table(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KEYAPI_STATE_DIR")  # conftest points it at tmp; the default is "unset"
    s = load_settings()
    assert s.api_key is None
    assert not s.has_api_key
    assert s.base_url == DEFAULT_BASE_URL == "https://api.keyapi.ai"
    assert s.max_credits_per_call == 5
    assert s.max_rps == 5
    assert s.timeout_seconds == 30
    assert s.daily_credit_limit == 100
    assert s.cache_ttl_seconds == 21600
    assert s.state_dir is None
    assert s.log_level == "WARNING"


def test_every_variable_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env = {
        "KEYAPI_API_KEY": "k-123",
        "KEYAPI_BASE_URL": "https://proxy.example.com/",
        "KEYAPI_MAX_CREDITS_PER_CALL": "12",
        "KEYAPI_MAX_RPS": "2.5",
        "KEYAPI_TIMEOUT_SECONDS": "7",
        "KEYAPI_DAILY_CREDIT_LIMIT": "0",
        "KEYAPI_CACHE_TTL_SECONDS": "60",
        "KEYAPI_STATE_DIR": str(tmp_path / "elsewhere"),
        "KEYAPI_LOG_LEVEL": "debug",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    s = load_settings()
    assert s.api_key is not None
    assert s.api_key.get_secret_value() == "k-123"
    assert s.has_api_key
    assert s.base_url == "https://proxy.example.com"  # trailing slash dropped
    assert s.max_credits_per_call == 12
    assert s.max_rps == 2.5
    assert s.timeout_seconds == 7
    assert s.daily_credit_limit == 0
    assert s.cache_ttl_seconds == 60
    assert s.state_dir == tmp_path / "elsewhere"
    assert s.log_level == "DEBUG"


def test_surrounding_whitespace_in_numbers_and_the_key_is_tolerated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEYAPI_MAX_CREDITS_PER_CALL", " 7 ")
    monkeypatch.setenv("KEYAPI_API_KEY", "  k-123\n")
    s = load_settings()
    assert s.max_credits_per_call == 7
    assert s.api_key is not None
    assert s.api_key.get_secret_value() == "k-123"


@pytest.mark.parametrize("blank", ["", "   "])
def test_a_blank_api_key_means_not_set(monkeypatch: pytest.MonkeyPatch, blank: str) -> None:
    monkeypatch.setenv("KEYAPI_API_KEY", blank)
    s = load_settings()
    assert s.api_key is None
    assert not s.has_api_key


def test_zero_limits_are_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEYAPI_MAX_CREDITS_PER_CALL", "0")
    monkeypatch.setenv("KEYAPI_DAILY_CREDIT_LIMIT", "0")
    monkeypatch.setenv("KEYAPI_CACHE_TTL_SECONDS", "0")
    s = load_settings()
    assert (s.max_credits_per_call, s.daily_credit_limit, s.cache_ttl_seconds) == (0, 0, 0)


def test_the_api_key_is_hidden_in_repr_str_and_json_dump(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEYAPI_API_KEY", PASTED_SECRET)
    s = load_settings()
    assert s.has_api_key
    for text in (repr(s), str(s), s.model_dump_json(), repr(s.model_dump())):
        assert PASTED_SECRET not in text


def test_a_dotenv_file_in_the_working_directory_is_read() -> None:
    # conftest chdirs every test into an empty temp directory.
    Path(".env").write_text(
        "# comment line\nKEYAPI_API_KEY=from-dotenv\nKEYAPI_MAX_CREDITS_PER_CALL=9\nUNRELATED_VAR=ignored\n",
        encoding="utf-8",
    )
    s = load_settings()
    assert s.api_key is not None
    assert s.api_key.get_secret_value() == "from-dotenv"
    assert s.max_credits_per_call == 9


def test_the_environment_wins_over_the_dotenv_file(monkeypatch: pytest.MonkeyPatch) -> None:
    Path(".env").write_text("KEYAPI_MAX_CREDITS_PER_CALL=9\n", encoding="utf-8")
    monkeypatch.setenv("KEYAPI_MAX_CREDITS_PER_CALL", "3")
    assert load_settings().max_credits_per_call == 3


def test_a_bad_value_in_the_dotenv_file_is_refused_naming_the_variable() -> None:
    Path(".env").write_text(f"KEYAPI_MAX_RPS={PASTED_SECRET}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "KEYAPI_MAX_RPS" in str(info.value)
    assert PASTED_SECRET not in str(info.value)


def test_no_dotenv_file_is_fine() -> None:
    assert not Path(".env").exists()
    assert load_settings().max_credits_per_call == 5


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("KEYAPI_MAX_CREDITS_PER_CALL", "-1"),
        ("KEYAPI_MAX_CREDITS_PER_CALL", "five"),
        ("KEYAPI_MAX_CREDITS_PER_CALL", "2.5"),
        ("KEYAPI_MAX_CREDITS_PER_CALL", ""),
        ("KEYAPI_MAX_RPS", "0"),
        ("KEYAPI_MAX_RPS", "-3"),
        ("KEYAPI_MAX_RPS", "fast"),
        ("KEYAPI_MAX_RPS", "nan"),
        ("KEYAPI_MAX_RPS", "inf"),
        ("KEYAPI_TIMEOUT_SECONDS", "0"),
        ("KEYAPI_TIMEOUT_SECONDS", "-1"),
        ("KEYAPI_TIMEOUT_SECONDS", "30s"),
        ("KEYAPI_DAILY_CREDIT_LIMIT", "-5"),
        ("KEYAPI_DAILY_CREDIT_LIMIT", "lots"),
        ("KEYAPI_CACHE_TTL_SECONDS", "-1"),
        ("KEYAPI_CACHE_TTL_SECONDS", "6h"),
        ("KEYAPI_LOG_LEVEL", "chatty"),
        ("KEYAPI_BASE_URL", "api.keyapi.ai"),
        ("KEYAPI_BASE_URL", "not a url"),
        ("KEYAPI_BASE_URL", "ftp://api.keyapi.ai"),
        ("KEYAPI_BASE_URL", "https://"),
        ("KEYAPI_BASE_URL", "https://api.keyapi.ai:notaport"),
        ("KEYAPI_BASE_URL", "https://api.keyapi.ai:99999"),
        ("KEYAPI_BASE_URL", "https://api keyapi.ai"),
        ("KEYAPI_BASE_URL", "https://api.keyapi.ai/?x=1"),
        ("KEYAPI_BASE_URL", "https://api.keyapi.ai/#frag"),
        ("KEYAPI_BASE_URL", "https://user:pw@api.keyapi.ai"),
        ("KEYAPI_BASE_URL", "http://api.keyapi.ai"),
        ("KEYAPI_BASE_URL", "http://10.0.0.5:8080"),
        ("KEYAPI_BASE_URL", "http://127.0.0.1.evil.example"),
        ("KEYAPI_BASE_URL", "http://localhost.evil.example"),
    ],
)
def test_an_invalid_value_is_refused_with_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    text = str(info.value)
    assert text.startswith(f"{variable}: ")
    assert "\n" not in text
    if len(value.strip()) > 3 and value.strip() not in DEFAULT_BASE_URL:
        # The value itself is not echoed (it may be a secret pasted into the wrong variable); values
        # that are part of the example URL the message suggests cannot be told apart.
        assert value.strip() not in text


@pytest.mark.parametrize(
    "variable",
    [
        "KEYAPI_MAX_CREDITS_PER_CALL",
        "KEYAPI_MAX_RPS",
        "KEYAPI_TIMEOUT_SECONDS",
        "KEYAPI_DAILY_CREDIT_LIMIT",
        "KEYAPI_CACHE_TTL_SECONDS",
        "KEYAPI_LOG_LEVEL",
        "KEYAPI_BASE_URL",
    ],
)
def test_a_secret_pasted_into_the_wrong_variable_is_not_echoed(monkeypatch: pytest.MonkeyPatch, variable: str) -> None:
    monkeypatch.setenv(variable, PASTED_SECRET)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert variable in str(info.value)
    assert PASTED_SECRET not in str(info.value)
    assert "PASTED" not in str(info.value)


@pytest.mark.parametrize(
    ("env", "said"),
    [
        pytest.param({"KEYAPI_BASE_URL": "http://api.keyapi.ai"}, ["https://", "loopback"], id="plain-http-use-https"),
        pytest.param(
            {"KEYAPI_MAX_RPS": "-1", "KEYAPI_TIMEOUT_SECONDS": "abc"},
            ["KEYAPI_MAX_RPS", "KEYAPI_TIMEOUT_SECONDS"],
            id="several-bad-variables-all-named",
        ),
    ],
)
def test_the_refusal_says_everything_there_is_to_fix(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], said: list[str]
) -> None:
    for variable, value in env.items():
        monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    for needed in said:
        assert needed in str(info.value)


def test_config_error_is_a_value_error_and_not_a_pydantic_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEYAPI_MAX_RPS", "-1")
    with pytest.raises(ValueError) as info:
        load_settings()
    assert type(info.value) is ConfigError
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8765",
        "http://127.0.0.1",
        "http://127.5.6.7:1",
        "http://localhost:9000/",
        "http://LOCALHOST:9000",
        "http://[::1]:8080",
        "https://api.keyapi.ai",
        "https://api.keyapi.ai:8443",
        "https://proxy.example.com/keyapi",
    ],
)
def test_https_anywhere_and_plain_http_on_loopback_are_accepted(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("KEYAPI_BASE_URL", url)
    assert load_settings().base_url == url.rstrip("/")


def test_keyword_overrides_take_precedence_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEYAPI_MAX_CREDITS_PER_CALL", "3")
    assert load_settings(max_credits_per_call=8).max_credits_per_call == 8


def test_keyword_overrides_are_validated_too() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(max_credits_per_call=-1)
    assert "KEYAPI_MAX_CREDITS_PER_CALL" in str(info.value)


def test_settings_has_no_side_effect_at_construction(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = tmp_path / "not-created"
    monkeypatch.setenv("KEYAPI_STATE_DIR", str(state))
    assert isinstance(load_settings(), Settings)
    assert not state.exists()


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", True),
        ("127.255.0.9", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("LocalHost", True),
        ("api.localhost", True),
        ("10.0.0.1", False),
        ("0.0.0.0", False),
        ("example.com", False),
        ("localhost.example.com", False),
        ("127.0.0.1.nip.io", False),
    ],
)
def test_is_loopback_host(host: str, expected: bool) -> None:
    assert is_loopback_host(host) is expected
