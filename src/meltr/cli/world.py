"""``meltr world``: look at the synthetic video-language world.

``meltr world preview [--out PATH] [--n N] [--seed S]`` writes a PNG grid of the first clips of a split
(frames across, clips down) with each clip's first caption under its row.

``meltr world export --format msrvtt|youcook2|tgifqa|msvdqa|mosi --out DIR`` writes the world's train / meta /
test splits in a benchmark's own layout (docs/data.md), to be read back with ``meltr.data.formats.read_dataset``.

Both take ``--config X.yaml`` (fields of :class:`~meltr.data.WorldConfig`), ``KEY=VALUE`` overrides and
``--print-config``; their options set the fields of the same name.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from tqdm import tqdm

from meltr.cli._config import add_config_arguments, print_config, resolve
from meltr.data.config import SPLITS, WorldConfig

EXPORT_FORMATS = ("msrvtt", "youcook2", "tgifqa", "msvdqa", "mosi")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``world`` subcommand and its ``preview`` sub-subcommand."""
    parser = subparsers.add_parser(
        "world",
        help="look at the synthetic video-language world",
        description="Look at the synthetic video-language world (meltr.data).",
    )
    commands = parser.add_subparsers(title="world commands", dest="world_command", metavar="WORLD_COMMAND")
    parser.set_defaults(func=lambda args: (parser.print_help(), 0)[1])

    preview = commands.add_parser(
        "preview",
        help="write a PNG grid of a few clips with their captions",
        description="Write a PNG grid of the first clips of a split: frames across, "
        "clips down, each clip's first caption under its row.",
    )
    preview.add_argument(
        "--out", type=Path, default=Path("world_preview.png"), help="PNG file to write, or a folder to write it in"
    )
    preview.add_argument("--n", type=int, default=6, help="number of clips (rows)")
    preview.add_argument("--seed", type=int, default=None, help="seed of the world (default: 0)")
    preview.add_argument(
        "--split",
        choices=SPLITS,
        default="test",
        help="split whose first clips are shown (the same clips as in a full world)",
    )
    preview.add_argument(
        "--n-frames", type=int, default=None, help=f"frames per clip (default: {WorldConfig.n_frames})"
    )
    preview.add_argument(
        "--image-size", type=int, default=None, help=f"frame size in pixels (default: {WorldConfig.image_size})"
    )
    add_config_arguments(preview, "background_texture=0.5")
    preview.set_defaults(func=run_preview)

    export = commands.add_parser(
        "export",
        help="write the world's train / meta / test splits in a benchmark's format",
        description="Write the world's train / meta / test splits in a benchmark's own layout (docs/data.md): "
        "video files (lossless H.264 RGB by default) or feature pickles, and annotation files with the real "
        "field names.",
    )
    export.add_argument("--format", required=True, choices=EXPORT_FORMATS, help="the benchmark layout")
    export.add_argument("--out", type=Path, required=True, help="folder to write (created)")
    export.add_argument("--seed", type=int, default=None, help="seed of the world (default: 0)")
    for name, what in (("n_train", "clips of the train split"), ("n_meta", "clips of the meta split"),
                       ("n_test", "clips of the test split"), ("n_frames", "frames per clip"),
                       ("image_size", "frame size in pixels")):  # fmt: skip
        default = getattr(WorldConfig, name)
        export.add_argument(f"--{name.replace('_', '-')}", type=int, default=None, help=f"{what} (default: {default})")
    add_config_arguments(export, "pixel_noise=0.1")
    export.add_argument(
        "--codec",
        choices=("lossless", "yuv420p"),
        default="lossless",
        help="lossless H.264 RGB (a round trip is exact) or ordinary yuv420p H.264",
    )
    export.add_argument(
        "--features", action="store_true", help="write a feature pickle (pixels per frame) instead of video files"
    )
    export.set_defaults(func=run_export)


def run_preview(args: argparse.Namespace) -> int:
    """Render the preview of ``args`` and print where it went."""
    if args.n < 1:
        raise ValueError(f"--n must be at least 1, got {args.n}")
    if args.out.is_dir() or not args.out.suffix:
        # a folder (existing, or a name without a suffix) gets the default file name inside it
        args.out = args.out / "world_preview.png"
    sizes = {f"n_{name}": (args.n if name == args.split else 0) for name in SPLITS}
    options = {"seed": args.seed, "n_frames": args.n_frames, "image_size": args.image_size, **sizes}
    config = resolve(WorldConfig, args, options)
    if args.print_config:
        return print_config(config)
    path = write_preview(config, args.split, args.out)
    print(f"wrote {path} ({args.n} clips of the {args.split} split, seed {config.seed})")
    return 0


def run_export(args: argparse.Namespace) -> int:
    """Generate the world of ``args`` and write it in ``args.format`` under ``args.out``."""
    from meltr.data.formats import export_world
    from meltr.data.world import make_world

    names = ("seed", "n_train", "n_meta", "n_test", "n_frames", "image_size")
    config = resolve(WorldConfig, args, {"n_pretrain": 0, **{name: getattr(args, name) for name in names}})
    if args.print_config:
        return print_config(config)
    world = make_world(config, progress=True)
    export_world(world, args.format, args.out, lossless=args.codec == "lossless", features=args.features)
    sizes = ", ".join(f"{name} {len(world[name])}" for name in ("train", "meta", "test"))
    print(f"wrote the world (seed {config.seed}: {sizes} clips) as {args.format} under {args.out}")
    return 0


def write_preview(config: WorldConfig, split: str, out: Path) -> Path:
    """Render every clip of ``split`` of the world of ``config`` into one PNG at ``out``.

    Args:
        config: the world (its ``split`` should be small: one row per clip).
        split: which split to show.
        out: the PNG to write (parent directories are created).

    Returns:
        ``out``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from meltr.data.lexicon import EVENT_CLASSES
    from meltr.data.world import make_world

    world = make_world(dataclasses.replace(config), progress=True)
    clips = world.splits[split]
    n, frames = len(clips), config.n_frames
    cell = 1.1
    fig, axes = plt.subplots(n, frames, figsize=(cell * frames, (cell + 0.55) * n), squeeze=False)
    bar = tqdm(total=n + 1, desc="drawing the preview", unit="clip", disable=None, leave=False)
    for i in range(n):
        bar.update(1)
        video = clips.video[i].transpose(0, 2, 3, 1)  # [F, H, W, 3]
        for f in range(frames):
            ax = axes[i, f]
            ax.imshow(video[f], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(f"frame {f}", fontsize=8)
        clip = clips.clips[i]
        qa = clip.annotation.qa[0]
        text = (
            f"{clips.captions[i][0]}\n"
            f"[{EVENT_CLASSES[clip.label]}]  Q: {qa.question}?  A: {qa.answer}  "
            f"sentiment {clip.annotation.sentiment:+.1f}"
        )
        axes[i, 0].annotate(
            text,
            xy=(0, -0.08),
            xycoords="axes fraction",
            ha="left",
            va="top",
            fontsize=9,
            annotation_clip=False,
        )
    fig.subplots_adjust(
        left=0.01, right=0.99, top=1 - 0.3 / ((cell + 0.55) * n), bottom=0.35 / n, wspace=0.05, hspace=0.6
    )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    bar.update(1)  # the last step is writing the file
    bar.close()
    return out
