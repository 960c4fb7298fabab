"""Pretrained weights (c3exp/models/pretrained.py): loaded strictly into torchvision's network before attention goes
in, other classifiers left as built; files that do not fit are one line."""
from __future__ import annotations

import logging
from functools import partial
from pathlib import Path

import pytest
import torch
import torchvision

from c3exp.errors import ConfigError, DataNotFoundError
from c3exp.models import torchvision_resnet
from tests.conftest import attn_config, backbone_attention, torchvision_key_in_ours

pytestmark = pytest.mark.usefixtures("one_thread")

C3_STAGE_INPUT = backbone_attention("c3")
SE_EVERY_BLOCK = attn_config("se", placement="every_block")
resnet18 = partial(torchvision_resnet, arch="resnet18", output_stride=32)  # conf/model/resnet18.yaml's, weights aside


@pytest.fixture(scope="module")
def resnet18_weights(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    torch.manual_seed(123)
    state_dict = torchvision.models.resnet18().state_dict()
    path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    torch.save(state_dict, path)
    return path, state_dict


@pytest.mark.parametrize("attn", [None, C3_STAGE_INPUT, SE_EVERY_BLOCK], ids=["none", "c3-stage_input", "se-every_block"])
@pytest.mark.parametrize("num_classes", [1000, 21])
def test_pretrained_file_fills_every_torchvision_tensor_and_leaves_attention_alone(resnet18_weights, caplog, attn,
                                                                                   num_classes: int):
    path, weights = resnet18_weights
    torch.manual_seed(0)
    fresh = resnet18(num_classes, attn, weights=None).state_dict()
    torch.manual_seed(0)
    with caplog.at_level(logging.INFO, logger="c3exp.models.pretrained"):
        loaded = resnet18(num_classes, attn, weights=str(path)).state_dict()
    skip_fc = num_classes != 1000
    stage_input = attn is C3_STAGE_INPUT  # the stage's first module: its blocks one index on
    from_file = {torchvision_key_in_ours(k, stage_input): v for k, v in weights.items()
                 if not (skip_fc and k.startswith("fc."))}
    for key, value in loaded.items():
        torch.testing.assert_close(value, from_file.get(key, fresh[key]), rtol=0, atol=0, msg=key)
    attention = {k for k in loaded if ".attention." in k or (stage_input and k.split(".")[2] == "0")}
    assert set(loaded) - set(from_file) == attention | ({"head.2.weight", "head.2.bias"} if skip_fc else set())
    assert bool(attention) == (attn is not None)
    (line,) = [r.getMessage() for r in caplog.records if r.name == "c3exp.models.pretrained"]
    note = "fc skipped (1000 vs 21 classes)" if skip_fc else "every tensor loaded"
    assert line == f"pretrained weights {path}: {note}"


def test_pretrained_file_may_hold_a_state_dict_entry(resnet18_weights, tmp_path: Path):
    path, weights = resnet18_weights
    wrapped = tmp_path / "checkpoint.pth"
    torch.save({"state_dict": weights, "epoch": 3}, wrapped)
    model = resnet18(1000, weights=str(wrapped))
    torch.testing.assert_close(model.stem[0].weight, weights["conv1.weight"], rtol=0, atol=0)


def test_pretrained_weights_of_another_arch_are_one_line(resnet18_weights):
    path, _ = resnet18_weights
    with pytest.raises(ConfigError) as error:
        torchvision_resnet(10, arch="resnet50", output_stride=32, weights=str(path))
    message = str(error.value)
    assert error.value.key == "model.weights" and "resnet50" in message and "other shapes" in message
    assert "\n" not in message


def test_pretrained_weights_path_must_exist(tmp_path: Path):
    with pytest.raises(ConfigError) as error:
        resnet18(10, weights=str(tmp_path / "missing.pth"))
    assert error.value.key == "model.weights" and "\n" not in str(error.value)


def test_pretrained_weights_file_must_be_a_state_dict(tmp_path: Path):
    junk = tmp_path / "junk.pth"
    junk.write_text("not a torch file")
    with pytest.raises(ConfigError) as error:
        resnet18(10, weights=str(junk))
    assert error.value.key == "model.weights" and "\n" not in str(error.value)


def test_imagenet_weights_offline_is_one_line():
    url = torchvision.models.get_model_weights("resnet18").DEFAULT.url
    if (Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name).exists():
        pytest.skip("torch hub's cache already holds the weights: nothing to download")
    with pytest.raises(DataNotFoundError) as error:
        resnet18(10, weights="imagenet")
    message = str(error.value)
    assert "model.weights=/path/to/resnet18.pth" in message and url in message and "\n" not in message
