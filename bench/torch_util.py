"""bench/torch_util.py - what the PyTorch benchmarks share: the tuned environment they re-run
themselves in, the torch import, a clock, medians, peak RSS and ALiBi's slopes.

The scripts import it from their own directory (sys.path), so they run from any cwd:
    /usr/bin/python3 bench/torch_gpt.py ...
"""
import math
import os
import resource
import statistics
import sys
import time

# The tuned environment the issue names: OpenMP workers sleep instead of spinning while OpenBLAS
# works, and glibc keeps freed memory instead of returning large blocks to the kernel.
TUNED = {"OMP_WAIT_POLICY": "PASSIVE", "MALLOC_MMAP_MAX_": "0",
         "MALLOC_TRIM_THRESHOLD_": "68719476736"}


def enter_tuned_env(as_is):
    """Re-runs the script in the tuned environment unless it already runs there (or as_is)."""
    if not as_is and any(os.environ.get(k) != v for k, v in TUNED.items()):
        os.execve(sys.executable, [sys.executable] + sys.argv, {**os.environ, **TUNED})


def tuned_env(extra=()):
    """The TUNED variables (and those named in extra) as set in this process."""
    return {k: os.environ[k] for k in list(TUNED) + list(extra) if k in os.environ}


def import_torch(script):
    """torch, or exit with a message naming the script and the interpreter."""
    try:
        import torch
    except ImportError:
        sys.exit("%s: no torch in %s (Debian: /usr/bin/python3 with python3-torch)"
                 % (script, sys.executable))
    return torch


def now():
    """Seconds on a monotonic clock."""
    return time.perf_counter()


def median(seconds):
    """The median of a list of times."""
    return statistics.median(seconds)


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def alibi_slopes(n):
    """The paper's slopes (ofirpress/attention_with_linear_biases, get_slopes)."""
    def pow2(n):
        start = 2 ** (-2 ** -(math.log2(n) - 3))
        return [start * start ** i for i in range(n)]
    if math.log2(n).is_integer():
        return pow2(n)
    closest = 2 ** math.floor(math.log2(n))
    return pow2(closest) + alibi_slopes(2 * closest)[0::2][:n - closest]
