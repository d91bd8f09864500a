"""The Ray engine's network: a private Ray on the loopback only, a cluster joined by address, refusals."""

import csv
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from recon.campaign import engines
from recon.campaign.engines import RayEngine, _reachable, ray_missing
from recon.errors import ConfigError
from recon.simulation.campaign import simulate_campaign
from tests.micro import write_micro_system

ROOT = Path(__file__).resolve().parents[3]
needs_ray = pytest.mark.skipif(ray_missing() is not None, reason=f"the ray engine: {ray_missing()}")


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening() -> set[tuple[str, int]]:
    """(address, port) of every listening TCP socket on this machine, from /proc/net/tcp and tcp6."""
    found = set()
    for name, size in (("tcp", 4), ("tcp6", 16)):
        path = Path("/proc/net") / name
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A":  # LISTEN
                continue
            address, port = fields[1].split(":")
            raw = bytes.fromhex(address)
            words = b"".join(raw[i:i + 4][::-1] for i in range(0, size, 4))  # 32-bit words, little-endian
            family = socket.AF_INET if size == 4 else socket.AF_INET6
            found.add((socket.inet_ntop(family, words), int(port, 16)))
    return found


def _loopback(address: str) -> bool:
    return address.startswith("127.") or address in ("::1", "::ffff:127.0.0.1") or address.startswith(
        "::ffff:127.")


def test_listening_parser_sees_a_socket_and_its_address():
    if not Path("/proc/net/tcp").exists():
        pytest.skip("no /proc/net/tcp on this system")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        assert ("127.0.0.1", s.getsockname()[1]) in _listening()


def test_an_address_that_takes_no_connection_is_named_at_once():
    port = _closed_port()
    t0 = time.perf_counter()
    assert _reachable(f"127.0.0.1:{port}") == "Connection refused"
    assert _reachable(f"ray://127.0.0.1:{port}") == "Connection refused"
    assert time.perf_counter() - t0 < engines.REACH_TIMEOUT_S
    assert _reachable("auto") is None  # left to Ray


def test_unreachable_address_is_a_one_line_error_in_seconds():
    if ray_missing() is not None:
        pytest.skip(f"the ray engine: {ray_missing()}")
    port = _closed_port()
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match=rf"cannot reach the Ray cluster at 127.0.0.1:{port} \(Connection"):
        RayEngine(dict, workers=1, threads=1, address=f"127.0.0.1:{port}")
    assert time.perf_counter() - t0 < 5


def _one(*, value):
    return {"ok": True, "value": value}


@pytest.mark.slow
@needs_ray
def test_private_ray_listens_on_the_loopback_only():
    if not Path("/proc/net/tcp").exists():
        pytest.skip("no /proc/net/tcp on this system")
    before = _listening()
    engine = RayEngine(_one, workers=1, threads=1)
    try:
        engine.submit("a", {"value": 3})
        [(name, result)] = engine.wait()
        opened = _listening() - before
    finally:
        engine.close()
    assert name == "a" and result["ok"] and result["value"] == 3
    assert opened, "a running Ray listens somewhere"
    assert all(_loopback(address) for address, _ in opened), sorted(opened)


def _batch(shots: Path, out: Path, address: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "recon.cli", "batch", str(shots), "--out", str(out),
                           "--engine", "ray", "--address", address, "--quiet", "--pool-cache", "off"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
@needs_ray
def test_batch_joins_a_running_cluster_by_address_with_its_token(tmp_path):
    """`ray start --head` on the loopback, with token authentication: refused without it, fitted with it."""
    system = write_micro_system(tmp_path / "micro.toml")
    shots = tmp_path / "shots"
    simulate_campaign(system, "gaussian", shots, 1, seed=3, samples=2, step_mm=0.04, truth_voxel_mm=0.1)
    port = _closed_port()
    token = "0123456789abcdef" * 4
    base = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    base.update(RAY_USAGE_STATS_ENABLED="0", OMP_NUM_THREADS="1")
    head_env = {**base, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "token",
                "RAY_AUTH_TOKEN": token}
    temp = Path(f"/tmp/rt{port}")  # Ray's sockets need a short path
    head = subprocess.Popen([sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block",
                             f"--port={port}", "--num-cpus=1", "--num-gpus=0", "--include-dashboard=false",
                             "--disable-usage-stats", f"--temp-dir={temp}"],
                            env=head_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while _reachable(f"127.0.0.1:{port}") is not None:
            assert head.poll() is None and time.time() < deadline, "the Ray head did not start"
            time.sleep(0.5)
        assert all(_loopback(a) for a, p in _listening() if p == port)
        refused = _batch(shots, tmp_path / "no-token", f"127.0.0.1:{port}", base)
        assert refused.returncode != 0
        assert "asks for its token; export RAY_AUTH_MODE=token" in refused.stderr, refused.stderr[-2000:]
        joined = _batch(shots, tmp_path / "campaign", f"127.0.0.1:{port}",
                        {**base, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token})
        assert joined.returncode == 0, joined.stderr[-2000:]
        with open(tmp_path / "campaign" / "results.csv", newline="") as f:
            [row] = list(csv.DictReader(f))
        assert row["state"] == "done" and float(row["atoms"]) > 0
    finally:
        head.terminate()
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            head.kill()
    deadline = time.time() + 30  # `ray start --block` stops the processes it started
    while _reachable(f"127.0.0.1:{port}") is None and time.time() < deadline:
        time.sleep(0.5)
    shutil.rmtree(temp, ignore_errors=True)
    assert _reachable(f"127.0.0.1:{port}") is not None, "the Ray head outlived its test"
