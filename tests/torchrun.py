"""Launch a test worker under ``torchrun`` with 2 CPU processes (gloo), as the DDP tests do."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(worker: str | Path, *args: str, processes: int = 2, timeout: int = 900) -> subprocess.CompletedProcess:
    """Run ``worker`` (a script path) with ``args`` on ``processes`` ranks; the test's ``sys.path`` is kept."""
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes=1",
        f"--nproc_per_node={processes}",
        "--master_addr=127.0.0.1",
        f"--master_port={free_port()}",
        str(worker),
        *args,
    ]
    # A session of its own, so that a timeout ends the ranks too (torchrun's workers outlive a killed launcher).
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path)},
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def load_ranks(out_dir: Path, processes: int = 2) -> list[dict]:
    import torch

    return [torch.load(Path(out_dir) / f"rank{r}.pt", weights_only=True) for r in range(processes)]


def assert_ranks_match(ranks: list[dict], references: dict[str, dict], tol: float = 1e-5) -> None:
    """Every rank holds bit-identical weights of each part (``model``, ``combiner``), equal to the reference's (a
    single-process run on the same global batches) to ``tol``."""
    import torch

    for part, reference in references.items():
        for name, value in reference.items():
            for rank in ranks[1:]:
                torch.testing.assert_close(rank[part][name], ranks[0][part][name], rtol=0, atol=0)
            torch.testing.assert_close(ranks[0][part][name], value, rtol=tol, atol=tol)
