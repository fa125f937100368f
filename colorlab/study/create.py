"""``create``: held-out images, colourized by every checkpoint, stored with the study's design.

The images are the first ``n_images`` of the validation split of the first checkpoint's data
(deterministic; ``data=...`` / ``data.KEY=...`` choose another source), so no method was trained on
them. Every checkpoint must work at the same image size (real and fake must not differ in size).
Files: ``DIR/images/real/NNNN.png``, ``DIR/images/<method>/NNNN.png`` (uint8 sRGB at data.size) and
``DIR/images/catch/NNNN.png`` (the real photo with its hues turned by 180 degrees, for catch trials),
``DIR/study.json`` (settings, methods, the database when it is not ``DIR/study.db``; never a
password). Nothing is written until every input has been checked; a study name in use is refused
before anything is computed.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
from pathlib import Path

import sqlalchemy as sa
import torch
from tqdm import tqdm

from colorlab.study import db

CONTROL_NAMES = {"2afc": "real vs real (control)", "single": "real photos (control)"}
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


def study_directory(root: Path, name: str) -> Path:
    if not NAME_PATTERN.fullmatch(name):
        raise ValueError(f"name={name!r}: use 1-64 letters, digits, '-' or '_' (it names a folder)")
    return root / name


def method_names(experiments: list[str]) -> list[str]:
    """Experiment names as folder names, made unique with -2, -3, ... (two checkpoints of one experiment)."""
    names, seen = [], {"real": 1, "catch": 1}  # images/real/ and images/catch/ are taken
    for experiment in experiments:
        experiment = re.sub(r"[^A-Za-z0-9_-]", "_", experiment)[:60] or "method"
        seen[experiment] = seen.get(experiment, 0) + 1
        names.append(experiment if seen[experiment] == 1 else f"{experiment}-{seen[experiment]}")
    return names


def held_out_images(cfg, n_images: int, models: list, names: list[str]) -> dict[str, list]:
    """{'real': [uint8 (H, W, 3)], name: [...]} for the first n_images validation items."""
    from omegaconf import OmegaConf

    from colorlab.color import lab_to_uint8
    from colorlab.data import DeviceBatches, embeddings_for, validation_data

    images: dict[str, list] = {"real": []}
    datamodule = None
    for name, model in zip(names, models, strict=True):
        model_cfg = OmegaConf.merge(OmegaConf.create(model.config), {"data": cfg.data})
        # one data source for every method, each with its own embeddings (fusion models)
        datamodule = (validation_data(model_cfg, num_workers=0) if datamodule is None
                      else embeddings_for(datamodule, model_cfg))
        available = len(datamodule.val_set)
        if available < n_images:
            raise ValueError(f"the validation split has {available} images and the study needs n_images={n_images}; "
                             "lower n_images (or practice/trials) or raise data.val_size")
        images[name] = []
        with tqdm(total=n_images, desc=f"colourizing with {name}", disable=None) as bar:
            for batch in DeviceBatches(datamodule, "cpu"):
                fake = lab_to_uint8(model.predict_lab(batch)).permute(0, 2, 3, 1).numpy()
                take = min(len(fake), n_images - len(images[name]))
                images[name] += list(fake[:take])
                if name == names[0]:
                    images["real"] += list(batch["rgb"][:take].permute(0, 2, 3, 1).numpy())
                bar.update(take)
                if len(images[name]) == n_images:
                    break
    return images


def hue_rotated(rgb):
    """uint8 (H, W, 3) -> the same photo with a and b negated in Lab (hues turned by 180 degrees, lightness
    kept): skin turns blue-green, sky orange; an obviously wrong colouring for catch trials."""
    from colorlab.color import lab_to_uint8, uint8_to_lab

    lab = uint8_to_lab(torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None])  # (1, 3, H, W)
    lab[:, 1:] *= -1
    return lab_to_uint8(lab)[0].permute(1, 2, 0).numpy()


def check_new_study(name: str, directory: Path, db_url: str | None) -> str:
    """The database URL of a new study named ``name``; ValueError if the name is taken in the folder or,
    for a shared database, there."""
    if directory.exists():
        raise ValueError(f"a study named {name!r} exists already ({directory}); choose another name, or "
                         f"report/serve the existing one")
    db_url = db_url or f"sqlite:///{(directory / 'study.db').resolve()}"
    if not db_url.startswith("sqlite"):  # a shared database: the name must be free there too
        engine = db.connect(db_url, create=True)
        with engine.connect() as conn:
            if db.study_row(conn, name) is not None:
                raise ValueError(f"a study named {name!r} exists already in {db.redacted(db_url)}; choose another")
    return db_url


def load_methods(checkpoints: list[Path], data_overrides: list[str]):
    """(models, the first checkpoint's config with the data overrides): ValueError for a missing checkpoint
    or checkpoints working at different sizes (a study shows every method on the same images)."""
    from omegaconf import OmegaConf

    from colorlab.config import compute_device, override
    from colorlab.models import load_colorizer

    if not checkpoints:
        raise ValueError("give at least one checkpoint: ckpt=PATH (repeat ckpt= for several methods)")
    missing = [str(p) for p in checkpoints if not Path(p).is_file()]
    if missing:
        raise ValueError(f"checkpoint(s) not found: {', '.join(missing)}")
    device = compute_device()
    models = [load_colorizer(path, device) for path in checkpoints]
    cfg = override(OmegaConf.create(models[0].config), data_overrides)
    sizes = {str(path): model.config["data"]["size"] for path, model in zip(checkpoints, models, strict=True)}
    if len(set(sizes.values())) > 1 or ("data.size" in " ".join(data_overrides) and
                                        cfg.data.size != models[0].config["data"]["size"]):
        detail = ", ".join(f"{p}: {s} px" for p, s in sizes.items())
        raise ValueError(f"the checkpoints work at different image sizes ({detail}); a study compares methods "
                         "on the same images at one size: use checkpoints trained at one data.size")
    return models, cfg


def write_study_folder(directory: Path, images: dict[str, list], description: dict) -> None:
    """images/<folder>/NNNN.png and study.json, written beside ``directory`` and renamed into place, so a
    study folder is whole or absent."""
    from PIL import Image

    partial = directory.with_name(f".{directory.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    for folder, items in images.items():
        (partial / "images" / folder).mkdir(parents=True)
        for i, rgb in enumerate(items):
            Image.fromarray(rgb).save(partial / "images" / folder / f"{i:04d}.png")
    (partial / "study.json").write_text(json.dumps(description, indent=2) + "\n")
    partial.rename(directory)


def store_study(db_url: str, name: str, settings: dict, names: list[str], checkpoints: list[Path]) -> None:
    """The study's rows: its settings and secret, one method per checkpoint plus the real-photo control,
    and its images."""
    engine = db.connect(db_url, create=True)
    with engine.begin() as conn:
        study_id = conn.execute(db.studies.insert().values(
            name=name, protocol=settings["protocol"], settings=json.dumps(settings),
            created_at=db.now(), secret=secrets.token_hex(32))).inserted_primary_key[0]
        conn.execute(db.methods.insert(), [
            {"study_id": study_id, "name": n, "directory": n, "checkpoint": str(p), "is_control": False}
            for n, p in zip(names, checkpoints, strict=True)]
            + [{"study_id": study_id, "name": CONTROL_NAMES[settings["protocol"]], "directory": "real",
                "checkpoint": None, "is_control": True}])
        conn.execute(db.images.insert(), [{"study_id": study_id, "idx": i, "stem": f"{i:04d}"}
                                          for i in range(settings["n_images"])])


def create_study(name: str, checkpoints: list[Path], settings: dict, root: Path = Path("studies"),
                 db_url: str | None = None, data_overrides: list[str] | None = None) -> Path:
    """Build the study; returns its directory. ValueError (nothing written) for any bad input."""
    from omegaconf import OmegaConf

    directory = study_directory(root, name)
    in_folder = db_url is None  # SQLite in the study folder: found there again even if the folder moves
    db_url = check_new_study(name, directory, db_url)
    models, cfg = load_methods(checkpoints, data_overrides or [])
    names = method_names([m.config["experiment"] for m in models])
    images = held_out_images(cfg, settings["n_images"], models, names)
    images["catch"] = [hue_rotated(rgb) for rgb in images["real"]]
    write_study_folder(directory, images, {
        "name": name, "protocol": settings["protocol"], "settings": settings,
        "methods": dict(zip(names, map(str, checkpoints), strict=True)),
        "db": None if in_folder else db.redacted(db_url), "data": OmegaConf.to_container(cfg.data)})
    try:
        store_study(db_url, name, settings, names, checkpoints)
    except (sa.exc.IntegrityError, ValueError) as e:
        shutil.rmtree(directory)  # ours, created above: the user's files are never touched
        raise ValueError(f"could not store the study in {db.redacted(db_url)}: {e}") from e
    return directory
