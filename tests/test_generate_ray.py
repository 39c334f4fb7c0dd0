"""The Ray backend with the tiny model: the driver killed and rerun with a worker killed mid-shard, vLLM actors
on a local instance sized to their requests, the resource check, and `ray job submit` against a started
cluster followed by a rerun with one λ more."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from generate.config import GenerateConfig
from generate.runner import Generator
from generate.shards import read_manifest
from mixsd.run_format import read_rows
from tests import processes
from tests.generate_helpers import cli_flags

pytest.importorskip("ray")
ROOT = Path(__file__).resolve().parent.parent


def settings(model, corpus, out, **overrides) -> dict:
    return (
        dict(
            model=str(model),
            corpus=str(corpus / "train.jsonl"),
            out=str(out),
            lam=[0.5],
            temperature=1.0,
            max_new_tokens=12,
            shard_size=8,
            backend="hf",
            dtype="float32",
            progress=False,
        )
        | overrides
    )


@pytest.fixture(scope="module")
def local_runs(tiny_model_dir, kgfact_small, tmp_path_factory):
    """The local reference: λ 0.5 and 0.3 (one job, one engine)."""
    out = tmp_path_factory.mktemp("local")
    return Generator(GenerateConfig(**settings(tiny_model_dir, kgfact_small, out, lam=[0.5, 0.3]))).run_all()


LOGPROBS = ("expert_logprobs", "naive_logprobs")


KILL_SETTINGS = dict(max_new_tokens=24, shard_size=4)  # 23 small shards: time to kill something mid-run


@pytest.fixture(scope="module")
def local_small_shards(tiny_model_dir, kgfact_small, tmp_path_factory):
    out = tmp_path_factory.mktemp("local-small")
    (run,) = Generator(GenerateConfig(**settings(tiny_model_dir, kgfact_small, out, **KILL_SETTINGS))).run_all()
    return run


def _same_rows(ours: list[dict], theirs: list[dict]) -> None:
    """Identical rows (ids, targets, sources, flags), log-probabilities within 1e-4: a Ray actor runs torch
    with its own thread count, and a different summation order moves float32 values in the last bits."""
    assert len(ours) == len(theirs) == 90
    assert len({r["example_id"] for r in ours}) == 90
    for a, b in zip(ours, theirs):
        assert {k: v for k, v in a.items() if k not in LOGPROBS} == {k: v for k, v in b.items() if k not in LOGPROBS}
        for key in LOGPROBS:
            assert a[key] == pytest.approx(b[key], abs=1e-4)


def _same_shards(ray_dir: Path, local_dir: Path) -> None:
    ours, theirs = read_manifest(ray_dir), read_manifest(local_dir)
    assert ours["complete"] and ours["config_hash"] == theirs["config_hash"] and ray_dir.name == local_dir.name
    assert [(s["file"], s["rows"]) for s in ours["shards"]] == [(s["file"], s["rows"]) for s in theirs["shards"]]
    _same_rows(read_rows(ray_dir), read_rows(local_dir))


def _cli(args: list[str], cluster: Cluster | None = None) -> processes.ModuleProcess:
    """`python -m generate ARGS`, joining `cluster` if given (else it starts its own local Ray instance)."""
    if cluster is None:
        return processes.start("generate", args, merge_output=True)
    return processes.start("generate", args + ["--ray_address", cluster.address], cluster.env, merge_output=True)


def _finish(process: processes.ModuleProcess, timeout: float = 600) -> str:
    """Wait for the end; the whole output."""
    process.finish(timeout)
    return process.stdout


def _wait_for(process: processes.ModuleProcess, predicate, timeout: float = 300) -> list[str]:
    """Read the process's lines until `predicate(lines)` holds."""
    lines, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.readline(max(deadline - time.monotonic(), 0.1))
        if not line:
            break
        lines.append(line)
        if predicate(lines):
            return lines
    raise AssertionError("condition not reached:\n" + "".join(lines[-40:]))


def test_killed_driver_resumes_and_a_killed_worker_is_replaced(
    tiny_model_dir, kgfact_small, local_small_shards, cluster, tmp_path
):
    """The driver killed mid-run, then the same command again, in which a worker is killed mid-shard: the
    rerun reuses what the first run wrote, redoes the dead worker's shard, and the rows equal a local run."""
    config = settings(tiny_model_dir, kgfact_small, tmp_path, **KILL_SETTINGS)
    args = cli_flags(config) + ["--num_workers", "2"]
    process = _cli(args, cluster)
    try:
        _wait_for(process, lambda ls: sum("train-0" in line for line in ls) >= 3)
    finally:
        process.kill_group()  # the driver: the cluster ends the actors it owned
    run_dir = Path(tmp_path) / local_small_shards.name
    partial = read_manifest(run_dir)
    assert not partial["complete"] and 3 <= len(partial["shards"]) < 23

    again = _cli(args, cluster)
    try:
        lines = _wait_for(again, lambda ls: sum("is pid" in line for line in ls) == 2)
        victim = int(next(line for line in lines if "worker 1 is pid" in line).split()[-1])
        _wait_for(again, lambda ls: any("train-0" in line for line in ls))
        os.kill(victim, signal.SIGKILL)
    finally:
        rest = _finish(again)
    assert again.returncode == 0, rest[-3000:]
    assert "worker 1 died during shard" in rest
    manifest = read_manifest(run_dir)
    assert manifest["complete"] and set(manifest["reused"]["shards"]) >= {s["file"] for s in partial["shards"]}
    _same_shards(run_dir, local_small_shards)


@pytest.mark.vllm
def test_vllm_workers_on_a_local_instance_sized_to_their_requests_match_the_reference(
    tiny_model_dir, kgfact_small, tmp_path
):
    """Two actors, each with its own in-process vLLM engine and the paired processor, on the CLI's own local
    Ray instance: at temperature 0 in float32 their targets equal the transformers reference backend's. Each
    asks for 1.5 CPUs on this 2-core machine, so the instance must be sized to the requests (3 CPUs): once it
    had one CPU per worker, and a worker asking for more waited forever."""
    pytest.importorskip("vllm")
    common = settings(tiny_model_dir, kgfact_small, tmp_path / "x", lam=[0.5], temperature=0.0, shard_size=45)
    (local,) = Generator(GenerateConfig(**common | {"out": str(tmp_path / "local")})).run_all()
    vllm_settings = {
        "out": str(tmp_path / "ray"),
        "backend": "vllm",
        "max_model_len": 256,
        "max_num_seqs": 32,
        "kv_cache_gib": 0.03,
        "enforce_eager": "true",
    }
    process = _cli(
        cli_flags(common | vllm_settings) + ["--ray", "true", "--num_workers", "2", "--cpus_per_worker", "1.5"]
    )
    output = _finish(process, timeout=900)
    assert process.returncode == 0, output[-3000:]
    (run_dir,) = (tmp_path / "ray").glob("mixsd-lam0.5-*")  # another name: the backend is part of the settings
    manifest = read_manifest(run_dir)
    assert {s["written_by"]["worker"] for s in manifest["shards"]} == {0, 1}  # both engines served
    ours, theirs = read_rows(run_dir), read_rows(local)
    assert [(r["example_id"], r["target_ids"], r["source"]) for r in ours] == [
        (r["example_id"], r["target_ids"], r["source"]) for r in theirs
    ]


def test_workers_no_node_can_host_are_refused_before_they_wait_forever(capsys):
    from generate.ray_runner import RayResourceError, check_resources, local_cpus

    config = GenerateConfig(model="m", corpus="c.jsonl", out="o", num_workers=2, cpus_per_worker=1.5)
    assert local_cpus(config) == 3
    check_resources([{"CPU": 3.0}], config, on_cluster=False)  # fits: nothing said
    with pytest.raises(RayResourceError, match=r"CPU 1.5, GPU 0 .*the most on one node: CPU 1, GPU 0"):
        check_resources([{"CPU": 1.0}, {"CPU": 1.0}], config, on_cluster=False)  # 2 CPUs, but on two nodes
    gpu_config = GenerateConfig(model="m", corpus="c.jsonl", out="o", gpus_per_worker=1)
    check_resources([{"CPU": 8.0}, {"CPU": 1.0, "GPU": 1.0}], gpu_config, on_cluster=False)
    with pytest.raises(RayResourceError, match=r"--gpus_per_worker"):
        check_resources([{"CPU": 2.0}], gpu_config, on_cluster=False)
    check_resources([{"CPU": 2.0}], gpu_config, on_cluster=True)  # a cluster's autoscaler may still add a GPU node
    assert "wait until the autoscaler" in capsys.readouterr().out


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for_dashboard(url: str, head: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert head.poll() is None, head.communicate()[0][-3000:]
        try:
            with urllib.request.urlopen(f"{url}/api/version", timeout=5):
                return
        except OSError:
            time.sleep(1)
    raise AssertionError(f"no Ray dashboard at {url} after {timeout} s")


@dataclass(frozen=True)
class Cluster:
    address: str  # the GCS address drivers join with --ray_address
    dashboard: str  # the job server's URL
    env: dict[str, str]  # the environment its drivers and `ray` commands run with


@pytest.fixture(scope="module")
def cluster():
    """A Ray cluster (head node only, 2 CPUs) that the tests' drivers join, as jobs on a real cluster do:
    starting a local instance per run would cost every test 5 s of Ray start and 3 s of shutdown.
    (`test_vllm_workers_on_a_local_instance_…` keeps the CLI's own local instance.)"""
    bin_dir = Path(sys.executable).parent
    # The interpreter running the tests is the one the cluster's `python` must be (as on a real cluster,
    # where every node has the project installed). Auth off: a throwaway cluster on the loopback only.
    env = os.environ | {"PATH": f"{bin_dir}:{os.environ['PATH']}", "RAY_AUTH_MODE": "disabled"}
    port, url = _free_port(), f"http://127.0.0.1:{_free_port()}"
    # `--block` keeps the head in the foreground: stopping it stops this cluster only (`ray stop` would stop
    # every Ray cluster of the user on this machine). Its own temp dir (short: it holds Unix sockets) keeps
    # its address file away from other `ray.init()` calls, which would otherwise try to join it.
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    head = subprocess.Popen(
        [
            str(bin_dir / "ray"),
            "start",
            "--head",
            "--block",
            "--num-cpus",
            "2",
            "--disable-usage-stats",
            "--port",
            str(port),
            "--dashboard-host",
            "127.0.0.1",
            "--dashboard-port",
            url.rsplit(":", 1)[1],
            "--temp-dir",
            temp_dir,
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        _wait_for_dashboard(url, head)
        yield Cluster(f"127.0.0.1:{port}", url, env)
    finally:
        head.send_signal(signal.SIGTERM)  # the head stops the processes it started
        try:
            head.wait(timeout=60)
        finally:
            with contextlib.suppress(ProcessLookupError):  # whatever it left behind
                os.killpg(head.pid, signal.SIGKILL)
            shutil.rmtree(temp_dir, ignore_errors=True)


def test_ray_job_submit_writes_the_same_rows_and_a_rerun_adds_only_a_new_lambda(
    tiny_model_dir, kgfact_small, local_runs, cluster, tmp_path, monkeypatch
):
    """`ray job submit -- python -m generate … --ray_address auto` against a started cluster: the project is
    uploaded as the job's working directory, the driver joins the cluster, and the runs hold the same rows as
    the local runs, written by both workers, the λ 0.3 shards by engines that had served λ 0.5. Then, from
    this process, the same job with one λ more: the finished runs are skipped and left untouched, and the new
    λ gets its own run directory."""
    import ray

    from generate.ray_runner import run_with_ray

    config = settings(tiny_model_dir, kgfact_small, tmp_path, lam=[0.5, 0.3])
    submit = [
        str(Path(sys.executable).parent / "ray"),
        "job",
        "submit",
        "--address",
        cluster.dashboard,
        "--working-dir",
        str(ROOT),
        "--",
        "python",
        "-m",
        "generate",
        *cli_flags(config),
        "--ray_address",
        "auto",
        "--num_workers",
        "2",
    ]
    done = subprocess.run(submit, env=cluster.env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert "succeeded" in done.stdout + done.stderr
    runs = [tmp_path / local_dir.name for local_dir in local_runs]
    for ray_dir, local_dir in zip(runs, local_runs):
        _same_shards(ray_dir, local_dir)
    assert read_manifest(runs[1])["reused"]["engines"]  # the λ 0.3 shards came from engines that had served λ 0.5
    assert {s["written_by"]["worker"] for m in map(read_manifest, runs) for s in m["shards"]} == {0, 1}

    stamps = [p.stat().st_mtime_ns for r in runs for p in sorted(r.iterdir())]
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    try:
        ray.init(address=cluster.address, log_to_driver=False)
        more = GenerateConfig(**config | {"lam": [0.5, 0.3, 0.7]}, ray=True, num_workers=2)
        *again, new = run_with_ray(more)
    finally:
        ray.shutdown()
    assert again == runs and new not in runs and read_manifest(new)["complete"]
    assert [p.stat().st_mtime_ns for r in runs for p in sorted(r.iterdir())] == stamps  # nothing rewritten
