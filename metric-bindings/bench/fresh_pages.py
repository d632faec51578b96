"""Why numpy's time at (256, 100000, 512) swings: the cost of touching 200 MB of freshly allocated memory,
right after the previous 200 MB was freed or after a pause.

On a VM that returns freed pages to its host (virtio-balloon free page reporting, as on this workspace's
machine), memory freed a second or more ago must come back from the host on first touch: several times
slower. numpy's normalise + matmul allocates ~700 MB of temporaries per call (x * x, the normalised copy of B,
the result), so its time depends on how long ago the process freed that much; ours allocates only the result
(and nothing with out=).
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mb", type=int, default=200, help="size of each fresh array in MB")
    p.add_argument("--repeat", type=int, default=6, help="allocations per pause length")
    p.add_argument("--no-numpy", dest="numpy", action="store_false",
                   help="skip timing numpy's normalise + matmul at (256, 100000, 512) in both modes")
    args = p.parse_args(argv)
    n = args.mb * 1_000_000 // 4
    for pause in (0.0, 0.2, 0.5, 1.0, 2.0):
        times = []
        for _ in range(args.repeat):
            time.sleep(pause)
            t0 = time.perf_counter()
            x = np.empty(n, np.float32)
            x.fill(1.0)  # first touch of every page
            times.append((time.perf_counter() - t0) * 1e3)
            del x
        print(f"pause {pause:.1f} s before each: fresh {args.mb} MB touched in "
              f"median {np.median(times):.0f} ms (runs: {', '.join(f'{t:.0f}' for t in times)})")
    if args.numpy:
        numpy_modes(args.repeat)
    return 0


def numpy_modes(repeat: int) -> None:
    """numpy's normalise + matmul at (256, 100000, 512), float32, back to back vs after a 2 s pause."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((256, 512), dtype=np.float32)
    b = rng.standard_normal((100_000, 512), dtype=np.float32)

    def normalize(x: np.ndarray) -> np.ndarray:
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    normalize(a) @ normalize(b).T  # warm-up
    for pause in (0.2, 2.0):
        times = []
        for _ in range(repeat):
            time.sleep(pause)
            t0 = time.perf_counter()
            normalize(a) @ normalize(b).T
            times.append((time.perf_counter() - t0) * 1e3)
        print(f"numpy normalise + matmul (256, 100000, 512), pause {pause:.1f} s before each: median "
              f"{np.median(times):.0f} ms (runs: {', '.join(f'{t:.0f}' for t in times)})")


if __name__ == "__main__":
    raise SystemExit(main())
