"""One process of the multi-process test (tests/test_multihost.py): joins a localhost JAX
cluster, distils for 3 steps in two calls (a checkpoint saved at step 2 and restored), then
evaluates the exported student on its share of the utterances. With a `streaming` config it
then distils on a streaming source (each host its own shards) twice: straight, and resumed
from the straight run's first checkpoint.

    python tests/multihost_worker.py PROCESS_ID NUM_PROCESSES PORT CONFIG_JSON WORKDIR
"""

import json
import os
import sys

os.environ["JAX_PLATFORMS"] = "cpu"
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
os.environ["USE_TORCH"] = "0"  # else `datasets` imports torch (seconds) when it is installed

import jax  # noqa: E402


def _share_compiled_programs() -> None:
    """Process 0 compiles each program of the run; process 1 gets the binary from it.

    On CPU, JAX's persistent-cache key includes the device topology's fingerprint, which
    differs between the processes of one cluster, and only process 0 writes the cache: process
    1 never hit it and compiled all ~95 programs of this run again in every suite (~45 s of
    the suite's 2 cores). Keyed by the devices' kinds instead (their ids and assignment stay
    in the key through the compile options), both processes look up one entry, and on a miss
    `jax_share_binary_between_hosts` has process 0 compile it and hand it to process 1
    through the cluster's key-value store, as JAX does between hosts. Without the private
    hash function (another JAX) each process compiles for itself, as before."""
    from jax._src import cache_key

    if not (hasattr(cache_key, "_hash_accelerator_config") and hasattr(cache_key, "_hash_devices")):
        return
    cache_key._hash_accelerator_config = cache_key._hash_devices
    jax.config.update("jax_share_binary_between_hosts", True)
    # A program process 0 never compiles would stall process 1 this long, not 20 minutes.
    jax.config.update("jax_share_binary_between_hosts_timeout_ms", 300_000)


def main(process_id: int, num_processes: int, port: int, config_path: str, workdir: str) -> None:
    import shutil
    from pathlib import Path

    from conftest import quick_parquet_shutdown
    from jax.experimental import multihost_utils

    quick_parquet_shutdown()
    _share_compiled_programs()
    from jaxwhisper import distributed

    distributed.initialize(f"localhost:{port}", num_processes, process_id, timeout_s=120)

    from jaxwhisper.config import train_config_from_dict
    from jaxwhisper.data.eval_sets import load_eval_set
    from jaxwhisper.evaluation.evaluate import evaluate_model
    from jaxwhisper.models.weights.resolve import resolve_model
    from jaxwhisper.train.loop import EXPORT, train_and_evaluate

    assert jax.process_count() == num_processes and jax.device_count() == 4 * num_processes
    raw = json.loads(Path(config_path).read_text())
    cfg = train_config_from_dict(raw["train"])
    workdir = Path(workdir)
    train_and_evaluate(cfg, workdir, stop_after=2)  # saves step 2 and returns
    train_and_evaluate(cfg, workdir)  # restores step 2, runs 3, exports
    model = resolve_model(str(workdir / EXPORT))
    data = load_eval_set(raw["eval"], 0, jax.process_index(), jax.process_count())
    evaluate_model(model, [data], workdir / "eval" / "results.json", batch_size=4)
    if "streaming" in raw:
        streaming = train_config_from_dict(raw["streaming"])
        train_and_evaluate(streaming, workdir / "stream-straight")
        # The cut run starts from the straight run's first checkpoint (what a run stopped
        # there saves: the steps are deterministic; stopping itself is checked above).
        if jax.process_index() == 0:
            first = Path("checkpoints") / "1"
            shutil.copytree(workdir / "stream-straight" / first, workdir / "stream-cut" / first)
        multihost_utils.sync_global_devices("checkpoint 1 copied")
        train_and_evaluate(streaming, workdir / "stream-cut")


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5])
