"""A secured etcd: TLS with client certificates, and user/password authentication."""

from __future__ import annotations

import pathlib
import uuid
from collections.abc import Iterator

import pytest

from tests.conftest import run_pgquartz
from tests.support.etcdcluster import EtcdCluster, running_etcd

JOB = (
    "steps:\n  s:\n    commands:\n      - inline: 'echo \"$PGQ_LOCK_REVISION\" > revision'\n"
    "      - inline: 'echo \"${GRPC_VERBOSITY-unset}\" > verbosity'\n"
)


@pytest.fixture(scope="module")
def tls_etcd() -> Iterator[EtcdCluster]:
    with running_etcd(1, tls=True) as etcd:
        yield etcd


@pytest.fixture(scope="module")
def auth_etcd() -> Iterator[tuple[EtcdCluster, str]]:
    password = f"pw-{uuid.uuid4().hex}"
    with running_etcd(1) as etcd:
        etcd.etcdctl("user", "add", "root", f"--new-user-password={password}", "--interactive=false")
        etcd.etcdctl("auth", "enable")
        yield etcd, password


def test_tls_with_a_client_certificate(
    write_job: object, tmp_path: pathlib.Path, tls_etcd: EtcdCluster
) -> None:
    tls = tls_etcd.members[0].tls
    assert tls is not None
    (tmp_path / "job.yml").write_text(
        f"etcdConfig:\n  endpoints: ['https://{tls_etcd.endpoints[0]}']\n  lockKey: secure\n"
        f"  caFile: {tls['ca']}\n  certFile: {tls['client_cert']}\n  keyFile: {tls['client_key']}\n" + JOB
    )
    result = run_pgquartz("-c", "job.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert int((tmp_path / "revision").read_text()) > 0
    assert (tmp_path / "verbosity").read_text() == "unset\n"  # the runner's gRPC setting is its own


def test_tls_without_the_ca_is_refused(tmp_path: pathlib.Path, tls_etcd: EtcdCluster) -> None:
    (tmp_path / "job.yml").write_text(
        f"timeout: 10s\netcdConfig:\n  endpoints: ['https://{tls_etcd.endpoints[0]}']\n  lockKey: secure\n"
        + JOB
    )
    result = run_pgquartz("-c", "job.yml", cwd=tmp_path)
    assert result.returncode == 4
    assert "its TLS certificate does not verify" in result.stderr  # refused at once, not retried
    assert "ssl_transport_security" not in result.stderr  # gRPC's own log lines stay quiet
    assert not (tmp_path / "revision").exists()


def test_user_and_password_from_the_environment(
    tmp_path: pathlib.Path, auth_etcd: tuple[EtcdCluster, str]
) -> None:
    etcd, password = auth_etcd
    (tmp_path / "job.yml").write_text(
        f"etcdConfig:\n  endpoints: {etcd.endpoints}\n  lockKey: authed\n  username: root\n"
        "  passwordEnv: ETCD_PASSWORD\n" + JOB
    )
    good = run_pgquartz("-c", "job.yml", "-d", cwd=tmp_path, env={"ETCD_PASSWORD": password})
    assert good.returncode == 0, good.stdout + good.stderr
    wrong = f"wrong-{uuid.uuid4().hex}"
    bad = run_pgquartz("-c", "job.yml", "-d", cwd=tmp_path, env={"ETCD_PASSWORD": wrong})
    assert bad.returncode == 4
    assert "etcd authentication as 'root' failed" in bad.stderr
    assert password not in good.stdout + good.stderr and wrong not in bad.stdout + bad.stderr
