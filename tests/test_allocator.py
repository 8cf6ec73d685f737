"""The package sets glibc's malloc to hand freed arrays back to the system (allocator.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from dialinsight_engine import allocator

# 200 arrays of 1 MiB freed after a first one raised glibc's dynamic mmap threshold to their
# size: with the dynamic threshold they came from the heap, which kept them (~200 MB held)
PROBE = """
import os, numpy as np
import dialinsight_engine
def rss_mb():
    return int(open('/proc/self/statm').read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20
base = rss_mb()
first = np.ones(2**17)
del first
held = [np.ones(2**17) for _ in range(200)]
last = held.pop()  # the newest array stays: the heap's top is in use, nothing to trim
del held
print(round(rss_mb() - base))
"""


@pytest.mark.skipif(allocator._glibc() is None, reason="glibc's malloc only (Linux with glibc)")
@pytest.mark.parametrize("given", [None, "33554432"])
def test_freed_arrays_go_back_to_the_system_unless_the_user_sets_glibc_up(given):
    env = {k: v for k, v in os.environ.items() if k not in allocator.GLIBC_SETTINGS}
    if given:
        env["MALLOC_MMAP_THRESHOLD_"] = given  # the user's threshold: 32 MiB, arrays from the heap
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    held_mb = int(done.stdout.strip())
    if given:
        assert held_mb > 150, f"the user's setting was overridden: {held_mb} MB held"
    else:
        assert held_mb < 30, f"{held_mb} MB of freed arrays still held"


# 100,000 blocks of 1,000 bytes (under the mmap threshold: from the heap) freed while the last
# one stays in use: the heap cannot shrink from its top, so only malloc_trim gives them back
TRIM_PROBE = """
import os
from dialinsight_engine import allocator
def rss_mb():
    return int(open('/proc/self/statm').read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20
base = rss_mb()
blocks = [bytes(1000) for _ in range(100_000)]
last = blocks.pop()
del blocks
freed = rss_mb() - base
allocator.release()
print(round(freed), round(rss_mb() - base))
"""


@pytest.mark.skipif(allocator._glibc() is None, reason="glibc's malloc only (Linux with glibc)")
@pytest.mark.parametrize("given", [None, "1073741824"])
def test_release_trims_the_heap_unless_the_user_sets_glibc_up(given):
    env = {k: v for k, v in os.environ.items() if k not in allocator.GLIBC_SETTINGS}
    if given:
        env["MALLOC_TRIM_THRESHOLD_"] = given
    done = subprocess.run([sys.executable, "-c", TRIM_PROBE], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    freed_mb, released_mb = map(int, done.stdout.split())
    assert freed_mb > 60, f"the freed blocks were given back before the trim ({freed_mb} MB held)"
    if given:
        assert released_mb > 60, f"the user's setting was overridden: {released_mb} MB held"
    else:
        assert released_mb < 20, f"{released_mb} MB still held after release()"


# 200 pyarrow arrays of 1 MiB freed: mimalloc, pyarrow's own pool, kept their pages (~200 MB)
ARROW_PROBE = """
import os
import numpy as np
import dialinsight_engine
import pyarrow as pa
def rss_mb():
    return int(open('/proc/self/statm').read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20
ones = pa.array(np.ones(2**17))
base = rss_mb()
held = [pa.concat_arrays([ones]) for _ in range(200)]  # each a copy in a buffer of the pool
del held
print(pa.default_memory_pool().backend_name, round(rss_mb() - base))
"""


@pytest.mark.skipif(allocator._glibc() is None, reason="glibc's malloc only (Linux with glibc)")
@pytest.mark.parametrize("given", [None, "mimalloc"])
def test_pyarrow_allocates_through_malloc_unless_the_user_chose_its_pool(given):
    pytest.importorskip("pyarrow")
    env = {k: v for k, v in os.environ.items() if k not in (*allocator.GLIBC_SETTINGS, "ARROW_DEFAULT_MEMORY_POOL")}
    if given:
        env["ARROW_DEFAULT_MEMORY_POOL"] = given
    done = subprocess.run([sys.executable, "-c", ARROW_PROBE], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    pool, held_mb = done.stdout.split()
    assert pool == (given or "system")
    if not given:
        assert int(held_mb) < 30, f"{held_mb} MB of freed pyarrow arrays still held"
