"""numba_threads: the compiled kernels use torch's thread count and leave it as it was."""

import subprocess
import sys


def test_the_kernels_get_torchs_thread_count_and_leave_it_as_it_was():
    """In a fresh process (numba's OpenMP layer starts on the first kernel and resets the count)."""
    script = (
        "import numba, torch\n"
        "torch.set_num_threads(1)\n"
        "from recon.threads import numba_threads\n"
        "print(numba_threads(), numba.get_num_threads(), torch.get_num_threads())\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["1", "1", "1"]
