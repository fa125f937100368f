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

import sys
from pathlib import Path

from colorlab.cli import error
from colorlab.config import ConfigError, split_arguments, usage_exit_code
from colorlab.models.released import KINDS, WeightsError, import_released, save_checkpoint

FLAGS = {"--out": Path, "--prior": Path, "--mask-offset": float}
MASK_OFFSETS = (0.0, 0.5)  # the released and Caffe-converted weights; colorization-pytorch's mask_cent


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if (code := usage_exit_code(argv, __doc__)) is not None:
        return code
    try:
        options, _, positionals = split_arguments(argv, (), (), "KIND PATH", FLAGS)
        if len(positionals) != 2 or positionals[0] not in KINDS:
            raise ConfigError(f"expected KIND PATH with KIND one of {', '.join(KINDS)}. Got {positionals}")
        kind, path = positionals[0], Path(positionals[1])
        mask_offset = options.get("--mask-offset", 0.0)
        if mask_offset not in MASK_OFFSETS:
            raise ConfigError(f"--mask-offset must be one of {', '.join(map(str, MASK_OFFSETS))}. Got {mask_offset}")
        out = options.get("--out", Path("runs/released") / f"{kind}.ckpt")
        if out.exists():
            raise WeightsError(f"--out {out} exists; nothing was written over: give another path")
        model = import_released(kind, path, options.get("--prior"), mask_offset)
    except ValueError as e:  # ConfigError and WeightsError among them
        return error("import_weights", e)
    save_checkpoint(model, out, path)
    print(f"{kind} weights from {path} written to {out}; e.g. python -m colorlab.colorize ckpt={out} "
          "input=PHOTO out=colorized/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
