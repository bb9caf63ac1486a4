"""Reading exported MSRVTT clips from disk (PyAV decoding in DataLoader workers) against the in-memory world.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/data_reading.py [--clips 1000] [--workers 2]``

Exports a world of ``--clips`` training clips (8 frames, 32 x 32, lossless H.264) as MSRVTT, then times, in one
run: one pass over the train split of the in-memory world, one pass over the same clips decoded from disk with
``--workers`` DataLoader workers (training-time sampling: a random frame per segment), and fine-tuning steps of
the reference backbone (UniVL, default size, retrieval losses, forward + backward + AdamW) on batches of the
same size. Prints clips per second of each and the ratios: decoding is not the bottleneck when a step takes
longer than decoding its batch.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch


def clips_per_second(loader) -> tuple[float, int]:
    start, count = time.perf_counter(), 0
    for batch in loader:
        count += len(batch["clip_id"])
    return count / (time.perf_counter() - start), count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=1000, help="clips of the exported train split")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers decoding the videos")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10, help="fine-tuning steps timed")
    parser.add_argument("--out", type=Path, default=None, help="folder for the export (default: a temporary one)")
    args = parser.parse_args()

    from meltr.data import WorldConfig, make_world
    from meltr.data.formats import export_world, read_dataset
    from meltr.models import build_backbone

    world = make_world(WorldConfig(seed=0, n_pretrain=0, n_train=args.clips, n_meta=0, n_test=0))
    with tempfile.TemporaryDirectory() as scratch:
        root = args.out or Path(scratch)
        start = time.perf_counter()
        export_world(world, "msrvtt", root)
        export_seconds = time.perf_counter() - start
        size = sum(f.stat().st_size for f in (root / "videos").iterdir())
        start = time.perf_counter()
        corpus = read_dataset("msrvtt", root, tokenizer=world.tokenizer, meta_fraction=0.0)
        read_seconds = time.perf_counter() - start
        memory, count = clips_per_second(world.loader("train", args.batch_size, seed=1))
        disk, disk_count = clips_per_second(
            corpus.loader("train", args.batch_size, seed=1, num_workers=args.workers, train=True)
        )
        inline, _ = clips_per_second(corpus.loader("train", args.batch_size, seed=1, num_workers=0, train=True))
    assert count == disk_count == args.clips

    # the ordinary codec: how far yuv420p (chroma subsampled) puts the pixels from the world's
    small = make_world(WorldConfig(seed=0, n_pretrain=0, n_train=0, n_meta=0, n_test=100))
    with tempfile.TemporaryDirectory() as scratch:
        export_world(small, "msrvtt", scratch, lossless=False)
        lossy = read_dataset("msrvtt", scratch, tokenizer=small.tokenizer, meta_fraction=0.0)
        error = torch.cat(
            [
                (a["video"] - b["video"]).abs().flatten()
                for a, b in zip(small.loader("test", 50), lossy.loader("test", 50), strict=True)
            ]
        )

    torch.manual_seed(0)
    model = build_backbone("univl", vocab_size=world.tokenizer.vocab_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batches = iter(world.loader("train", args.batch_size, seed=2))
    step_seconds = []
    for _ in range(args.steps + 1):
        batch = next(batches)
        start = time.perf_counter()
        loss = sum(value.mean() for value in model(batch).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        step_seconds.append(time.perf_counter() - start)
    step = sorted(step_seconds[1:])[len(step_seconds[1:]) // 2]  # median, the first step warms up
    training = args.batch_size / step

    print(
        f"{args.clips} clips of 8 frames, 32 x 32, batch {args.batch_size}, {os.cpu_count()} CPU(s), torch threads "
        f"{torch.get_num_threads()}"
    )
    print(f"  export (lossless H.264): {export_seconds:.1f} s, {size / args.clips / 1024:.1f} KiB per clip")
    print(f"  reading the annotations and checking every video: {read_seconds:.1f} s")
    print(f"  in-memory world loader:            {memory:8.0f} clips/s")
    print(f"  exported MSRVTT, {args.workers} workers:        {disk:8.0f} clips/s  ({disk / memory:.3f} x in-memory)")
    print(f"  exported MSRVTT, no worker:        {inline:8.0f} clips/s  ({inline / memory:.3f} x in-memory)")
    print(f"  UniVL (default) fine-tuning steps: {training:8.0f} clips/s  (median step {step * 1000:.0f} ms)")
    print(
        f"  yuv420p export, 100 clips: mean |error| {255 * error.mean():.1f} / 255, max {255 * error.max():.0f} / 255"
    )
    print(
        f"  decoding with {args.workers} workers / training: {disk / training:.1f} x (above 1: decoding is not "
        "the bottleneck)"
    )


if __name__ == "__main__":
    main()
