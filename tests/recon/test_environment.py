"""The environment recorded with every output, and what ``recon doctor`` prints."""

import platform
from importlib import metadata

import torch

import recon
from recon import environment
from recon.environment import DEPENDENCIES, RECORDED, doctor_lines, versions


def test_versions_lists_recon_python_and_the_recorded_packages():
    v = versions()
    assert list(v) == ["recon", "python", *RECORDED]
    assert v["recon"] == recon.__version__ and v["python"] == platform.python_version()
    assert v["torch"] == metadata.version("torch")
    assert v["numpy"] == metadata.version("numpy")
    assert set(RECORDED) <= set(DEPENDENCIES)


def test_a_missing_package_is_none():
    v = versions(("numpy", "surely-not-an-installed-package-xyz"))
    assert v == {"recon": recon.__version__, "python": platform.python_version(),
                 "numpy": metadata.version("numpy"), "surely-not-an-installed-package-xyz": None}


def _lines_with(monkeypatch, tcnn):
    backends = {"torch": (True, "pure PyTorch, cpu"), "tcnn": tcnn}
    monkeypatch.setattr(environment, "available_backends", lambda: backends)
    monkeypatch.setattr(environment, "versions", lambda packages: {
        "recon": "9.9", "python": "3.99.0", **{p: ("1.0" if p != "tinycudann" else None) for p in packages}})
    return doctor_lines()


def test_doctor_lines_list_every_dependency_and_say_what_is_missing(monkeypatch):
    lines = _lines_with(monkeypatch, (False, "no CUDA device"))
    assert lines[0].startswith("recon 9.9, Python 3.99.0 on ")
    assert lines[1:1 + len(DEPENDENCIES)] == [
        f"  {p:<11} {'not installed' if p == 'tinycudann' else '1.0'}" for p in DEPENDENCIES]
    assert f"CPU threads: {torch.get_num_threads()}" in lines


def test_doctor_lines_end_with_the_backends_and_the_tcnn_status(monkeypatch):
    lines = _lines_with(monkeypatch, (False, "tinycudann is not installed"))
    assert lines[-2:] == ["hash-grid backends: torch (always)",
                          "tiny-cuda-nn: unavailable — tinycudann is not installed"]
    lines = _lines_with(monkeypatch, (True, "tinycudann 2.0"))
    assert lines[-2:] == ["hash-grid backends: torch (always), tcnn", "tiny-cuda-nn: available"]


def test_doctor_lines_of_this_machine():
    lines = doctor_lines()
    assert any(line.split() == ["torch", metadata.version("torch")] for line in lines)
    cuda = [line for line in lines if line.startswith("CUDA")]
    if torch.cuda.is_available():
        assert len(cuda) == torch.cuda.device_count() and cuda[0].startswith("CUDA device 0: ")
    else:
        assert cuda == [f"CUDA: not available (torch CUDA build: {'yes' if torch.version.cuda else 'no'})"]
    assert lines[-1].startswith(("tiny-cuda-nn: available", "tiny-cuda-nn: unavailable — "))
    assert "hash-grid backends: torch (always)" in lines[-2]
