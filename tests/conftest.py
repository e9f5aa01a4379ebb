"""Test setup: CPU only, 8 fake devices (set before JAX is imported anywhere)."""

import os
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")
flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in flags:
    os.environ["XLA_FLAGS"] = (flags + " --xla_force_host_platform_device_count=8").strip()

# Many tests build the same jitted function afresh (a Transcriber per CLI call, a decoder per
# quantization preset, the same step in a subprocess): JAX's persistent compilation cache turns
# each repeat of an identical program into a file read instead of a 10-40 s XLA compile. Set
# through the environment so that subprocesses (entry points, multi-host workers) and both
# pytest-xdist workers share it. Every program is cached, however fast it compiles: the suite
# compiles about 3,200 small programs (eager model code at init, 50-100 ms each), many of
# them again in each process. Unbounded: with a size bound JAX stats every entry under a
# file lock on each write, which made a cache of tiny programs slower than none. The
# cache is keyed by the program, the compile options and the backend, so a hit is the program
# that would have been compiled; JAX_COMPILATION_CACHE_DIR= (empty) turns it off, `make clean`
# deletes it.
_CACHE = Path(__file__).resolve().parent.parent / ".cache" / "jax-tests"
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(_CACHE))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", "-1")

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
FIXTURE = REPO / "data" / "fixture"


@pytest.fixture(scope="session")
def fixture_manifest() -> Path:
    return FIXTURE / "manifest.jsonl"


@pytest.fixture(scope="session")
def tiny_en():
    """The real tiny.en teacher from the bundled CTranslate2 weights (loaded once)."""
    from jaxwhisper.models.weights.resolve import resolve_model

    return resolve_model("tiny.en")


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder this process cannot create files in: a 0o555 folder, or /sys when running as
    root (root ignores permission bits; sysfs refuses new files to everyone)."""
    import os
    import tempfile

    ro = tmp_path / "read-only"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with tempfile.TemporaryFile(dir=ro):
            pass
    except OSError:
        return ro
    if not os.path.isdir("/sys"):
        pytest.skip("no folder here that this user cannot write")
    return Path("/sys")


@pytest.fixture(scope="session")
def hub_standins(tmp_path_factory) -> Path:
    """Parquet stand-ins of the paper's corpora in their hub schemas (tests/hub_standins.py),
    4 shards per split, written once per session."""
    from hub_standins import write_all

    return write_all(tmp_path_factory.mktemp("hub"), n_shards=4)


def quick_parquet_shutdown() -> None:
    """datasets sleeps 5 s whenever a parquet stream's iterator shuts down (a guard against an
    Arrow thread-pool hang, apache/arrow#45214). The stand-in shards end a pass every few rows,
    so the sleeps dominated the streaming tests; 0.1 s is what that issue's reporters found
    enough. Real corpora end a pass once per epoch, where 5 s does not matter."""
    import datasets.config

    datasets.config.SLEEP_TIME_ON_THREADS_SHUTDOWN = 0.1


@pytest.fixture(autouse=True, scope="session")
def _quick_parquet_shutdown():
    quick_parquet_shutdown()
