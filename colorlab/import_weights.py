"""Import Zhang's released weights as a colorlab checkpoint:
``python -m colorlab.import_weights {eccv16,siggraph17} PATH [--out CKPT] [--prior PRIOR.npy] [--mask-offset M]``.

- eccv16: richzhang/colorization's ``colorizers/eccv16.py`` state dict (colorization_release_v2-*.pth) into
  colorlab's ``eccv16`` net at width 64, 313 bins; decoding is the release's mean (model.temperature=1;
  0.38 gives the paper's annealed mean). ``--prior`` takes the release's prior_probs.npy (313 probabilities,
  resources/ of richzhang/colorization): the rebalancing weights and ``auc_rebalanced`` use it.
- siggraph17: ``colorizers/siggraph17.py``'s state dict (siggraph17-*.pth) or colorization-pytorch's
  ``latest_net_G.pth`` into colorlab's ``siggraph17`` net, the hints formulation. ``--mask-offset 0.5`` for
  checkpoints trained with colorization-pytorch (its mask_cent); 0 for the released and Caffe-converted weights.

Loading never runs pickled code (torch.load with weights_only=True). Every colorlab command then takes the
checkpoint (default ``runs/released/<kind>.ckpt``). docs/published_models.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from colorlab.cli import error
from colorlab.models.released import KINDS, WeightsError, import_released, save_checkpoint


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line and exit 2, as every colorlab command
        sys.exit(error("import_weights", message))


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog="python -m colorlab.import_weights", description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("path", type=Path, help="the released .pth")
    parser.add_argument("--out", type=Path, help="the checkpoint to write (default: runs/released/KIND.ckpt)")
    parser.add_argument("--prior", type=Path, help="prior_probs.npy: the release's ab prior over the 313 bins")
    parser.add_argument("--mask-offset", type=float, default=0.0, choices=(0.0, 0.5),
                        help="siggraph17: 0.5 for colorization-pytorch's own checkpoints (default 0)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    out = args.out or Path("runs/released") / f"{args.kind}.ckpt"
    try:
        if out.exists():
            raise WeightsError(f"--out {out} exists; nothing was written over: give another path")
        model = import_released(args.kind, args.path, args.prior, args.mask_offset)
    except ValueError as e:
        return error("import_weights", e)
    save_checkpoint(model, out, args.path)
    print(f"{args.kind} weights from {args.path} written to {out}; e.g. python -m colorlab.colorize ckpt={out} "
          "input=PHOTO out=colorized/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
