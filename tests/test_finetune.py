"""init=: a run that starts from an imported release's weights, with frozen blocks and a scaled learning rate."""

import pytest
import pytorch_lightning as pl
import torch
from PIL import Image

from colorlab.config import ConfigError, compose
from colorlab.fit import train
from colorlab.models import load_colorizer
from colorlab.models.base import one_cycle
from colorlab.models.released import import_released, save_checkpoint
from tests.corpus import colour_photo
from tests.zhang_reference import ECCVReference, randomize

LR, LR_SCALE, FROZEN = 0.003, 0.1, ["model1", "model2"]


class FirstStep(pl.Callback):
    """The first training batch, its loss and the optimiser's learning rates then."""

    def __init__(self):
        self.batch = self.loss = self.lrs = None

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if self.lrs is None:
            self.lrs = [group["lr"] for group in trainer.optimizers[0].param_groups]

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if self.batch is None:
            self.batch = {k: v.clone() for k, v in batch.items()}
            self.loss = float(outputs["loss"])


@pytest.fixture(scope="module")
def released_ckpt(tmp_path_factory):
    """An imported ECCV16 release with random weights (width 64), as a colorlab checkpoint and as the .pth."""
    from colorlab.bins import gamut_centers

    tmp = tmp_path_factory.mktemp("init")
    reference = randomize(ECCVReference(), seed=5)
    with torch.no_grad():
        reference.model_out.weight.copy_((gamut_centers() / 110.0).T[:, :, None, None])
    torch.save(reference.state_dict(), tmp / "release.pth")
    return save_checkpoint(import_released("eccv16", tmp / "release.pth"), tmp / "eccv16.ckpt", tmp / "release.pth")


def folder(root):
    root.mkdir()
    for i in range(12):
        Image.fromarray(colour_photo(i)).save(root / f"{i}.png")
    return root


def finetune_overrides(tmp_path, init):
    return [f"init={init}", "data=folder", f"data.root={folder(tmp_path / 'photos')}", "data.size=32",
            "data.batch_size=4", "data.train_size=20", "data.num_workers=0", "net.width=64",
            "model.rebalance=false", f"optim.lr={LR}", f"finetune.freeze=[{','.join(FROZEN)}]",
            f"finetune.lr_scale={LR_SCALE}", "trainer.max_steps=5", "trainer.num_sanity_val_steps=0",
            "trainer.enable_progress_bar=false", "trainer.accelerator=cpu", "logger=none",
            f"run_dir={tmp_path / 'run'}", f"prior.cache_dir={tmp_path / 'priors'}"]


@pytest.mark.slow
def test_init_trains_from_the_imported_weights_with_frozen_blocks(released_ckpt, tmp_path):
    first = FirstStep()
    train(compose("eccv16_full", finetune_overrides(tmp_path, released_ckpt)), [first])
    imported = load_colorizer(released_ckpt)
    imported.train()  # the first step ran in training mode, its frozen blocks in eval mode
    for name in FROZEN:
        getattr(imported.net, name).eval()
    with torch.no_grad():
        expected = float(imported.loss(imported.run_net(first.batch), first.batch))
    assert first.loss == pytest.approx(expected, rel=1e-5)  # the weights really were loaded

    factor = one_cycle(0, 5, 0.1)[0]  # a fresh schedule at its first step, the loaded weights' rate scaled
    assert first.lrs == pytest.approx([LR * factor * LR_SCALE])

    tuned = load_colorizer(tmp_path / "run" / "checkpoints" / "last.ckpt").net.state_dict()
    before = load_colorizer(released_ckpt).net.state_dict()
    for name, tensor in before.items():
        if name.split(".")[0] in FROZEN:  # weights and BatchNorm statistics as loaded
            assert torch.equal(tuned[name], tensor), name
    assert not torch.equal(tuned["model3.0.weight"], before["model3.0.weight"])


def test_init_from_another_network_or_block_is_one_clear_error(released_ckpt, tmp_path):
    narrow = [*finetune_overrides(tmp_path, released_ckpt), "net.width=16"]
    with pytest.raises(ConfigError, match=r"tensor head.weight is \(313, 256, 1, 1\) there and \(313, 64, 1, 1\) here"):
        train(compose("eccv16_full", narrow))
    (tmp_path / "photos").rename(tmp_path / "photos_used")
    with pytest.raises(ConfigError, match=r"freeze: \['encoder'\] are not blocks of net=eccv16; valid: model1"):
        train(compose("eccv16_full", [*finetune_overrides(tmp_path, released_ckpt), "finetune.freeze=[encoder]"]))


def test_init_takes_a_released_pth_directly_and_groups_the_loaded_weights(tmp_path):
    from colorlab.finetune import load_init
    from colorlab.models import build_model, placeholder_prior
    from tests.zhang_reference import SiggraphReference

    reference = randomize(SiggraphReference(), seed=7)
    torch.save(reference.state_dict(), tmp_path / "siggraph17.pth")
    cfg = compose("siggraph17", ["net.width=64", f"run_dir={tmp_path / 'run'}"])
    model = build_model(cfg, placeholder_prior(cfg))
    load_init(model, tmp_path / "siggraph17.pth", ["model1", "model_class"], 0.5)
    assert torch.equal(model.net.model10[1].weight, reference.model10[1].weight)
    assert torch.equal(model.net.model_class.weight, reference.model_class[0].weight)
    assert not model.net.model1.training and model.net.model2.training
    groups = model.parameter_groups()
    frozen = {id(p) for p in [*model.net.model1.parameters(), *model.net.model_class.parameters()]}
    assert groups[0]["lr_scale"] == 0.5 and not frozen & {id(p) for p in groups[0]["params"]}
