"""Test setup: CPU only, 8 fake devices (set before JAX is imported anywhere)."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in flags:
    os.environ["XLA_FLAGS"] = (flags + " --xla_force_host_platform_device_count=8").strip()

from pathlib import Path  # noqa: E402

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
