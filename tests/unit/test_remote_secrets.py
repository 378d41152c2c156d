"""Vault and AWS Secrets Manager token sources. No network: fakes of the hvac and boto3 client
objects (only the calls tierflow makes: `secrets.kv.v2.read_secret_version` and
`get_secret_value`) are injected through `tierflow._secrets.vault_client` / `aws_client`."""

from __future__ import annotations

import json
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from tierflow import _secrets
from tierflow._errors import SecretError
from tierflow._secrets import AwsSecret, VaultSecret, refresh

SECRET = "s3cr3t-token-from-the-vault"


class FakeVault:
    """The slice of `hvac.Client` tierflow uses; counts reads, fails on demand."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        self.reads: list[tuple[str, str]] = []
        self.error: Exception | None = None
        self.secrets = SimpleNamespace(kv=SimpleNamespace(v2=self))

    def read_secret_version(
        self, *, path: str, mount_point: str, raise_on_deleted_version: bool
    ) -> dict[str, Any]:
        assert raise_on_deleted_version is True
        self.reads.append((mount_point, path))
        if self.error is not None:
            raise self.error
        return {"data": {"data": dict(self.data), "metadata": {"version": 3}}}


class FakeSecretsManager:
    """The slice of boto3's `secretsmanager` client tierflow uses."""

    def __init__(self, secret_string: str) -> None:
        self.secret_string = secret_string
        self.calls: list[str] = []
        self.error: Exception | None = None

    def get_secret_value(self, *, SecretId: str) -> dict[str, Any]:  # boto3's argument name
        self.calls.append(SecretId)
        if self.error is not None:
            raise self.error
        return {"ARN": "arn:x", "Name": SecretId, "SecretString": self.secret_string}


@pytest.fixture
def vault(monkeypatch: pytest.MonkeyPatch) -> FakeVault:
    fake = FakeVault({"token": SECRET, "other": "x"})
    made: list[VaultSecret] = []

    def factory(source: VaultSecret) -> FakeVault:
        made.append(source)
        return fake

    monkeypatch.setattr(_secrets, "vault_client", factory)
    return fake


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> FakeSecretsManager:
    fake = FakeSecretsManager(json.dumps({"token": SECRET}))
    monkeypatch.setattr(_secrets, "aws_client", lambda source: fake)
    return fake


def test_a_vault_secret_is_read_once_per_ttl_and_again_after_refresh(vault: FakeVault) -> None:
    source = VaultSecret(vault="influx/tierflow", mount="kv", ttl=timedelta(minutes=5))

    assert source.resolve() == SECRET
    assert source.resolve() == SECRET
    assert vault.reads == [("kv", "influx/tierflow")]
    vault.data["token"] = "rotated"
    assert source.resolve() == SECRET  # cached within the ttl
    refresh(source)  # what the engine does after a 401
    assert source.resolve() == "rotated"
    assert len(vault.reads) == 2


def test_a_zero_ttl_reads_every_time(vault: FakeVault) -> None:
    source = VaultSecret(vault="p", ttl=timedelta(0))
    source.resolve()
    source.resolve()
    assert len(vault.reads) == 2


@pytest.mark.parametrize(
    ("data", "message"),
    [({"other": "x"}, "is missing, empty or not a string"), ({"token": "  "}, "is missing")],
)
def test_a_vault_secret_without_the_key_is_refused(
    vault: FakeVault, data: dict[str, Any], message: str
) -> None:
    vault.data = data
    with pytest.raises(SecretError, match=message):
        VaultSecret(vault="p2", ttl=timedelta(0)).resolve()


def test_vault_errors_name_the_source_never_the_response(vault: FakeVault) -> None:
    vault.error = PermissionError(f"permission denied; response echoed {SECRET}")
    with pytest.raises(SecretError) as caught:
        VaultSecret(vault="p3", ttl=timedelta(0)).resolve()
    assert str(caught.value) == ("cannot read Vault secret secret/p3 key token: PermissionError")
    assert SECRET not in str(caught.value)


def test_an_aws_json_secret_and_a_plain_one(aws: FakeSecretsManager) -> None:
    assert AwsSecret(aws_secret="prod/influx", key="token", ttl=timedelta(0)).resolve() == SECRET
    aws.secret_string = "plain-value\n"
    assert AwsSecret(aws_secret="prod/plain", ttl=timedelta(0)).resolve() == "plain-value"
    assert aws.calls == ["prod/influx", "prod/plain"]


def test_aws_errors_and_bad_documents(aws: FakeSecretsManager) -> None:
    aws.secret_string = "not json"
    with pytest.raises(SecretError, match="is not a JSON object"):
        AwsSecret(aws_secret="a", key="token", ttl=timedelta(0)).resolve()
    aws.error = RuntimeError(SECRET)
    with pytest.raises(SecretError) as caught:
        AwsSecret(aws_secret="b", ttl=timedelta(0)).resolve()
    assert str(caught.value) == "cannot read AWS secret b: RuntimeError"


def test_without_the_extra_installed_the_error_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import importlib

    real = importlib.import_module

    def missing(name: str, *args: Any) -> Any:
        if name in {"hvac", "boto3"}:
            raise ImportError(name)
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", missing)
    with pytest.raises(SecretError, match=r"pip install 'tierflow\[vault\]'"):
        VaultSecret(vault="x", ttl=timedelta(0)).resolve()
    with pytest.raises(SecretError, match=r"pip install 'tierflow\[aws\]'"):
        AwsSecret(aws_secret="x", ttl=timedelta(0)).resolve()
