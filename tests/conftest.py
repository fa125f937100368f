import os

import pytest
import torch

# Tests never talk to W&B and never use a GPU unless marked.
os.environ["WANDB_MODE"] = "disabled"
torch.set_num_threads(2)


# System tests: they train, serve, drive a browser or a database, or run whole commands. Marked slow, so
# that `python -m pytest -m "not slow"` runs the unit tests (maths, nets, config, data) in about a minute.
SYSTEM_MODULES = {
    "test_app", "test_app_load", "test_bins_models", "test_colorize", "test_compare", "test_distributed",
    "test_embed", "test_evaluate", "test_evaluation_zhang", "test_every_experiment", "test_finetune", "test_fit",
    "test_import_weights", "test_precision", "test_reference", "test_resume", "test_runs", "test_shards",
    "test_slurm", "test_study", "test_study_attacks", "test_study_load", "test_sweep", "test_video_command",
    "test_video_raft",
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.module.__name__.rsplit(".", 1)[-1] in SYSTEM_MODULES:
            item.add_marker(pytest.mark.slow)
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def tiny_overrides(tmp_path):
    """Overrides that make any experiment a seconds-long CPU run."""
    return [f"run_dir={tmp_path / 'run'}", "logger=none", "data.num_workers=0",
            "data.batch_size=8", "data.train_size=32", "data.val_size=16",
            "trainer.enable_progress_bar=false", "trainer.accelerator=cpu",
            f"prior.cache_dir={tmp_path / 'priors'}", "prior.max_images=64",
            # IRN2 with random weights at its smallest input: semantics-free but the real code path
            "embed.weights=random", "embed.size=75", f"embed.cache_dir={tmp_path / 'embeddings'}"]


@pytest.fixture(scope="session")
def hints_checkpoint(tmp_path_factory):
    """A small hints_unet (32 px, width 8) trained long enough to use its hints (~30 s on 2 cores):
    a hint on the bimodal diamond moves its colour towards the hint."""
    from colorlab.config import compose
    from colorlab.fit import train

    tmp = tmp_path_factory.mktemp("hints")
    train(compose("hints_unet", [f"run_dir={tmp / 'run'}", "logger=none", "data.num_workers=0", "data.size=32",
                                 "data.batch_size=16", "data.train_size=2048", "data.val_size=32",
                                 "trainer.max_epochs=4", "trainer.enable_progress_bar=false", "net.width=8"]))
    return tmp / "run" / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="session")
def study_checkpoints(tmp_path_factory):
    """Two untrained-in-effect checkpoints (3 steps, 32 px, width 8) of two formulations, for the human
    study's mechanics (what is measured there is people, not these models): [regression_l2, unet_bins]."""
    from colorlab.config import compose
    from colorlab.fit import train

    tmp = tmp_path_factory.mktemp("study_ckpts")
    paths = []
    for experiment in ("regression_l2", "unet_bins"):
        train(compose(experiment, [f"run_dir={tmp / experiment}", "logger=none", "data.num_workers=0",
                                   "data.size=32", "data.batch_size=8", "data.train_size=32", "data.val_size=64",
                                   "trainer.max_steps=3", "trainer.enable_progress_bar=false", "net.width=8",
                                   f"prior.cache_dir={tmp / 'priors'}"]))
        paths.append(tmp / experiment / "checkpoints" / "last.ckpt")
    return paths


@pytest.fixture
def untrained_video(tmp_path, tiny_overrides):
    """Checkpoints of the per-frame and the propagation experiments, untrained (the command's plumbing)."""
    from colorlab.config import compose
    from colorlab.models import build_model, placeholder_prior

    paths = {}
    for name in ("video_frame", "video_propagate"):
        cfg = compose(name, tiny_overrides + ["data.size=32"])
        model = build_model(cfg, placeholder_prior(cfg))
        paths[name] = tmp_path / f"{name}.ckpt"
        torch.save({"state_dict": model.state_dict(), "colorlab_config": model.config}, paths[name])
    return paths
