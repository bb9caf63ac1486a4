"""One measurement of benchmarks/hypergrad.py, run in its own process: ``python _hypergrad_worker.py '<json job>'``.

The job's result is printed as one JSON line prefixed with ``RESULT``. Kinds of job:

- ``time``: a method's extra peak resident memory over the state after setup (``VmHWM`` reset through
  ``/proc/self/clear_refs``, with glibc's mmap threshold lowered for that call so that freed tensors leave the RSS),
  then its step interleaved with the baseline training step: per-round times and ratios.
- ``epoch``: a fine-tuning epoch with MELTR (``AuxiliaryLearner``) against equal-weight multi-task steps.
- ``accuracy``: hypergradients of a list of methods on the accuracy problem, saved to a ``.pt`` file (in float64
  they are the references).

A "method" is ``baseline`` (forward, backward of the sum of the losses, AdamW step), ``official`` (the three
``autograd.grad`` calls of the official MELTR code, written out below), ``meltr:<estimator>:<backend>[:last<n>]``
(``AuxiliaryLearner.meta_step``, optionally scoped to the last ``n`` blocks, ``:head`` to the heads only),
``betty:<darts|neumann|cg>`` or ``torchopt:<cg|neumann>``.
"""

from __future__ import annotations

import ctypes
import gc
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from meltr.combine import MetaLossTransformer
from meltr.contract import stack_task_losses
from meltr.hypergrad import BACKENDS, MetaProblem, build_estimator, primary_objective
from meltr.learner import AuxiliaryLearner, select_parameters
from meltr.models import CLS_ID, NUM_SPECIAL_TOKENS, PAD_ID, SEP_ID, build_backbone

VOCAB_SIZE = 1000
PRIMARY_TASK = "align"  # text-to-video retrieval, the task of Table 8
GAMMA = 0.1
INNER_LR = 1e-4
META_LR, META_WEIGHT_DECAY, CLIP_NORM = 1e-3, 3e-5, 50.0  # the official UniVL meta optimiser
NEUMANN = {"terms": 3, "lr": 0.1}  # AuxiLearn's three terms; meltr's default series step
CG_ITERS = 5
SEEDS = (101, 202, 303)  # the mask seed of each batch: every library sees the same masks


# -- the problem ---------------------------------------------------------------------------------------------------
def make_batch(size: int, seed: int, text_len: int = 32, frames: int = 8, image: int = 32) -> dict[str, torch.Tensor]:
    """Random captions of random lengths and clips of 8 frames of 32x32 (UniVL's layout; distinct clips)."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(text_len // 2, text_len + 1, (size,), generator=g)
    positions = torch.arange(text_len)
    words = torch.randint(NUM_SPECIAL_TOKENS, VOCAB_SIZE, (size, text_len), generator=g)
    text = torch.where(positions < lengths[:, None] - 1, words, PAD_ID)
    text = torch.where(positions == lengths[:, None] - 1, SEP_ID, text)
    text[:, 0] = CLS_ID
    colour = torch.rand(size, 1, 3, 1, 1, generator=g)
    blocks = torch.rand(size, frames, 3, 4, 4, generator=g)
    pattern = blocks.repeat_interleave(image // 4, -2).repeat_interleave(image // 4, -1)
    noise = torch.rand(size, frames, 3, image, image, generator=g)
    return {
        "video": 0.5 * colour + 0.4 * pattern + 0.1 * noise,
        "text": text,
        "text_mask": positions < lengths[:, None],
        "clip_id": torch.arange(size) + 1000 * seed,
    }


@dataclass
class Setup:
    model: torch.nn.Module
    combiner: MetaLossTransformer
    optimizer: torch.optim.Optimizer
    batches: list[dict[str, torch.Tensor]]  # train-side, meta, a third for StocBiO's fresh Hessian batches

    @property
    def train_batch(self) -> dict[str, torch.Tensor]:
        return self.batches[0]

    @property
    def meta_batch(self) -> dict[str, torch.Tensor]:
        return self.batches[1]

    def seed(self, batch: Any) -> int:
        return SEEDS[[id(b) for b in self.batches].index(id(batch))]


def build_setup(job: dict[str, Any], dtype: torch.dtype = torch.float32) -> Setup:
    torch.manual_seed(job.get("seed", 0))
    model = build_backbone("univl", "default", vocab_size=VOCAB_SIZE, **job.get("size", {})).to(dtype)
    combiner = MetaLossTransformer(model.tasks, primary_task=PRIMARY_TASK).to(dtype)  # the official UniVL sizes
    batches = [make_batch(job["batch"], seed=job.get("seed", 0) * 10 + i) for i in range(3)]
    for batch in batches:
        batch["video"] = batch["video"].to(dtype)
    optimizer = torch.optim.AdamW(model.parameters(), lr=INNER_LR)
    return Setup(model, combiner, optimizer, batches)


def seeded_losses(setup: Setup, batch: Any, model: Callable[[Any], Any] | None = None) -> torch.Tensor:
    """The stacked per-sample losses ``[B, T]`` of ``batch``, with the batch's own masks."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(setup.seed(batch))
        out = (model or setup.model)(batch)
    return stack_task_losses(out, setup.combiner.tasks)


class FixedSeeds(MetaProblem):
    """``MetaProblem`` whose batches replay the benchmark's seeds, so that float32 and float64 runs, and every
    library, see the same masks."""

    setup: Setup
    hessian_products: int = 0

    def seed_of(self, batch: Any) -> int:
        return self.setup.seed(batch)

    def hvp(self, aux_grad, vector):
        self.hessian_products += 1
        return super().hvp(aux_grad, vector)


def plain_cg_hypergradient(setup: Setup, iters: int = CG_ITERS) -> list[torch.Tensor]:
    """Textbook CG on ``H q = grad_w L_pri`` (no stop on negative curvature, as TorchOpt and SciPy), double backward
    for the mixed term: the like-with-like reference of the peers' CG, whose solvers have no curvature check."""
    problem = FixedSeeds(
        model=setup.model,
        combiner=setup.combiner,
        param_names=select_parameters(setup.model, None),
        train_batch=setup.train_batch,
        meta_batch=setup.meta_batch,
        reg_weight=GAMMA,
    )
    problem.setup = setup
    with sdpa_kernel(SDPBackend.MATH):
        v, direct = problem.primary_gradients()
        aux_grad = problem.aux_gradient(create_graph=True)
        x = [torch.zeros_like(t) for t in v]
        r = [t.clone() for t in v]
        d = [t.clone() for t in v]
        rr = sum((t * t).sum() for t in r)
        for _ in range(iters):
            hd = problem.hvp(aux_grad, d)
            step = rr / sum((a * b).sum() for a, b in zip(d, hd, strict=True))
            x = [a + step * b for a, b in zip(x, d, strict=True)]
            r = [a - step * b for a, b in zip(r, hd, strict=True)]
            new = sum((t * t).sum() for t in r)
            d = [a + (new / rr) * b for a, b in zip(r, d, strict=True)]
            rr = new
        mixed = problem.mixed(x, aux_grad)
    return [a - b for a, b in zip(direct, mixed, strict=True)]


# -- methods -------------------------------------------------------------------------------------------------------
def baseline_step(setup: Setup) -> Callable[[], None]:
    """Plain multi-task training: forward, backward of the sum of the eight losses, optimiser step."""
    model, optimizer = setup.model, setup.optimizer

    def step() -> None:
        losses = model(setup.train_batch)
        total = sum(loss.mean() for loss in losses.values())
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()

    return step


def official_meta_step(setup: Setup) -> Callable[[], list[torch.Tensor]]:
    """The official code's meta step: ``grad(L_val, w)``, ``grad(L_train, w, create_graph=True)``, the grad of that
    with respect to phi with ``grad_outputs``; phi.grad is minus that (no direct term), clipped to 50, Adam."""
    model, combiner = setup.model, setup.combiner
    weights = [p for p in model.parameters() if p.requires_grad]
    phi = combiner.meta_parameters()
    meta_optimizer = torch.optim.Adam(phi, lr=META_LR, weight_decay=META_WEIGHT_DECAY)

    def step() -> list[torch.Tensor]:
        with sdpa_kernel(SDPBackend.MATH):
            val_losses = seeded_losses(setup, setup.meta_batch)
            loss_val, _, _ = primary_objective(combiner, val_losses, GAMMA)
            grad_val = torch.autograd.grad(loss_val, weights, allow_unused=True)
            grad_val = [torch.zeros_like(w) if g is None else g for g, w in zip(grad_val, weights, strict=True)]
            loss_train = combiner(seeded_losses(setup, setup.train_batch))
            grad_train = torch.autograd.grad(loss_train, weights, create_graph=True, allow_unused=True)
            pairs = [(g, v) for g, v in zip(grad_train, grad_val, strict=True) if g is not None]
            hyper = torch.autograd.grad(
                [g for g, _ in pairs], phi, grad_outputs=[v for _, v in pairs], allow_unused=True
            )
            hyper = [torch.zeros_like(p) if h is None else h for h, p in zip(hyper, phi, strict=True)]
        meta_optimizer.zero_grad(set_to_none=True)
        for p, g in zip(phi, hyper, strict=True):
            p.grad = -g
        torch.nn.utils.clip_grad_norm_(phi, CLIP_NORM)
        meta_optimizer.step()
        return [-g.detach() for g in hyper]

    return step


def parse_meltr(method: str) -> tuple[str, str, str | None]:
    """``meltr:<estimator>[/<hvp route>]:<backend>[:last<n>|:head]`` -> (estimator, backend, a named
    ``hypergrad_scope``); the estimator keeps its ``/route`` suffix for :func:`estimator_options`."""
    parts = method.split(":")
    scope = None
    if len(parts) > 3:
        scope = "head" if parts[3] == "head" else f"last_blocks({int(parts[3].removeprefix('last'))})"
    return parts[1], parts[2], scope


def estimator_options(estimator: str) -> dict[str, Any]:
    """The benchmark's options of ``estimator`` (``neumann/forward``: Neumann with the forward-over-reverse route)."""
    estimator, _, route = estimator.partition("/")
    options: dict[str, Any] = {"hvp": route} if route else {}
    if estimator in ("neumann", "stocbio"):
        return {**NEUMANN, **options}
    if estimator == "cg":
        return {"iters": CG_ITERS, **options}
    return options


def meltr_learner(setup: Setup, estimator: str, backend: str, scope: str | None, **options) -> AuxiliaryLearner:
    learner = AuxiliaryLearner(
        setup.model,
        setup.combiner,
        setup.optimizer,
        reg_weight=GAMMA,
        hypergrad=estimator.partition("/")[0],
        hypergrad_options=estimator_options(estimator),
        backend=backend,
        hypergrad_scope=scope,  # a named scope, resolved by the learner for this backbone
        **options,
    )
    return learner


def meltr_meta_step(setup: Setup, method: str) -> Callable[[], Any]:
    """``AuxiliaryLearner.meta_step``: replay batches, the estimator, clipping and the meta optimiser's step."""
    learner = meltr_learner(setup, *parse_meltr(method))
    for batch in setup.batches[:2]:
        learner.replay.append(batch)
    return learner.meta_step


def meltr_hypergradient(
    setup: Setup, method: str, fd_scale: float | None = None, direct_term: bool = True, stats: dict | None = None
) -> list:
    """The hypergradient of a meltr estimator x backend on the setup's batches (no meta step taken); ``stats``
    receives the estimator's statistics and the number of Hessian-vector products. ``fd_scale=None`` keeps
    ``MetaProblem``'s default step."""
    estimator, backend, scope = parse_meltr(method)
    names = select_parameters(setup.model, scope)
    problem = FixedSeeds(
        model=setup.model,
        combiner=setup.combiner,
        param_names=names,
        train_batch=setup.train_batch,
        meta_batch=setup.meta_batch,
        reg_weight=GAMMA,
        direct_term=direct_term,
        backend=BACKENDS.get(backend),
        sample_train_batch=lambda: setup.batches[2],
        lookahead_lr=INNER_LR,
        **({} if fd_scale is None else {"fd_scale": fd_scale}),
    )
    problem.setup = setup
    with sdpa_kernel(SDPBackend.MATH):
        grads = [
            g.detach() for g in build_estimator(estimator.partition("/")[0], **estimator_options(estimator))(problem)
        ]
    if stats is not None:
        stats.update(problem.stats, hessian_vector_products=problem.hessian_products)
    return grads


def make_method(setup: Setup, method: str) -> Callable[[], Any]:
    if method == "baseline":
        return baseline_step(setup)
    if method == "official":
        return official_meta_step(setup)
    if method.startswith("meltr:"):
        return meltr_meta_step(setup, method)
    if method.startswith("betty:"):
        from _hypergrad_peers import betty_meta_step

        return betty_meta_step(setup, method.split(":")[1])
    if method.startswith("torchopt:"):
        from _hypergrad_peers import torchopt_meta_step

        return torchopt_meta_step(setup, method.split(":")[1])
    raise ValueError(f"unknown method {method!r}")


# -- measurements --------------------------------------------------------------------------------------------------
def status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def release_memory() -> None:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:  # not glibc
        pass


def measure_peak(run: Callable[[], Any]) -> tuple[float, bool]:
    """Extra peak resident memory of ``run()`` in MiB, and whether the peak could be reset (else it is a bound)."""
    release_memory()
    before = status_kib("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")  # reset VmHWM to the current RSS
        exact = True
    except OSError:
        exact = False
    run()
    return (status_kib("VmHWM") - before) / 1024, exact


def warm_up_autodiff() -> None:
    """First uses of double backward and forward-mode AD initialise lazily (seconds); do it on a tiny model."""
    tiny = build_setup(
        {
            "batch": 2,
            "size": {
                "dim": 16,
                "num_heads": 2,
                "ff_dim": 32,
                "text_layers": 1,
                "video_layers": 1,
                "cross_layers": 1,
                "decoder_layers": 1,
            },
        }
    )
    for backend in ("double_backward", "jvp", "finite_difference"):
        meltr_hypergradient(tiny, f"meltr:identity:{backend}")


def set_mmap_threshold(size: int) -> None:
    """glibc ``mallopt(M_MMAP_THRESHOLD)``: allocations above ``size`` are mmapped and returned to the OS on free."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, size)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 2 * size)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass


def run_time(job: dict[str, Any]) -> dict[str, Any]:
    """Peak memory of the method's first call, then ``rounds`` interleaved (baseline, method) pairs."""
    warm_up_autodiff()
    setup = build_setup(job)
    baseline = baseline_step(setup)
    method = make_method(setup, job["method"])
    baseline()  # the optimiser state exists before anything is measured
    # Small mmap threshold for the one measured call: every freed tensor leaves the RSS, so VmHWM - VmRSS is the
    # method's working memory rather than the allocator's history. Then back to a large threshold for the timings.
    set_mmap_threshold(64 * 1024)
    extra, exact = measure_peak(method)
    set_mmap_threshold(32 * 1024 * 1024)
    baseline()
    base_times, method_times = [], []
    for round_index in range(job["rounds"]):
        order = [("b", baseline), ("m", method)]
        if round_index % 2:
            order.reverse()
        for tag, fn in order:
            start = time.perf_counter()
            fn()
            elapsed = time.perf_counter() - start
            (base_times if tag == "b" else method_times).append(elapsed)
    ratios = [m / b for m, b in zip(method_times, base_times, strict=True)]
    return {
        "baseline_s": base_times,
        "method_s": method_times,
        "ratios": ratios,
        "extra_peak_mib": extra,
        "peak_exact": exact,
        "params": sum(p.numel() for p in setup.model.parameters()),
    }


def run_epoch(job: dict[str, Any]) -> dict[str, Any]:
    """``steps`` MELTR steps (a meta step every ``meta_every``) against equal-weight steps on a copy of the model,
    one of those every ``meta_every`` MELTR steps (at least every 3), interleaved so that both see the same machine
    load. ``job["options"]`` are further ``AuxiliaryLearner`` options (``meta_train_batch``, ``track_sensitivity``,
    ``check_finite_every``)."""
    import copy

    setup = build_setup(job)
    reference = copy.deepcopy(setup.model)
    mtl = Setup(reference, setup.combiner, torch.optim.AdamW(reference.parameters(), lr=INNER_LR), setup.batches)
    mtl_step = baseline_step(mtl)
    estimator, backend, scope = parse_meltr(job["method"])
    learner = meltr_learner(setup, estimator, backend, scope, meta_every=job["meta_every"], **job.get("options", {}))
    batches = [make_batch(job["batch"], seed=1000 + i) for i in range(job["steps"])]
    mtl_step()
    learner.step(batches[-1])  # warm-up of the inner step; the learner's counters restart below
    learner.meta_step()
    learner.inner_steps = learner.steps = learner.meta_steps = 0
    # meta_source="next": the meta step due at the end of a period runs at the next step; one is due at the start so
    # that every period holds one meta step, as in the other rows
    learner.meta_pending = learner.meta_source == "next"
    mtl_times, meltr_times = [], []
    mtl_every = min(job["meta_every"], 3)
    for index, batch in enumerate(batches):
        if index % mtl_every == 0:
            start = time.perf_counter()
            mtl_step()
            mtl_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        learner.step(batch)
        meltr_times.append(time.perf_counter() - start)
    return {"mtl_step_s": mtl_times, "meltr_step_s": meltr_times, "meta_steps": learner.meta_steps}


def run_accuracy(job: dict[str, Any]) -> dict[str, Any]:
    """Hypergradients of ``job["methods"]`` at the initial point, saved to ``job["out"]``."""
    dtype = torch.float64 if job.get("float64") else torch.float32
    results: dict[str, Any] = {}
    stats: dict[str, dict] = {}
    for method in job["methods"]:
        setup = build_setup(job, dtype)  # every method starts from the same weights and combiner
        if method == "official":
            results[method] = official_meta_step(setup)()
        elif method == "plaincg":
            results[method] = plain_cg_hypergradient(setup)
        elif method.startswith("meltr:"):
            stats[method] = {}
            results[method] = meltr_hypergradient(setup, method, stats=stats[method])
        elif method.startswith("nodirect:"):  # the reference of the official computation
            results[method] = meltr_hypergradient(setup, "meltr:" + method.split(":", 1)[1], direct_term=False)
        elif method.startswith("fd_scale:"):
            scale = float(method.split(":")[1])
            results[method] = meltr_hypergradient(setup, "meltr:identity:finite_difference", fd_scale=scale)
        elif method.startswith("forward_fd_scale:"):
            scale = float(method.split(":")[1])
            results[method] = meltr_hypergradient(setup, "meltr:identity:forward_difference", fd_scale=scale)
        else:
            from _hypergrad_peers import peer_hypergradient

            results[method] = peer_hypergradient(setup, method)
        results[method] = [g.detach().double() for g in results[method]]
    torch.save(results, job["out"])
    return {"methods": list(results), "stats": stats}


def run_parts(job: dict[str, Any]) -> dict[str, Any]:
    """The pieces of a Hessian-based meta step on the train-side batch, each timed per round next to a baseline
    step: ``grad_w L_aux`` with ``create_graph``; one product ``H v`` through its graph (reverse-over-reverse); one
    product by forward-over-reverse; the mixed term through the kept graph (``double_backward``) and by a fresh
    forward-mode pass (``jvp``), the latter with the graph alive (as before) and freed."""
    warm_up_autodiff()
    setup = build_setup(job)
    baseline = baseline_step(setup)
    baseline()
    names = [n for n, p in setup.model.named_parameters() if p.requires_grad]

    def problem_of(backend: str) -> FixedSeeds:
        problem = FixedSeeds(
            model=setup.model, combiner=setup.combiner, param_names=names, train_batch=setup.train_batch,
            meta_batch=setup.meta_batch, reg_weight=GAMMA, backend=BACKENDS.get(backend),
        )  # fmt: skip
        problem.setup = setup
        return problem

    times: dict[str, list[float]] = {}

    def timed(name: str, fn: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        out = fn()
        times.setdefault(name, []).append(time.perf_counter() - start)
        return out

    with sdpa_kernel(SDPBackend.MATH):
        vector, _ = problem_of("jvp").primary_gradients()
        vector = [v.detach() for v in vector]
        for _ in range(job["rounds"]):
            timed("baseline", baseline)
            problem = problem_of("double_backward")
            graph = timed("create_graph gradient", lambda p=problem: p.aux_gradient(create_graph=True))
            timed("product, reverse-over-reverse", lambda p=problem, g=graph: p.hvp(g, vector))
            jvp_problem = problem_of("jvp")
            timed("mixed term by jvp, graph alive", lambda p=jvp_problem: p.mixed(vector))
            timed("mixed term through the kept graph", lambda p=problem, g=graph: p.mixed(vector, g))  # frees it
            del graph, problem
            timed("mixed term by jvp, graph freed", lambda p=jvp_problem: p.mixed(vector))
            timed("product, forward-over-reverse", lambda p=jvp_problem: p.hvp_forward(vector))
            timed("baseline", baseline)
    base = statistics.median(times.pop("baseline"))
    return {"baseline_s": base, "ratios": {k: [t / base for t in v] for k, v in times.items()}}


KINDS = {"time": run_time, "epoch": run_epoch, "accuracy": run_accuracy, "parts": run_parts}


def main() -> None:
    job = json.loads(sys.argv[1])
    torch.set_num_threads(job.get("threads", torch.get_num_threads()))
    result = KINDS[job["kind"]](job)
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
