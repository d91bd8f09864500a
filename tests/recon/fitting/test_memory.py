"""Out-of-memory handling: which errors count as OOM, halving the batch, and freeing the CUDA cache."""

import pytest
import torch

from recon.errors import FitError
from recon.fitting.memory import free_cached_memory, is_out_of_memory, smaller_batch

# Messages torch raises when an allocation fails (CUDA; the CPU allocator on Linux; the
# CPU caching allocator).
CUDA_OOM = ("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.15 GiB total capacity; "
            "75.01 GiB already allocated)")
LINUX_CPU_OOM = ("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: "
                 "you tried to allocate 140737488355328 bytes. Error code 12 (Cannot allocate memory)")
CACHING_CPU_OOM = "C10 Out of Memory. Trying to allocate 1073741824 bytes"
# The CPU allocator's message where aligned malloc returns NULL (e.g. Windows).
WINDOWS_CPU_OOM = ("[enforce fail at alloc_cpu.cpp:114] data. DefaultCPUAllocator: not enough memory: "
                   "you tried to allocate 911360 bytes.")


@pytest.mark.parametrize("err", [
    torch.OutOfMemoryError(CUDA_OOM),
    torch.cuda.OutOfMemoryError("no message needed: the type says it"),
    RuntimeError(CUDA_OOM),
    RuntimeError(LINUX_CPU_OOM),
    RuntimeError(CACHING_CPU_OOM),
    RuntimeError("MPS backend out of memory (MPS allocated: 17.00 GB)"),
    RuntimeError("Failed to allocate 4096 bytes"),
], ids=["torch-oom-type", "cuda-oom-type", "cuda-text", "cpu-linux", "cpu-caching", "mps", "failed-to"])
def test_allocation_failures_are_out_of_memory(err):
    assert is_out_of_memory(err)


def test_the_cpu_allocators_not_enough_memory_message_is_out_of_memory():
    assert is_out_of_memory(RuntimeError(WINDOWS_CPU_OOM))


@pytest.mark.parametrize("err", [
    RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x3 and 2x2)"),
    RuntimeError("CUDA error: an illegal memory access was encountered"),
    RuntimeError(""),
    ValueError("out of memory"),  # the right words in the wrong type
    KeyboardInterrupt(),
    MemoryError("Unable to allocate 8.00 GiB for an array"),  # NumPy's, not torch's
], ids=["shape", "illegal-access", "empty", "value-error", "interrupt", "numpy-memory-error"])
def test_other_errors_are_not_out_of_memory(err):
    assert not is_out_of_memory(err)


def test_a_real_cpu_allocation_failure_is_recognised():
    try:
        torch.empty(2**47, dtype=torch.uint8)  # 128 TiB: refused at once, nothing is touched
    except RuntimeError as err:
        assert is_out_of_memory(err), str(err)
    else:  # an allocator that overcommits without limit hands out the address space
        pytest.skip("this machine's allocator granted 128 TiB")


def test_smaller_batch_halves_and_warns_once_naming_the_device():
    warnings = []
    assert smaller_batch(RuntimeError(CUDA_OOM), 256, device="cuda", warn=warnings.append) == 128
    assert warnings == ["warning: out of memory on cuda with 256 pixels per step; continuing with 128"]
    assert smaller_batch(RuntimeError(LINUX_CPU_OOM), 5) == 2  # floor, no warn callback needed
    assert smaller_batch(RuntimeError(LINUX_CPU_OOM), 2) == 1


def test_smaller_batch_never_goes_below_min_pixels():
    warnings = []
    assert smaller_batch(RuntimeError(CUDA_OOM), 3, min_pixels=2, warn=warnings.append) == 2
    assert warnings[0].endswith("with 3 pixels per step; continuing with 2")
    with pytest.raises(FitError, match=r"even with 2 pixel\(s\) per step; raise step_mm or lower"):
        smaller_batch(RuntimeError(CUDA_OOM), 2, min_pixels=2)


def test_out_of_memory_at_one_pixel_is_a_fit_error_without_the_chain():
    warnings = []
    with pytest.raises(FitError, match=r"out of memory on cpu even with 1 pixel\(s\)") as info:
        smaller_batch(torch.OutOfMemoryError(CUDA_OOM), 1, warn=warnings.append)
    assert warnings == []
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert "\n" not in str(info.value)


def test_errors_that_are_not_out_of_memory_are_reraised_unchanged():
    err = RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x3 and 2x2)")
    warnings = []
    with pytest.raises(RuntimeError) as info:
        smaller_batch(err, 256, warn=warnings.append)
    assert info.value is err and warnings == []
    interrupt = KeyboardInterrupt()
    with pytest.raises(KeyboardInterrupt) as info:
        smaller_batch(interrupt, 256)
    assert info.value is interrupt


def test_free_cached_memory_empties_the_cuda_cache_only_for_cuda(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.append("empty"))
    assert free_cached_memory("cpu") is None
    free_cached_memory(torch.device("cpu"))
    assert calls == []
    free_cached_memory("cuda:0")
    free_cached_memory(torch.device("cuda"))
    assert calls == ["empty", "empty"]
