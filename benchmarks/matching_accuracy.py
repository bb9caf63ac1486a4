"""Held-out matching accuracy of a pre-trained checkpoint's cross encoder.

Each of the world's test clips is scored with its own video (a matched pair, right if the logit > 0) and with the
next clip's video (a mismatched pair, right if the logit < 0); the accuracy is the mean of the two rates (chance
0.5). Also printed: the pairwise rate at which the matched pair outscores the mismatched one.

    OMP_NUM_THREADS=1 python benchmarks/matching_accuracy.py src/meltr/assets/checkpoints/violet.pt [--clips 512]
"""

import argparse

from meltr.analysis.matching import matching_accuracy
from meltr.data import make_world
from meltr.training.backbones import load_pretrained


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+", help="checkpoint files written by meltr pretrain")
    parser.add_argument("--clips", type=int, default=512, help="held-out test clips of the default world")
    args = parser.parse_args()
    world = make_world(n_pretrain=0, n_train=0, n_meta=0, n_test=args.clips)
    for path in args.checkpoints:
        result = matching_accuracy(load_pretrained(path).eval(), world.loader("test", 128, shuffle=False))
        print(
            f"{path}: accuracy {result.accuracy:.3f} (matched {result.matched:.3f}, "
            f"mismatched {result.mismatched:.3f}); pairwise {result.pairwise:.3f}"
        )


if __name__ == "__main__":
    main()
