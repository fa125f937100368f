"""The ``colorlab`` console script: ``colorlab COMMAND [key=value ...]`` runs ``python -m colorlab.COMMAND``
with the same arguments (both keep working), and the error convention every command shares."""

from __future__ import annotations

import importlib
import sys

# command -> (module whose main(argv) runs it, one line of what it does)
COMMANDS = {
    "fit": ("colorlab.fit", "train an experiment"),
    "evaluate": ("colorlab.evaluate", "metrics, plots and samples of a checkpoint on held-out data"),
    "compare": ("colorlab.compare", "several checkpoints on the same held-out images"),
    "colorize": ("colorlab.colorize", "colourise photos, optionally with hints"),
    "app": ("colorlab.app", "the interactive page (127.0.0.1)"),
    "video": ("colorlab.video", "colourise a clip with temporal consistency"),
    "video-evaluate": ("colorlab.video.evaluate", "temporal metrics of video checkpoints"),
    "prior": ("colorlab.prior", "the ab prior of a data source and its figures"),
    "prepare": ("colorlab.prepare", "write streaming shards of a folder"),
    "import-weights": ("colorlab.import_weights", "Zhang's released weights as a colorlab checkpoint"),
    "sweep": ("colorlab.sweep", "run a W&B sweep file offline (Optuna)"),
    "study": ("colorlab.study", "human real-vs-fake studies: create, serve, report, close"),
}


def error(command: str, message: object) -> int:
    """The one way a command reports bad input: one line on stderr, exit code 2."""
    print(f"colorlab.{command}: error: {message}", file=sys.stderr)
    return 2


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {what}" for name, (_, what) in COMMANDS.items()]
    return "usage: colorlab COMMAND [ARGS ...]   (the same as python -m colorlab.COMMAND ARGS ...)\n\ncommands:\n" + \
        "\n".join(lines) + "\n\ncolorlab COMMAND --help prints a command's own help."


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        return error("cli", f"unknown command {name!r}; commands: {', '.join(COMMANDS)}")
    module = importlib.import_module(COMMANDS[name][0])
    if not hasattr(module, "main"):  # a package: its __main__ holds main
        module = importlib.import_module(COMMANDS[name][0] + ".__main__")
    return module.main(rest)


if __name__ == "__main__":
    sys.exit(main())
