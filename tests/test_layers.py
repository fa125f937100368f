"""The layers of colorlab: the library (data, models, nets and the shared maths) never imports a
capability subpackage (video, study, sweep) or a command module; capabilities sit on top of it."""

import ast
from pathlib import Path

import pytest

import colorlab

PACKAGE = Path(colorlab.__file__).parent
LIBRARY = ["data", "models", "nets", "evaluation", "finetune.py", "inference.py", "bins.py", "color.py", "hints.py",
           "metrics.py", "flow.py", "palette.py", "io.py", "viz.py", "embed.py", "checkpoints.py", "config.py"]
COMMANDS = ["fit", "evaluate", "compare", "colorize", "app", "prior", "prepare", "import_weights"]
FORBIDDEN = [f"colorlab.{name}" for name in ["video", "study", "sweep", *COMMANDS]]


def imported_modules(path: Path) -> set[str]:
    """Every module an ``import`` or ``from ... import`` names in the file, at any depth (lazy imports too)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def library_files() -> list[Path]:
    files = []
    for entry in LIBRARY:
        path = PACKAGE / entry
        files += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return files


@pytest.mark.parametrize("path", library_files(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_library_modules_import_no_capability_and_no_command(path):
    assert path.is_file(), f"{path} is listed as a library module but does not exist"
    offending = sorted(name for name in imported_modules(path)
                       if any(name == f or name.startswith(f + ".") for f in FORBIDDEN))
    assert not offending, f"{path.relative_to(PACKAGE)} imports {offending}"


def test_the_check_sees_lazy_imports(tmp_path):
    source = tmp_path / "lazy.py"
    source.write_text("def f():\n    from colorlab.video.flow import warp\n    import colorlab.fit\n")
    assert {"colorlab.video.flow", "colorlab.fit"} <= imported_modules(source)


def test_the_console_script_runs_each_command_as_python_m(capsys):
    from colorlab.cli import COMMANDS, main

    assert main(["--help"]) == 0
    printed = capsys.readouterr().out
    assert all(f"  {name} " in printed for name in COMMANDS)
    assert main(["fitt"]) == 2
    assert capsys.readouterr().err.strip() == ("colorlab.cli: error: unknown command 'fitt'; commands: "
                                               + ", ".join(COMMANDS))
    assert main(["compare", "missing.ckpt"]) == 2  # the command's own checks, through the same main
    assert "checkpoint(s) not found: missing.ckpt" in capsys.readouterr().err


def command_files() -> dict[str, Path]:
    """Module name -> file of every command the console script runs (a package's command is its __main__)."""
    from colorlab.cli import COMMANDS

    files = {}
    for module, _ in COMMANDS.values():
        path = PACKAGE.parent / Path(*module.split("."))
        if path.is_dir():
            module, path = f"{module}.__main__", path / "__main__"
        files[module] = path.with_suffix(".py")
    return files


@pytest.mark.parametrize("module", sorted(command_files()))
def test_commands_import_library_modules_never_other_commands(module):
    files = command_files()
    others = [name for name in files if name != module]
    offending = sorted(name for name in imported_modules(files[module])
                       if any(name == o or name.startswith(o + ".") for o in others))
    assert not offending, f"{module} imports the command(s) {offending}; move what it needs into a library module"
