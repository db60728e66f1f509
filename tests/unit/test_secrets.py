"""Stripe secrets have no default outside the local stack: the webhook endpoint and billing
refuse to start, naming the setting, until one is configured; the local stack (Makefile,
infra/stack.sh, docker compose, the tests) sets them from ``infra/local.env``."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml
from pydantic import SecretStr

from pipeline.settings import REPO_ROOT, Settings, SettingsError

LOCAL_ENV = REPO_ROOT / "infra" / "local.env"
SECRETS = ("GPUMETER_STRIPE_API_KEY", "GPUMETER_STRIPE_WEBHOOK_SECRET")


@pytest.fixture
def no_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment of a deployment that forgot to set them."""
    for var in SECRETS:
        monkeypatch.delenv(var, raising=False)


def test_stripe_secrets_have_no_default(no_secrets: None) -> None:
    s = Settings()
    assert s.stripe_webhook_secret.get_secret_value() == ""
    assert s.stripe_api_key.get_secret_value() == ""


def test_the_api_refuses_to_start_without_a_webhook_secret(no_secrets: None, tmp_path: Any) -> None:
    from pipeline.api import create_app

    for secret in ("", "   "):
        with pytest.raises(SettingsError, match="GPUMETER_STRIPE_WEBHOOK_SECRET"):
            create_app(Settings(stripe_webhook_secret=SecretStr(secret), out_dir=tmp_path))


def test_api_serve_exits_naming_the_setting(
    no_secrets: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import uvicorn

    from pipeline.cli import main

    started: list[Any] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: started.append(app))
    assert main(["api", "serve"]) == 2
    assert started == []
    err = capsys.readouterr().err
    assert "GPUMETER_STRIPE_WEBHOOK_SECRET" in err and "Traceback" not in err


def test_billing_refuses_to_start_without_an_api_key(no_secrets: None) -> None:
    from pipeline.bootstrap import stripe_gateway

    with pytest.raises(SettingsError, match="GPUMETER_STRIPE_API_KEY"):
        stripe_gateway(Settings())


def test_bill_exits_naming_the_setting_before_any_io(
    no_secrets: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from pipeline.cli import main

    monkeypatch.setenv("GPUMETER_CLICKHOUSE_PORT", "1")  # nothing listens: no I/O expected
    assert main(["bill", "--period", "2026-10"]) == 2
    assert "GPUMETER_STRIPE_API_KEY" in capsys.readouterr().err


def local_env() -> dict[str, str]:
    out = {}
    for line in LOCAL_ENV.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def test_the_local_stack_sets_both_from_infra_local_env() -> None:
    env = local_env()
    assert set(SECRETS) <= set(env) and all(env[v] for v in SECRETS)
    assert env["GPUMETER_STRIPE_API_KEY"].startswith("sk_test_")  # stripe-mock takes any
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert re.search(r"^include infra/local\.env$", makefile, re.M)
    assert all(re.search(rf"^export .*\b{v}\b", makefile, re.M) for v in SECRETS)
    stack = (REPO_ROOT / "infra" / "stack.sh").read_text()
    assert "infra/local.env" in stack
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    api = compose["services"]["api"]
    assert api["env_file"] == ["infra/local.env"]
    assert not set(SECRETS) & set(api["environment"])  # nothing overrides it with ""
