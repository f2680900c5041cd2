#!/usr/bin/env python
"""How long the dry run takes to decode a validation set: N generated LQ/GT PNG pairs, decoded as
``--dry-run`` decodes them (hypir_core.data.decode_val_set).

    python bench/val_decode.py [--pairs 250] [--size 512] [--threads 1,4]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hypir_core.data import ValPair, decode_val_set  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=250, help="LQ/GT pairs (twice as many images)")
    parser.add_argument("--size", type=int, default=512, help="image side in pixels")
    parser.add_argument("--threads", default="1,4", help="comma-separated thread counts to time")
    args = parser.parse_args()
    import skimage.data

    photo = np.array(Image.fromarray(skimage.data.astronaut()).resize((args.size, args.size)))
    with tempfile.TemporaryDirectory() as folder:
        pairs = []
        for index in range(args.pairs):
            paths = [os.path.join(folder, f"{index}_{kind}.png") for kind in ("lq", "gt")]
            for path in paths:  # a photo shifted per pair: PNG compression as on real images
                Image.fromarray(np.roll(photo, index, axis=1)).save(path)
            pairs.append(ValPair("Blur", str(index), *paths))
        for threads in (int(t) for t in args.threads.split(",")):
            best = min(_timed(pairs, threads) for _ in range(2))
            print(f"{2 * args.pairs} images of {args.size}x{args.size}, {threads} thread(s): {best:.2f} s (best of 2)")
    return 0


def _timed(pairs, threads: int) -> float:
    started = time.perf_counter()
    decode_val_set(pairs, threads=threads)
    return time.perf_counter() - started


if __name__ == "__main__":
    sys.exit(main())
