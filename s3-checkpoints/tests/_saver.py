"""Child process for the crash tests: saves one big step and reports every protocol event on stdout.

The parent SIGKILLs it at a chosen event. Slowed down a little per part so that the kill really lands
while parts are still in flight.
"""

from __future__ import annotations

import sys
import time

import torch

from s3ckpt import CheckpointStore, S3Settings


def main() -> None:
    endpoint, user, password, bucket, step, mib = sys.argv[1:7]

    def on_event(ev: str, info: dict) -> None:
        print(f"EVENT {ev} {info.get('part', '')}", flush=True)
        if ev == "part_uploaded":
            time.sleep(0.1)
        if ev == "objects_done":
            time.sleep(120)  # every data object is uploaded, the manifest is not: the parent kills us here

    s = S3Settings(endpoint=endpoint, access_key=user, secret_key=password, bucket=bucket, prefix="ckpt")
    st = CheckpointStore(settings=s, run="test", part_size=5 * 1024 * 1024, max_inflight=2, on_event=on_event)
    g = torch.Generator().manual_seed(int(step))
    state = {"model": {"w": torch.randn(int(mib) * 1024 * 1024 // 4, generator=g)}}
    print("EVENT start", flush=True)
    st.save(int(step), state, {"note": "child"})
    print("EVENT done", flush=True)


if __name__ == "__main__":
    main()
