"""The operator benchmark: N PgQuartzJobs reconciled by ``pgquartz-operator`` against the emulated API.

The API (kmock's emulator, tests/support/kube.py) runs in its own process, as an
API server would, and the operator is the real ``pgquartz-operator`` process
pointed at it through a kubeconfig, so its RSS and CPU time are its own.

Baseline, measured in the same run against a fresh emulator: a plain loop that
renders each resource and creates its ConfigMap and CronJob with the same
client, one after another: the API's own cost for the same objects, without
kopf's watching, finalizers, status patches and events.
"""

from __future__ import annotations

import asyncio
import os
import pathlib
import signal
import subprocess
import time
from typing import Any

import aiohttp
import kubernetes.client
import psutil

from pgquartz.operator import kubeapi, manifests, status
from tests.support.kube import OPERATOR, emulator_process, write_kubeconfig
from tests.support.processes import free_port

NAMESPACE = "db"
JOBS = f"/apis/pgquartz.io/v1alpha1/namespaces/{NAMESPACE}/pgquartzjobs"
CRON_JOBS = f"/apis/batch/v1/namespaces/{NAMESPACE}/cronjobs"
JOBS_PATH = f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs"
SPEC = {"schedule": "15 23 * * *", "job": {"steps": {"s": {"commands": [{"inline": "true"}]}}}}


def body(index: int) -> dict[str, Any]:
    return {
        "apiVersion": "pgquartz.io/v1alpha1",
        "kind": "PgQuartzJob",
        "metadata": {"name": f"job-{index:04d}", "namespace": NAMESPACE},
        "spec": SPEC,
    }


async def _create_resources(url: str, count: int) -> None:
    async with aiohttp.ClientSession() as session:

        async def post(index: int) -> None:
            async with session.post(url + JOBS, json=body(index)) as response:
                response.raise_for_status()

        for start in range(0, count, 50):
            await asyncio.gather(*(post(index) for index in range(start, min(count, start + 50))))


async def _count(session: aiohttp.ClientSession, url: str, path: str) -> int:
    async with session.get(url + path) as response:
        return len((await response.json()).get("items", []))


def unrelated(index: int) -> tuple[str, dict[str, Any]]:
    """Another team's Job or CronJob: the operator must not pay for it."""
    template = {
        "metadata": {"labels": {"app": "web-report"}},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "report", "image": "registry.example/report:1.0", "args": ["--all"]}],
        },
    }
    metadata = {"name": f"web-{index:05d}", "namespace": NAMESPACE, "labels": {"app": "web-report"}}
    if index % 2:
        return JOBS_PATH, {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": metadata,
            "spec": {"template": template},
        }
    spec = {"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": template}}}
    return CRON_JOBS, {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": metadata, "spec": spec}


async def _create_unrelated(url: str, count: int) -> None:
    async with aiohttp.ClientSession() as session:

        async def post(index: int) -> None:
            path, obj = unrelated(index)
            async with session.post(url + path, json=obj) as response:
                response.raise_for_status()

        for start in range(0, count, 50):
            await asyncio.gather(*(post(index) for index in range(start, min(count, start + 50))))


def baseline(count: int) -> float:
    """Seconds for a plain loop to render and create every resource's ConfigMap and CronJob."""
    with emulator_process() as (_, url):
        asyncio.run(_create_resources(url, count))
        store = kubeapi.KubernetesStore(kubernetes.client.Configuration(host=url))
        started = time.perf_counter()
        for index in range(count):
            obj = body(index)
            obj["metadata"]["uid"] = f"uid-{index}"
            rendered = manifests.render(obj, defaults=manifests.Defaults())
            store.create("ConfigMap", NAMESPACE, rendered.config_map)
            store.create("CronJob", NAMESPACE, rendered.cron_job)
        return time.perf_counter() - started


def operator(count: int, work: pathlib.Path, *, others: int = 0) -> dict[str, float]:
    """Start ``pgquartz-operator`` on N existing resources (and ``others`` unrelated Jobs and
    CronJobs); time until every CronJob of ours exists, and its RSS and CPU once every status is Ready."""
    figures: dict[str, float] = {}
    with emulator_process() as (emulator, url):
        asyncio.run(_create_unrelated(url, others))
        asyncio.run(_create_resources(url, count))
        kubeconfig = write_kubeconfig(url, work / "kubeconfig", namespace=NAMESPACE)
        environment = {
            **os.environ,
            "KUBECONFIG": str(kubeconfig),
            "PGQUARTZ_LIVENESS_PORT": str(free_port()),
            "PGQUARTZ_METRICS_PORT": str(free_port()),
        }
        with (work / "operator.log").open("wb") as log:
            started = time.perf_counter()
            process = subprocess.Popen([str(OPERATOR)], env=environment, stdout=log, stderr=subprocess.STDOUT)
            try:
                figures.update(asyncio.run(_watch(url, count, started, process)))
                watched = psutil.Process(process.pid)
                cpu = watched.cpu_times()
                figures["operator_cpu"] = cpu.user + cpu.system
                figures["operator_peak_rss_mb"] = _peak_rss_mb(process.pid)
                emulator_cpu = psutil.Process(emulator.pid).cpu_times()
                figures["emulator_cpu"] = emulator_cpu.user + emulator_cpu.system
                stopping = time.perf_counter()
                process.send_signal(signal.SIGTERM)
                figures["exit_code"] = process.wait(timeout=60)
                figures["stop"] = time.perf_counter() - stopping
            finally:
                if process.poll() is None:
                    process.kill()
                    process.wait()
    return figures


async def _watch(url: str, count: int, started: float, process: subprocess.Popen[bytes]) -> dict[str, float]:
    first = None
    async with aiohttp.ClientSession() as session:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"pgquartz-operator exited with {process.returncode}")
            present = await _count(session, url, CRON_JOBS + f"?labelSelector={manifests.LABEL_NAME}")
            if present and first is None:
                first = time.perf_counter() - started
            if present >= count:
                break
            await asyncio.sleep(0.25)
        every = time.perf_counter() - started
        # Reconciled means reported too: the CPU is read once every resource's status says Ready.
        while await _ready(session, url) < count:
            if process.poll() is not None:
                raise RuntimeError(f"pgquartz-operator exited with {process.returncode}")
            await asyncio.sleep(0.25)
        return {"all": every, "first": first or 0.0, "ready": time.perf_counter() - started}


async def _ready(session: aiohttp.ClientSession, url: str) -> int:
    async with session.get(url + JOBS) as response:
        items = (await response.json()).get("items", [])
    return sum(
        status.find(item.get("status", {}).get("conditions", []), status.READY).get("status") == "True"
        for item in items
    )


def _peak_rss_mb(pid: int) -> float:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def bench(work: pathlib.Path, runs: int) -> None:
    count = int(os.environ.get("PGQ_BENCH_OPERATOR_COUNT", "1000"))
    others = int(os.environ.get("PGQ_BENCH_UNRELATED_COUNT", "10000"))
    floor = baseline(count)
    # Plain and crowded runs alternate (two of each), so a noisy neighbour slows both alike; the
    # figures are each side's least CPU and RSS.
    plain_runs, crowded_runs = [], []
    for _ in range(2):
        plain_runs.append(operator(count, work))
        crowded_runs.append(operator(count, work, others=others))
    figures = min(plain_runs, key=lambda run: run["operator_cpu"])
    print(
        f"{'operator':<10} {count} PgQuartzJobs: every CronJob present {figures['all']:.1f}s after"
        f" pgquartz-operator started (first after {figures['first']:.1f}s, every status Ready after"
        f" {figures['ready']:.1f}s) vs a plain create loop"
        f" {floor:.1f}s → {figures['all'] / floor:.2f}×"
    )
    cpu = figures["operator_cpu"]
    fewer = max(1, count // 10)
    slope = (cpu - operator(fewer, work)["operator_cpu"]) / (count - fewer) if count > fewer else 0.0
    print(
        f"{'':<10} operator CPU {cpu:.1f}s ({cpu / count * 1000:.1f} ms per resource; marginal"
        f" {slope * 1000:.1f} ms, from a run with {fewer}), emulator CPU {figures['emulator_cpu']:.1f}s;"
        f" operator peak RSS {figures['operator_peak_rss_mb']:.0f} MB; SIGTERM → exit"
        f" {figures['exit_code']:.0f} in {figures['stop']:.1f}s"
    )
    crowded_cpu = min(run["operator_cpu"] for run in crowded_runs)
    crowded_rss = min(run["operator_peak_rss_mb"] for run in crowded_runs)
    plain_rss = min(run["operator_peak_rss_mb"] for run in plain_runs)
    print(
        f"{'':<10} with {others} unrelated Jobs and CronJobs in the namespace: operator CPU"
        f" {crowded_cpu:.1f}s vs {cpu:.1f}s without ({crowded_cpu / cpu:.2f}×),"
        f" peak RSS {crowded_rss:.0f} MB vs {plain_rss:.0f} MB"
        f" ({crowded_rss / plain_rss:.2f}×; target: 1.00× both; least of two alternating runs each)"
    )
