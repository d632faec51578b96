"""Child process for the crash tests: saves one big step and reports every protocol event on stdout.

The parent SIGKILLs it at a chosen event. The child holds at that event (the optional last argument) until
it is killed, so the kill lands exactly there however slowly the parent reads the pipe on a busy machine.
"""

from __future__ import annotations

import sys
import threading
import time

import torch

from s3ckpt import CheckpointStore, S3Settings


def main() -> None:
    endpoint, user, password, bucket, step, mib = sys.argv[1:7]
    hold_at = sys.argv[7] if len(sys.argv) > 7 else "EVENT objects_done"

    print_lock = threading.Lock()  # upload threads report too: one whole line at a time

    def report(line: str) -> None:
        with print_lock:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
        if line == hold_at:
            time.sleep(120)  # the parent kills us here: the save can get no further than this event

    def on_event(ev: str, info: dict) -> None:
        report(f"EVENT {ev} {info.get('part', '')}".strip())
        if ev == "part_uploaded":
            time.sleep(0.1)

    s = S3Settings(endpoint=endpoint, access_key=user, secret_key=password, bucket=bucket, prefix="ckpt")
    st = CheckpointStore(settings=s, run="test", part_size=5 * 1024 * 1024, max_inflight=2, on_event=on_event)
    g = torch.Generator().manual_seed(int(step))
    state = {"model": {"w": torch.randn(int(mib) * 1024 * 1024 // 4, generator=g)}}
    st.save(int(step), state, {"note": "child"})
    report("EVENT done")


if __name__ == "__main__":
    main()
