"""The Ray backend with the tiny model: a driver killed on a started cluster, the job resubmitted with `ray job
submit` and one λ more while a worker is killed mid-shard; vLLM actors on a local instance sized to their
requests; the resource check."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from generate.config import GenerateConfig
from generate.runner import Generator
from generate.shards import read_manifest
from mixsd.run_format import read_rows, shard_name
from tests import processes
from tests.generate_helpers import cli_flags
from tests.processes import EVERY_CORE

pytest.importorskip("ray")
ROOT = Path(__file__).resolve().parent.parent


def settings(model, corpus: Path, out, **overrides) -> dict:
    """`python -m generate` settings for a corpus file (JSONL)."""
    return (
        dict(
            model=str(model),
            corpus=str(corpus),
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


LOGPROBS = ("expert_logprobs", "naive_logprobs")


KILL_SETTINGS = dict(shard_size=4)  # 23 small shards per λ: work left to kill something in the middle of


@pytest.fixture(scope="module")
def local_runs(tiny_model_dir, kgfact_small, tmp_path_factory):
    """The local reference: λ 0.5, 0.3 and 0.7 (one job, one engine)."""
    out = tmp_path_factory.mktemp("local")
    config = settings(tiny_model_dir, kgfact_small / "train.jsonl", out, lam=[0.5, 0.3, 0.7], **KILL_SETTINGS)
    return Generator(GenerateConfig(**config)).run_all()


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


@pytest.mark.vllm
@EVERY_CORE
def test_vllm_workers_on_a_local_instance_sized_to_their_requests_match_the_reference(
    tiny_model_dir, kgfact_few, tmp_path
):
    """Two actors, each with its own in-process vLLM engine and the paired processor, on the CLI's own local
    Ray instance: at temperature 0 in float32 their targets equal the transformers reference backend's. Each
    asks for 1.5 CPUs on this 2-core machine, so the instance must be sized to the requests (3 CPUs): once it
    had one CPU per worker, and a worker asking for more waited forever."""
    pytest.importorskip("vllm")
    common = settings(tiny_model_dir, kgfact_few, tmp_path / "x", lam=[0.5], temperature=0.0, shard_size=8)
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
    assert len(ours) == 16 and [(r["example_id"], r["target_ids"], r["source"]) for r in ours] == [
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


def _wait_for_http(url: str, head: subprocess.Popen, timeout: float = 120) -> None:
    """Until a server answers at `url` (any HTTP status: it is up), while the head runs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert head.poll() is None, head.communicate()[0][-3000:]
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.2)  # polled often: the test waits on nothing else
    raise AssertionError(f"nothing answers at {url} after {timeout} s")


@dataclass(frozen=True)
class Cluster:
    address: str  # the GCS address drivers join with --ray_address
    dashboard: str  # the job server's URL
    env: dict[str, str]  # the environment its drivers and `ray` commands run with


@pytest.fixture(scope="module")
def cluster():
    """A Ray cluster (head node only, 2 CPUs, a job server) that drivers join, as jobs on a real cluster do,
    and that outlives each of them. (`test_vllm_workers_on_a_local_instance_…` keeps the CLI's own local
    instance.)"""
    bin_dir = Path(sys.executable).parent
    # The interpreter running the tests is the one the cluster's `python` must be (as on a real cluster,
    # where every node has the project installed). Auth off: a throwaway cluster on the loopback only.
    env = os.environ | {"PATH": f"{bin_dir}:{os.environ['PATH']}", "RAY_AUTH_MODE": "disabled"}
    port, url, agent_port = _free_port(), f"http://127.0.0.1:{_free_port()}", _free_port()
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
            "--dashboard-agent-listen-port",
            str(agent_port),
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
        _wait_for_http(f"{url}/api/version", head)
        # Jobs are submitted through the node's dashboard agent, which starts on its own time: with the other
        # test worker busy, the job server refused a job ("No available agent"; it waits 10 s for one).
        _wait_for_http(f"http://127.0.0.1:{agent_port}/", head)
        yield Cluster(f"127.0.0.1:{port}", url, env)
    finally:
        head.send_signal(signal.SIGTERM)  # the head stops the processes it started
        try:
            head.wait(timeout=60)
        finally:
            with contextlib.suppress(ProcessLookupError):  # whatever it left behind
                os.killpg(head.pid, signal.SIGKILL)
            shutil.rmtree(temp_dir, ignore_errors=True)


def _stamps(run_dir: Path) -> list[int]:
    return [p.stat().st_mtime_ns for p in sorted(run_dir.iterdir())]


@EVERY_CORE
def test_a_killed_job_resubmitted_resumes_replaces_a_killed_worker_and_adds_a_new_lambda(
    tiny_model_dir, kgfact_small, local_runs, cluster, tmp_path
):
    """A driver joined to a cluster is killed once λ 0.5's run is finished and λ 0.3's begun; then the job is
    submitted again with one λ more (`ray job submit -- python -m generate … --ray_address auto`, the project
    uploaded as its working directory), and a worker is killed mid-shard. The finished run is left untouched,
    λ 0.3 reuses what the first driver wrote, the dead worker's shard is redone by another worker (a fresh
    actor takes its place), λ 0.7 gets its own run directory from engines that had served λ 0.3, and every
    run's rows equal the local runs'.
    (One test, not three: each round of actor starts costs ~8 s of imports on two cores.)"""
    config = settings(tiny_model_dir, kgfact_small / "train.jsonl", tmp_path, lam=[0.5, 0.3], **KILL_SETTINGS)
    finished, partial, new = (tmp_path / local.name for local in local_runs)
    first = _cli(cli_flags(config) + ["--num_workers", "2"], cluster)
    try:
        _wait_for(
            first,
            lambda ls: (
                any(line.startswith(f"{finished}: 90 rows") for line in ls)
                and any(f"{partial.name}/train-" in line for line in ls)
            ),
        )
    finally:
        first.kill_group()  # the driver: the cluster ends the actors it owned
    assert read_manifest(finished)["complete"]
    begun = read_manifest(partial)
    assert not begun["complete"] and 1 <= len(begun["shards"]) < 23
    stamps = _stamps(finished)

    more = config | {"lam": [0.5, 0.3, 0.7]}
    job = ["--", "python", "-m", "generate", *cli_flags(more), "--ray_address", "auto", "--num_workers", "2"]
    submit = processes.start(  # `ray job submit …`: the `ray` command's own module, run as the command runs it
        "ray.scripts.scripts",
        ["job", "submit", "--address", cluster.dashboard, "--working-dir", str(ROOT), *job],
        cluster.env,
        merge_output=True,
    )
    try:
        lines = _wait_for(submit, lambda ls: sum("is pid" in line for line in ls) == 2)
        victim = int(next(line for line in lines if "worker 1 is pid" in line).split()[-1])
        _wait_for(submit, lambda ls: any("ray: [" in line for line in ls))
        os.kill(victim, signal.SIGKILL)
    finally:
        output = _finish(submit)
    assert submit.returncode == 0 and "succeeded" in output, output[-3000:]
    assert f"{finished}: complete, nothing to do" in output and _stamps(finished) == stamps
    died = re.search(r"worker 1 died during shard (\d+) of run (\d+)", output)
    assert died, output[-3000:]
    resumed = read_manifest(partial)
    assert resumed["complete"] and set(resumed["reused"]["shards"]) >= {s["file"] for s in begun["shards"]}
    assert read_manifest(new)["reused"]["engines"]  # λ 0.7's shards came from engines that had served λ 0.3
    redone_in = (finished, partial, new)[int(died.group(2))]  # the job's runs in λ order
    redone = {s["file"]: s["written_by"]["worker"] for s in read_manifest(redone_in)["shards"]}
    assert redone[shard_name(int(died.group(1)))] != 1  # the dead worker's shard, written by another
    for ray_dir, local_dir in zip((finished, partial, new), local_runs):
        _same_shards(ray_dir, local_dir)
