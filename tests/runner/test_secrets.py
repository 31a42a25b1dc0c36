import pathlib

import pytest

from pgquartz.runner import secrets


def test_a_file_secret_loses_its_trailing_newline(tmp_path: pathlib.Path) -> None:
    (tmp_path / "pw").write_text("s3cret\n")
    assert secrets.read(file=str(tmp_path / "pw"), env=None, what="password") == "s3cret"


def test_an_environment_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGQ_TEST_SECRET", "from-env")
    assert secrets.read(file=None, env="PGQ_TEST_SECRET", what="password") == "from-env"


def test_missing_sources_say_which_without_a_value(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PGQ_TEST_SECRET", raising=False)
    with pytest.raises(secrets.SecretUnavailable, match=r"PGQ_TEST_SECRET \(etcd passwordEnv\) is not set"):
        secrets.read(file=None, env="PGQ_TEST_SECRET", what="etcd password")
    with pytest.raises(secrets.SecretUnavailable, match="cannot read the passwordFile"):
        secrets.read(file=str(tmp_path / "missing"), env=None, what="password")
    assert secrets.read(file=None, env=None, what="password") is None
