"""How fast the synthetic world is generated and read, and how hard its retrieval is.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/world.py [--clips 10000]``

Prints the generation speed (clips per second, wall and CPU time: other jobs on the machine slow the wall
clock), the stored bytes per clip, the loader speed and the retrieval ceiling of a 1k-clip test split
(:func:`meltr.data.retrieval_ceiling`).
"""

from __future__ import annotations

import argparse
import time

from meltr.data import WorldConfig, make_world, retrieval_ceiling


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=10_000, help="clips to generate (one train split)")
    parser.add_argument("--test-clips", type=int, default=1000, help="clips of the split for the ceiling")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    config = WorldConfig(seed=args.seed, n_pretrain=0, n_train=args.clips, n_meta=0, n_test=args.test_clips)
    wall, cpu = time.perf_counter(), time.process_time()
    world = make_world(config)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    total = args.clips + args.test_clips
    print(f"generated {total} clips in {wall:.1f} s wall / {cpu:.1f} s CPU")
    print(f"  generation: {total / wall:.0f} clips/s (wall), {total / cpu:.0f} clips/s (CPU)")

    train = world.splits["train"]
    stored = train.video.nbytes + train.audio.nbytes + train.caption_ids.nbytes + train.transcript_ids.nbytes
    print(f"  stored signals and tokens: {stored / max(len(train), 1) / 1024:.1f} KiB per clip")

    wall = time.perf_counter()
    batches = sum(1 for _ in world.loader("train", batch_size=64))
    wall = time.perf_counter() - wall
    print(f"  loader: {batches / wall:.0f} batches/s of 64 clips ({64 * batches / wall:.0f} clips/s)")

    for caption in (0, 1, 2):
        ceiling = retrieval_ceiling(world.splits["test"], caption)
        print(f"  retrieval ceiling (oracle R@1, {args.test_clips} clips, caption {caption}): {ceiling:.3f}")


if __name__ == "__main__":
    main()
