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


@pytest.fixture(scope="session")
def hub_standins(tmp_path_factory) -> Path:
    """Parquet stand-ins of the paper's corpora in their hub schemas (tests/hub_standins.py),
    4 shards per split, written once per session."""
    from hub_standins import write_all

    return write_all(tmp_path_factory.mktemp("hub"), n_shards=4)
