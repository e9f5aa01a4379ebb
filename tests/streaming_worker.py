"""One host of tests/test_multihost_streaming.py: joins a localhost JAX cluster and reads
streaming batches, writing (as the trainer's checkpoint does) every host's position,
gathered to process 0, every 2 steps.

    python tests/streaming_worker.py PROCESS_ID NUM_PROCESSES PORT SPEC OUT_DIR MODE

MODE `run`: steps 0.. until killed (after step 6 it waits); `resume`: from the saved
positions until this host's first pass over its shards is over. Each batch's ids go to
OUT_DIR/MODE-PROCESS.jsonl.
"""

import json
import os
import sys
import time

os.environ["JAX_PLATFORMS"] = "cpu"
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1"
os.environ["USE_TORCH"] = "0"  # else `datasets` imports torch (seconds) when it is installed


def main(process_id: int, num_processes: int, port: int, spec: str, out: str, mode: str) -> None:
    from pathlib import Path

    from conftest import quick_parquet_shutdown

    quick_parquet_shutdown()
    from jaxwhisper import distributed

    distributed.initialize(f"localhost:{port}", num_processes, process_id, timeout_s=120)
    import jax

    from jaxwhisper.data.batches import BatchConfig
    from jaxwhisper.data.sources import parse_spec
    from jaxwhisper.data.streaming import StreamLoader

    out = Path(out)
    loader = StreamLoader(
        [parse_spec(spec)],
        BatchConfig(global_batch=4, max_label_len=256, seed=7),
        (50257, 50362),
        50256,
        lambda text: [ord(c) % 1000 for c in text],
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )
    step, state = 0, None
    if mode == "resume":
        saved = json.loads((out / "position.json").read_text())
        step, state = saved["step"], saved["hosts"][jax.process_index()]
    log = open(out / f"{mode}-{process_id}.jsonl", "w")
    for batch in loader.iter_from_step(step, state):
        pos = batch["data_state"]["streams"][0]
        log.write(
            json.dumps({"step": batch["step"], "ids": batch["ids"], "epoch": pos["epoch"], "n": pos["n"]})
        )
        log.write("\n")
        log.flush()
        done = batch["step"] + 1
        if mode == "run" and done % 2 == 0:
            hosts = distributed.allgather_json(batch["data_state"])
            if jax.process_index() == 0:
                tmp = out / "position.json.tmp"
                tmp.write_text(json.dumps({"step": done, "hosts": hosts}))
                tmp.rename(out / "position.json")  # atomic, as orbax's commit
            if done == 6:
                time.sleep(600)  # killed here
        if mode == "resume" and pos["epoch"] > 0:
            break
    log.close()
    # Skip the interpreter's slow teardown of the reader threads; the logs are closed.
    jax.distributed.shutdown()
    os._exit(0)


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6])
