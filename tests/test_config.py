"""Every model x attn x data composes from the real configs; models and data modules instantiate."""
from __future__ import annotations

import itertools

import lightning as L
import pytest
from hydra.utils import instantiate

import c3exp
from c3exp.config import group_choices, key_choices

MODELS = group_choices("model")
ATTNS = group_choices("attn")
DATA = group_choices("data")


def test_groups_offer_the_designed_choices():
    assert {"resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "wrn"} <= set(MODELS)
    assert set(ATTNS) == {"none", "se", "cbam", "c3"}
    assert {"cifar10", "cifar100", "digits", "synthetic", "imagefolder"} <= set(DATA)
    assert {"default", "cpu", "gpu", "ddp"} <= set(group_choices("trainer"))
    assert {"paper", "cosine"} <= set(group_choices("optim"))
    assert {"csv", "wandb", "tensorboard"} <= set(group_choices("logger"))
    assert {"quickstart", "paper_cifar100"} <= set(group_choices("experiment"))
    assert {"fast", "overfit"} <= set(group_choices("debug"))


@pytest.mark.parametrize("model,attn,data", list(itertools.product(MODELS, ATTNS, DATA)))
def test_every_combination_composes(model, attn, data):
    cfg = c3exp.compose([f"model={model}", f"attn={attn}", f"data={data}"])
    assert key_choices(cfg)["model"] == model and cfg.attn.name == attn and cfg.data.name == data


@pytest.mark.parametrize("model,attn", list(itertools.product([m for m in MODELS if m != "resnet1202"], ATTNS)))
def test_every_model_and_attention_instantiates(model, attn):
    cfg = c3exp.compose([f"model={model}", f"attn={attn}", "data=cifar10"])
    if "torchvision" in cfg.model._target_:  # C3's default blocks of the ImageNet networks fit 224 px maps
        cfg = c3exp.compose([f"model={model}", f"attn={attn}", "data=cifar10", "data.image_size=224"])
    net = c3exp.build_model(cfg)
    assert net.head is not None and len(net.stages) >= 3
    assert net.stages and sum(p.numel() for p in net.parameters()) > 0


@pytest.mark.parametrize("data", DATA)
def test_every_datamodule_instantiates(data):
    overrides = [f"data={data}"] + (["data.root=/nonexistent"] if data == "imagefolder" else [])
    cfg = c3exp.compose(overrides)
    datamodule = instantiate(cfg.data)
    assert isinstance(datamodule, L.LightningDataModule) and datamodule.name == data


def test_optimizer_recipes():
    paper = c3exp.compose(["optim=paper"]).optim
    assert (paper.optimizer.lr, paper.optimizer.momentum, paper.optimizer.weight_decay) == (0.1, 0.9, 1e-4)
    assert list(paper.scheduler.milestones) == [120, 140] and paper.scheduler.gamma == 0.1
    cfg = c3exp.compose(["optim=cosine", "trainer.max_epochs=7"])
    assert cfg.optim.scheduler.T_max == 7 and cfg.optim.optimizer.lr == 0.1
    default = c3exp.compose([])
    assert default.trainer.max_epochs == 160 and default.data.batch_size == 128 and default.data.name == "cifar100"
