"""Worker of test_surgery_ddp.py: gradient surgery under DistributedDataParallel, and its single-process reference.

Run as ``python surgery_ddp_worker.py RANK WORLD INIT_FILE OUT_DIR``; each rank writes its final weights and the stats
of its steps to ``OUT_DIR/rank<r>.pt``.
"""

from __future__ import annotations

import sys

import torch
from surgery_helpers import build_video_audio_text, video_audio_text_batch

from meltr.surgery import Curriculum, SurgeryStep, build_surgery, task_gradients, write_gradients
from meltr.surgery.driver import ParameterLayout

GLOBAL_BATCH, STEPS = 8, 3


def methods():
    # A curriculum whose gamma rises past the gradients' alignment: some steps pass, some are vetoed.
    return {
        "realign": build_surgery("realign"),
        "curriculum": Curriculum(schedule={"kind": "linear", "start": -1.0, "end": 1.0, "steps": 2}, measure="cosine"),
    }


def shard(batch, rank, world):
    size = GLOBAL_BATCH // world
    return {k: v[rank * size : (rank + 1) * size] for k, v in batch.items()}


def batches():
    return [video_audio_text_batch(GLOBAL_BATCH, seed=10 + step) for step in range(STEPS)]


def reference(method_name: str, world: int):
    """What DDP must compute: per-task gradients averaged over the shards *before* the method, then one step."""
    model = build_video_audio_text()
    params = list(model.parameters())
    optimizer = torch.optim.SGD(params, lr=0.5)
    method = methods()[method_name]
    decisions = []
    for step, batch in enumerate(batches()):
        optimizer.zero_grad(set_to_none=True)
        flats = [
            task_gradients(model(shard(batch, r, world)), params, reduce=lambda ts: list(ts)).flat for r in range(world)
        ]
        grads = task_gradients(model(shard(batch, 0, world)), params, reduce=lambda ts: list(ts))
        grads.flat = torch.stack(flats).mean(0)
        result = method(grads, step)
        write_gradients(ParameterLayout(params), result.direction)
        decisions.append(result.updated)
        if result.updated:
            optimizer.step()
    return model.state_dict(), decisions


def main(rank: int, world: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    out = {}
    for name, method in methods().items():
        model = DistributedDataParallel(build_video_audio_text())
        step = SurgeryStep(model, None, method, torch.optim.SGD(model.parameters(), lr=0.5))
        decisions = [step.step(shard(batch, rank, world)).updated for batch in batches()]
        out[name] = {"model": model.module.state_dict(), "decisions": decisions}
    torch.save(out, f"{out_dir}/rank{rank}.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4])
