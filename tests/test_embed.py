import pytest
import torch

from colorlab.data.synthetic import SyntheticScenes
from colorlab.embed import EmbedWeightsError, GlobalEmbedder, embedding_table


def test_local_weights_file_loads_through_the_config_path(tmp_path):
    source = GlobalEmbedder("random", "pooled", size=75, seed=3)
    weights = tmp_path / "irn2.pth"
    torch.save(source.model.state_dict(), weights)
    loaded = GlobalEmbedder(str(weights), "pooled", size=75)
    rgb = torch.randint(0, 256, (2, 3, 40, 52), dtype=torch.uint8)
    expected = source(rgb)
    assert expected.shape == (2, 1536)
    torch.testing.assert_close(loaded(rgb), expected)
    other = GlobalEmbedder("random", "pooled", size=75, seed=4)
    assert not torch.allclose(other(rgb), expected)  # so the equality above is not vacuous


def test_missing_weights_give_the_documented_error(tmp_path, monkeypatch):
    with pytest.raises(EmbedWeightsError, match="no such file.*embed.weights=random"):
        GlobalEmbedder(str(tmp_path / "missing.pth"))
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(EmbedWeightsError, match="offline Hugging Face cache.*embed.weights=random"):
        GlobalEmbedder("hub")
    with pytest.raises(ValueError, match="embed.output must be one of"):
        GlobalEmbedder("random", "features")


def test_embedding_table_is_computed_once_and_reused(tmp_path, monkeypatch):
    dataset = SyntheticScenes(32, 5, 0, "val")
    cfg = {"weights": "random", "output": "logits", "size": 75, "batch_size": 2}
    table = embedding_table(dataset, {"name": "synthetic", "split": "val"}, cfg, seed=0, cache_dir=tmp_path)
    assert table.shape == (5, 1000) and torch.isfinite(table).all()
    direct = GlobalEmbedder("random", "logits", size=75, seed=0)(torch.stack([dataset.whole_image(i) for i in (1, 3)]))
    torch.testing.assert_close(table[[1, 3]], direct, atol=1e-4, rtol=1e-4)
    import colorlab.embed

    monkeypatch.setattr(colorlab.embed, "GlobalEmbedder", lambda *a, **k: pytest.fail("recomputed"))
    again = embedding_table(dataset, {"name": "synthetic", "split": "val"}, cfg, seed=0, cache_dir=tmp_path)
    assert torch.equal(again, table)
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary file left behind


def test_a_waiting_rank_reads_only_the_finished_table(tmp_path, monkeypatch):
    dataset = SyntheticScenes(32, 2, 0, "val")
    cfg = {"weights": "random", "output": "logits", "size": 75, "batch_size": 2}
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr("colorlab.embed.WAIT_SECONDS", 0.5)
    with pytest.raises(TimeoutError, match="waited"):
        embedding_table(dataset, {"name": "synthetic", "split": "val"}, cfg, seed=0, cache_dir=tmp_path)
