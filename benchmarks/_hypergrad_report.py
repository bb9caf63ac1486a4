"""The Markdown report and the plot of benchmarks/hypergrad.py: ``python _hypergrad_report.py raw.json report.md``."""

from __future__ import annotations

import json
import platform
import statistics
import sys
from pathlib import Path

import torch

PAPER_TABLE8 = {"identity": 4.9, "neumann": 16.6, "cg": 14.1, "unrolled": 136.9, "stocbio": 25.4}
PAPER_NAMES = {
    "identity": "AID-FP-Lite (MELTR's, H = I)",
    "neumann": "AuxiLearn (AID-FP, Neumann, 3 terms)",
    "cg": "AID-CG (5 iterations)",
    "unrolled": "Meta-Weight-Net (ITD, one look-ahead step)",
    "stocbio": "StocBiO (Neumann on fresh batches)",
}
PEER_NAMES = {
    "betty:darts": "Betty `darts` (finite differences, H = I)",
    "betty:neumann": "Betty `neumann` (3 terms)",
    "betty:cg": "Betty `cg` (5 iterations)",
    "torchopt:neumann": "TorchOpt `custom_root` + `solve_inv(ns=True)` (3 terms)",
    "torchopt:cg": "TorchOpt `custom_root` + `solve_cg` (5 iterations)",
}
LIKE_WITH_LIKE = {
    "meltr:identity:jvp": ["betty:darts"],
    "meltr:identity:finite_difference": ["betty:darts"],
    "meltr:neumann:jvp": ["betty:neumann", "torchopt:neumann"],
    "meltr:cg:jvp": ["betty:cg", "torchopt:cg"],
}


def median_ratio(result: dict) -> float:
    return statistics.median(result["ratios"]) if result and "ratios" in result else float("nan")


def spread(result: dict) -> str:
    if not result or "ratios" not in result:
        return f"failed: {result.get('error', '?') if result else '?'}"
    ratios = result["ratios"]
    if len(ratios) == 1:
        return f"{ratios[0]:.2f}"
    return f"{statistics.median(ratios):.2f} [{min(ratios):.2f}-{max(ratios):.2f}]"


def describe(method: str) -> str:
    if method == "official":
        return "official three-call algorithm (identity, double backward, no direct term)"
    if method in PEER_NAMES:
        return PEER_NAMES[method]
    parts = method.split(":")
    scope = ", scope = last block of each stack (`last_blocks(model, 1)`)" if len(parts) > 3 else ""
    return f"meltr `{parts[1]}` + `{parts[2]}`{scope}"


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        memory = next(line for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal"))
        memory_gib = int(memory.split()[1]) / 2**20
    except (OSError, StopIteration):
        memory_gib = float("nan")
    import os

    return (
        f"{cpu}, {os.cpu_count()} cores, {memory_gib:.0f} GiB RAM, Linux {platform.release()}, "
        f"Python {platform.python_version()}, torch {torch.__version__}"
    )


def accuracy(files: list[str]) -> dict:
    """Relative error ``||g - g_ref|| / ||g_ref||`` and cosine of every float32 hypergradient to its reference."""
    got, ref = torch.load(files[0]), torch.load(files[1])

    def reference_of(method: str) -> str:
        if method == "official":
            return "nodirect:identity:double_backward"
        if method.startswith("fd_scale:") or method == "betty:darts":
            return "meltr:identity:double_backward"
        if method in ("betty:cg", "torchopt:cg"):
            return "plaincg"  # their CG has no curvature check: textbook CG in float64
        return f"meltr:{method.split(':')[1]}:double_backward"

    table = {}
    for method, grads in got.items():
        name = reference_of(method)
        expected = ref[name]
        difference = sum(float(((g - e) ** 2).sum()) for g, e in zip(grads, expected, strict=True))
        norm = sum(float((e**2).sum()) for e in expected)
        own = sum(float((g**2).sum()) for g in grads)
        dot = sum(float((g * e).sum()) for g, e in zip(grads, expected, strict=True))
        table[method] = {
            "reference": name,
            "error": (difference / norm) ** 0.5,
            "cosine": dot / max((norm * own) ** 0.5, 1e-300),
        }
    return table


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    methods = results["config"]["sweep_methods"]
    for method in methods:
        points = [
            (row["methods"][method]["params"] / 1e6, median_ratio(row["methods"][method]), row["methods"][method])
            for row in results["sweep"]
            if "ratios" in row["methods"].get(method, {})
        ]
        if not points:
            continue
        label = "official (double backward)" if method == "official" else method.removeprefix("meltr:")
        left.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
        right.plot([p[0] for p in points], [p[2]["extra_peak_mib"] for p in points], marker="o", label=label)
    left.axhline(1.0, color="grey", lw=0.8, ls=":")
    left.set(xscale="log", xlabel="backbone parameters (millions)", ylabel="meta step / training step (time)")
    left.set_title("time of a meta step, in training steps")
    right.set(xscale="log", yscale="log", xlabel="backbone parameters (millions)", ylabel="extra peak memory (MiB)")
    right.set_title("extra peak memory of a meta step")
    for axis in (left, right):
        axis.grid(alpha=0.3, which="both")
        axis.legend(fontsize=8)
    figure.suptitle(f"UniVL-style backbone, batch {results['config']['sweep_batch']}, {results['threads']} thread(s)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def write(results: dict, output: Path) -> None:
    config, grid = results["config"], results["grid"]
    files = results.get("accuracy_files", [])
    acc = accuracy(files) if files and all(Path(f).exists() for f in files) else {}
    official = grid.get("official", {})
    official_ratio = median_ratio(official)
    official_memory = official.get("extra_peak_mib", float("nan"))
    lines: list[str] = []
    add = lines.append
    png = output.with_name(output.stem + "-sweep.png")
    plot(results, png)

    add("# Hypergradient efficiency benchmark\n")
    add(
        "How much a MELTR meta step costs against a plain multi-task training step, for every hypergradient "
        "estimator x mixed-term backend of meltr, for the official three-call algorithm and for Betty and TorchOpt "
        "on the same bi-level problem; the epoch overhead of Table 8 of MELTR; and how the overhead grows with the "
        "size of the backbone (the question of the scalability note, papers/003).\n"
    )
    add(f"- Generated by `python benchmarks/hypergrad.py` on {results['started']} (wall time "
        f"{results['wall_s'] / 60:.1f} min).")  # fmt: skip
    add(f"- Machine: {machine()}; {results['threads']} intra-op thread(s) per measurement.")
    before, after = results["load_before"], results["load_after"]
    add(
        f"- Load average (1/5/15 min) at the start {before[0]:.1f}/{before[1]:.1f}/{before[2]:.1f}, at the end "
        f"{after[0]:.1f}/{after[1]:.1f}/{after[2]:.1f}: the machine is shared, so absolute times move; every time "
        "below is therefore a ratio to the baseline step measured in the same process, the two interleaved."
    )
    size = config["size"] or "default preset"
    add(
        f'- Problem: `build_backbone("univl", size="default", vocab_size=1000, **{size})`, the eight per-sample '
        f"pretext losses, batch {config['batch']} (text 32 tokens, 8 frames of 32x32), MELTR combiner of the official "
        "UniVL sizes (d=256, 8 heads) with `align` as primary task, gamma = 0.1, inner AdamW, meta Adam (1e-3, weight "
        "decay 3e-5, clip 50); Neumann: 3 terms, step 0.1; CG: 5 iterations."
    )
    add(
        "- Baseline (= 1.00): forward, backward of the sum of the eight batch-mean losses, AdamW step. A meta step "
        "is `AuxiliaryLearner.meta_step()` (replayed batches, estimator, clipping, meta optimiser) or its "
        "counterpart. Extra peak memory: rise of `VmHWM` over the resident set after setup during the method's first "
        "call, in a fresh process per method (glibc's mmap threshold lowered for that call so that freed tensors "
        "leave the resident set).\n"
    )

    # -- targets ---------------------------------------------------------------------------------------------------
    add("## Targets\n")
    jvp = grid.get("meltr:identity:jvp", {})
    time_ratio = median_ratio(jvp) / official_ratio
    memory_ratio = jvp.get("extra_peak_mib", float("nan")) / official_memory
    add(
        "Strict comparisons of medians; differences under ~10% are within the spread of the rounds (see the ranges "
        "below), and meltr's `cg` is cheaper than the peers' partly because it stops at negative curvature (see "
        "the accuracy section).\n"
    )
    add("| target | measured | met |")
    add("|---|---|---|")
    met = "yes" if time_ratio <= 0.75 else "no"
    add(f"| identity/jvp meta step <= 0.75x the official algorithm's time | {time_ratio:.2f}x "
        f"({median_ratio(jvp):.2f} vs {official_ratio:.2f} training steps) | {met} |")  # fmt: skip
    add(f"| identity/jvp extra peak memory <= 0.6x the official's | {memory_ratio:.2f}x "
        f"({jvp.get('extra_peak_mib', float('nan')):.0f} vs {official_memory:.0f} MiB) | "
        f"{'yes' if memory_ratio <= 0.6 else 'no'} |")  # fmt: skip
    for ours, peers in LIKE_WITH_LIKE.items():
        if ours not in grid:
            continue
        for peer in peers:
            if peer not in grid:
                continue
            faster = median_ratio(grid[ours]) < median_ratio(grid[peer])
            accuracy_key = ours
            ours_error = acc.get(accuracy_key, {}).get("error", float("nan"))
            peer_error = acc.get(peer, {}).get("error", float("nan"))
            as_accurate = ours_error <= max(peer_error * 1.5, 1e-5)
            label = ours.removeprefix("meltr:")
            add(
                f"| `{label}` faster than {peer} at equal or better accuracy | time "
                f"{median_ratio(grid[ours]):.2f} vs {median_ratio(grid[peer]):.2f}; error {ours_error:.1e} vs "
                f"{peer_error:.1e} | {'yes' if faster and as_accurate else 'no'} |"
            )
    sweep_ratios = {
        method: [median_ratio(row["methods"].get(method, {})) for row in results["sweep"]]
        for method in config["sweep_methods"]
    }
    for method, ratios in sweep_ratios.items():
        if method == "official" or len(ratios) < 2:
            continue
        grows = ratios[-1] > 1.1 * ratios[0]
        add(
            f"| overhead of `{method.removeprefix('meltr:')}` does not grow with size | "
            f"{' -> '.join(f'{r:.2f}' for r in ratios)} (smallest to largest) | {'no' if grows else 'yes'} |"
        )
    add("")

    # -- grid ------------------------------------------------------------------------------------------------------
    add(f"## Meta step on the reference backbone ({jvp.get('params', 0) / 1e6:.1f}M parameters, batch "
        f"{config['batch']})\n")  # fmt: skip
    add(
        "Time in training steps (median of interleaved rounds [min-max]); `vs official` divides by the official "
        "algorithm's median. Memory: extra peak of one call.\n"
    )
    add("| method | time / train step | vs official | extra peak MiB | vs official |")
    add("|---|---|---|---|---|")
    base = grid.get("official", {})
    for method, result in grid.items():
        if "ratios" not in result:
            add(f"| {describe(method)} | {spread(result)} | | | |")
            continue
        memory = result["extra_peak_mib"]
        add(
            f"| {describe(method)} | {spread(result)} | {median_ratio(result) / official_ratio:.2f} | {memory:.0f} | "
            f"{memory / official_memory:.2f} |"
        )
    baseline_times = [t for r in grid.values() if "baseline_s" in r for t in r["baseline_s"]]
    baseline_memory = statistics.median(
        [r["extra_peak_mib"] for m, r in grid.items() if m.startswith("meltr:identity") and "ratios" in r] or [0]
    )
    del base, baseline_memory
    if baseline_times:
        add(
            f"\nThe baseline training step took {statistics.median(baseline_times):.2f} s (median over all processes, "
            f"{min(baseline_times):.2f}-{max(baseline_times):.2f} s).\n"
        )

    # -- epochs ----------------------------------------------------------------------------------------------------
    add(f"## An epoch of fine-tuning: Table 8 of MELTR ({config['epoch_steps']} steps, meta step every "
        f"{config['meta_every']})\n")  # fmt: skip
    add(
        "Equal-weight multi-task learning (MTL) against MELTR with each estimator, measured in one process with an "
        "MTL step interleaved every meta period; overhead = MELTR epoch / (steps x median MTL step) - 1. MELTR's inner "
        "step includes the combiner's forward and the per-task sensitivity it logs.\n"
    )
    add("| method | backend | MELTR epoch (s) | MTL epoch (s) | overhead | paper (Table 8, V100, MSRVTT) |")
    add("|---|---|---|---|---|---|")
    for method, result in results["epoch"].items():
        _, estimator, backend = method.split(":")[:3]
        if len(method.split(":")) > 3:
            backend += ", scope last block"
        if "meltr_step_s" not in result:
            add(f"| {PAPER_NAMES[estimator]} | {backend} | failed | | | |")
            continue
        meltr_epoch = sum(result["meltr_step_s"])
        mtl_epoch = len(result["meltr_step_s"]) * statistics.median(result["mtl_step_s"])
        add(
            f"| {PAPER_NAMES[estimator]} | {backend} | {meltr_epoch:.1f} | {mtl_epoch:.1f} | "
            f"+{100 * (meltr_epoch / mtl_epoch - 1):.1f}% | +{PAPER_TABLE8[estimator]}% |"
        )
    add("")

    # -- accuracy --------------------------------------------------------------------------------------------------
    if acc:
        add(f"## Accuracy against float64 (batch {config['accuracy_batch']})\n")
        add(
            "Every float32 hypergradient at the same weights, combiner, batches and masks, against the same estimator "
            "computed in float64 with the double backward (like with like: Betty's `darts` is the identity estimator "
            "with finite differences; the official algorithm drops the direct term, so its reference does too). "
            "Relative error `||g - g_ref|| / ||g_ref||`.\n"
        )
        add("| method | float64 reference | relative error | cosine |")
        add("|---|---|---|---|")
        for method, row in acc.items():
            if method.startswith("fd_scale:"):
                continue
            add(f"| {describe(method)} | `{row['reference']}` | {row['error']:.1e} | {row['cosine']:.6f} |")
        add(
            "\nA float32 error of ~1e-6 is rounding: the result is exact. Like with like for CG: meltr's `cg` stops "
            "at the first direction of non-positive curvature (a backbone's Hessian is indefinite), TorchOpt's and "
            "Betty's never do, so their reference is textbook CG with 5 iterations in float64 (`plaincg`). On this "
            "problem meltr's estimators reported:\n"
        )
        for method, stat in results.get("accuracy_stats", {}).get("stats", {}).items():
            if stat.get("hessian_vector_products"):
                details = ", ".join(
                    f"{k} = {v:.3g}" for k, v in stat.items() if k.startswith(("cg_", "neumann_", "hessian"))
                )
                add(f"- `{method.removeprefix('meltr:')}`: {details}")
        add("\n### The finite-difference step\n")
        add(
            "Identity estimator, `finite_difference` backend, step `||e v|| = fd_scale * ||w||`, against the float64 "
            "reference (the default was `fd_scale = 1e-3` and is now `1e-5`, after this table):\n"
        )
        add("| fd_scale | relative error |")
        add("|---|---|")
        for method, row in acc.items():
            if method.startswith("fd_scale:"):
                add(f"| {method.split(':')[1]} | {row['error']:.1e} |")
        add("")

    # -- sweep -----------------------------------------------------------------------------------------------------
    add(f"## Size sweep (batch {config['sweep_batch']})\n")
    add(f"![overhead vs size]({png.name})\n")
    header = "| parameters | baseline step (s) | " + " | ".join(
        f"{m.removeprefix('meltr:')} time / memory MiB" for m in config["sweep_methods"]
    )
    add(header + " |")
    add("|---" * (2 + len(config["sweep_methods"])) + "|")
    for row in results["sweep"]:
        first = next(iter(row["methods"].values()))
        cells = []
        for method in config["sweep_methods"]:
            result = row["methods"].get(method, {})
            if "ratios" in result:
                cells.append(f"{spread(result)} / {result['extra_peak_mib']:.0f}")
            else:
                cells.append("failed")
        params = first.get("params", 0) / 1e6
        base_time = statistics.median(first["baseline_s"]) if "baseline_s" in first else float("nan")
        add(f"| {params:.1f}M | {base_time:.2f} | " + " | ".join(cells) + " |")
    add("")
    output.write_text("\n".join(lines) + "\n" + STATIC)


STATIC = """
## Reading the numbers

**Why jvp and finite differences are cheaper.** `L_aux = M(l(w); phi)`, so
`grad_phi <v, grad_w L_aux> = sum_t c_t grad_phi dM/dl_t` with `c_t = <v, grad_w l_t>` (an exact form,
`meltr.hypergrad.backends`). The official algorithm builds the backward graph of the backbone with
`create_graph=True` and differentiates
it again: a forward, a backward that records its own graph, and a backward through that graph, all alive at once.
`jvp` gets every `c_t` (per sample) from one forward-mode pass that keeps no graph, then differentiates the tiny
combiner twice; `finite_difference` gets them from two no-grad forwards. The forward-mode pass costs about one
training step (a profile shows 70% of it in the three matrix products per linear layer that forward mode needs: the
primal and two tangent terms), so it is as fast as forward mode can be here. Neither backend touches the rest of the
meta step: the primary gradient `grad_w L_pri`, one forward and backward on the meta batch, so the identity estimator
costs at least one training step plus the mixed term, and its peak memory is that of a training step.

**Estimators with Hessian-vector products** (Neumann, CG, StocBiO) pay for a `create_graph` gradient of `L_aux` and
a double backward per Hessian-vector product whatever the backend: the backend only replaces the final mixed term,
one double backward out of several, and their memory is set by the `create_graph` graph. The unrolled estimator
with `double_backward` reuses the graph of its look-ahead gradient for the mixed term, which makes it as fast as
with `jvp` but twice as large in memory.

**Table 8.** With a meta step every 3 steps, an epoch's overhead is about a third of a meta step's cost in training
steps plus the combiner's share of the inner step. The identity estimator's meta step cannot cost less than the
primary gradient (one forward and backward), so a compute-bound epoch cannot show less than about +33%; the paper's
+4.9% (and +14-25% for the Hessian-based estimators) must come from an epoch dominated by something else (data
loading, feature extraction, evaluation) or from rarer meta steps. Here the data are in memory and only compute is
timed. The ordering of the paper holds for AID-FP-Lite being the cheapest exact scheme and ITD (Meta-Weight-Net)
costing about +120-140%; the Hessian-based schemes cost more here than in the paper.

**Hypergradient scope** (`AuxiliaryLearner(hypergrad_scope=meltr.hypergrad.scope.last_blocks(model, n))`). The rows
"scope = last block" differentiate only through the last block of every transformer stack and the heads. The
backward passes stop at the earliest scoped layer and the forward-mode tangents start there, so the meta step gets
cheaper; the price is bias: the estimate becomes `d_phi L_pri - grad_phi <v_S, grad_{w_S} L_aux>`, the full one with
the primary gradient zeroed outside `S` (tests/test_scope.py checks exactly this), i.e. it ignores how the combiner
moves every weight outside the scope. Use it when the meta step dominates (large backbones, frequent meta steps,
Hessian-based estimators); keep the full scope when the identity/jvp step is cheap enough.

**Finite differences in float32.** The error of a central difference is truncation `O(e^2)` plus float32 rounding of
the losses divided by the step. These losses bend sharply along the primary gradient (temperature-scaled contrastive
losses, vocabulary-sized softmaxes), so the first default step `fd_scale = 1e-3` was far outside the linear regime
(see the step table); `1e-5`, the best step of the sweep here and on the tiny backbones of
tests/test_backends_agreement.py, is now the default. `jvp` has
no step to tune and is exact to float32 rounding. With Neumann or CG the vector `q` is not the primary gradient and
the same relative step fares differently; prefer `jvp` there.

**Size.** Every part of a meta step scales with the backbone as the training step does, so the ratios stay flat;
the combiner's fixed cost (the MELTR transformer over B x T loss tokens) weighs most on the smallest backbones. The
finite-difference backend also builds a perturbed copy of the weights per forward, which shows once the weights are
large against the batch's activations (batch 8 at ~100M parameters).

**Betty and TorchOpt.** Both are used through their public APIs on the same problem (benchmarks/_hypergrad_peers.py).
Betty's `darts` needs a forward with graph and a backward to phi at each of `w +- e v` with an absolute step
`||e v|| = darts_alpha = 0.01`; its `neumann` and `cg` build the `create_graph` gradient once and use a double
backward for every product and for the mixed term. Betty 0.2.1's `cg` updates the search direction with the previous
residual (`p_new = r + beta p` instead of `r_new + beta p`), so it is not the conjugate gradient method, hence its
error. Betty rebuilds the optimiser from `type(opt)(params, **opt.defaults)`, which fails on torch 2.13's AdamW: the
benchmark gives Betty's lower level `Adam(decoupled_weight_decay=True)`, the same update. TorchOpt's `custom_root`
recomputes the optimality condition `grad_w L_aux` once for the Hessian products and once more for the mixed term.
"""


def main() -> None:
    raw, output = Path(sys.argv[1]), Path(sys.argv[2])
    write(json.loads(raw.read_text()), output)


if __name__ == "__main__":
    main()
