"""Reading batches ahead of the training step, in background threads."""

from __future__ import annotations

import concurrent.futures
import queue
import threading
from typing import Callable, Iterator


def decode_pool(workers: int):
    """Threads that decode a batch's rows in parallel (None for one: decoded in order)."""
    if workers <= 1:
        return None
    return concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="decode")


def prefetched(load: Callable[[int], dict], step: int, prefetch: int = 2) -> Iterator[dict]:
    """`load(step), load(step + 1), ...`, computed `prefetch` steps ahead in a background
    thread; an exception in `load` is raised in the consumer, with its traceback."""
    q: queue.Queue = queue.Queue(maxsize=max(1, prefetch))
    stop = threading.Event()

    def work():
        s = step
        while not stop.is_set():
            try:
                item = load(s)
            except Exception as e:
                q.put(e)
                return
            while not stop.is_set():
                try:
                    q.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            s += 1

    def consume():
        thread = threading.Thread(target=work, daemon=True, name="batch-prefetch")
        thread.start()
        try:
            while True:
                item = q.get()
                if isinstance(item, Exception):
                    raise item
                yield item
        finally:
            stop.set()

    return consume()
