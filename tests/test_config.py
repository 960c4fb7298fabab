"""Configs (c3exp/config.py): every model x attn x data composes from the real configs, models and data modules
instantiate, the recipes hold the paper's values, and the up-front command-line check."""
from __future__ import annotations

import itertools
import re

import lightning as L
import pytest
from hydra.utils import instantiate

import c3exp
from c3exp.attention import ATTENTION_NAMES, block_factory
from c3exp.config import GROUPS, check_command_line, data_target, group_choices, key_choices
from c3exp.errors import ConfigError, OverrideError
from tests.conftest import REPO, assert_names_bad_setting


MODELS = group_choices("model")


ATTNS = group_choices("attn")


DATA = group_choices("data")


def documented_choices() -> set[tuple[str, str]]:
    """Every (group, choice) of a `group=choice` or `group=a,b` in the README, BENCHMARKS.md and docs/ (not
    placeholders: NAME; not docs/extending.md, whose choices are the plug-ins' own)."""
    groups = "|".join(re.escape(group) for group in sorted(GROUPS, key=len, reverse=True))
    pattern = re.compile(rf"(?<![\w./+-])({groups})=([\w,]+)")
    found = set()
    docs = [REPO / "README.md", REPO / "BENCHMARKS.md", *(REPO / "docs").rglob("*.md")]
    for doc in (path for path in docs if path.name != "extending.md"):
        for group, choices in pattern.findall(doc.read_text()):
            found.update((group, choice) for choice in choices.split(",") if re.fullmatch(r"[a-z0-9_]+", choice))
    return found


def test_groups_offer_the_designed_choices():
    """attn= offers exactly the blocks the code registers; every group=choice the documentation shows exists."""
    assert ATTNS == sorted(ATTENTION_NAMES)
    documented = documented_choices()
    assert {("model", "resnet110"), ("attn", "c3"), ("data", "digits"), ("experiment", "quickstart")} <= documented
    assert sorted(f"{group}={choice}" for group, choice in documented if choice not in group_choices(group)) == []


# Every model with every attention (their defaults depend on each other); every data set once: data
# choices compose independently of the network's.
COMBINATIONS = [(model, attn, DATA[0]) for model, attn in itertools.product(MODELS, ATTNS)] + [
    (MODELS[0], ATTNS[0], data) for data in DATA[1:]
]


@pytest.mark.parametrize("model,attn,data", COMBINATIONS)
def test_every_combination_composes(model, attn, data):
    cfg = c3exp.compose([f"model={model}", f"attn={attn}", f"data={data}"])
    assert key_choices(cfg)["model"] == model and cfg.attn.name == attn and cfg.data.name == data


# Every model with C3 (the block sized by its maps) and every attention in one model.
BUILDS = [(model, "c3") for model in MODELS if model != "resnet1202"] + [("resnet20", attn) for attn in ATTNS if attn != "c3"]


@pytest.mark.parametrize("model,attn", BUILDS)
def test_every_model_and_attention_instantiates(model, attn):
    cfg = c3exp.compose([f"model={model}", f"attn={attn}", "data=cifar10"])
    if "torchvision" in cfg.model._target_:  # C3's default blocks of the ImageNet networks fit 224 px maps
        cfg = c3exp.compose([f"model={model}", f"attn={attn}", "data=cifar10", "data.image_size=224"])
    net = c3exp.build_network(cfg)
    assert net.head[-1].out_features == cfg.data.num_classes == 10
    blocks = {type(module) for module in net.modules() if getattr(module, "is_attention", False)}
    assert blocks == ({block_factory(cfg.attn._target_)} if attn != "none" else set())


@pytest.mark.parametrize("data", DATA)
def test_every_datamodule_instantiates(data):
    overrides = [f"data={data}"] + (["data.root=/nonexistent"] if data in ("imagefolder", "imagenet") else [])
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


def test_the_optimizer_of_a_recipe_is_a_group_of_its_own():
    from c3exp.config import compose

    cfg = compose(["optim=paper", "optim/optimizer=adamw"])
    assert cfg.optim.name == "paper" and cfg.optim.optimizer._target_ == "torch.optim.AdamW"


def test_the_default_task_is_classification_with_val_acc1():
    cfg = c3exp.compose(["data=digits"])
    assert cfg.task.name == "classification" and cfg.task.primary_metric.name == "val/acc1"
    assert cfg.callbacks.model_checkpoint.monitor == "val/acc1" and cfg.callbacks.model_checkpoint.mode == "max"


def test_the_checkpoint_monitor_follows_the_task():
    cfg = c3exp.compose(["data=digits", "task=segmentation"])
    assert cfg.callbacks.model_checkpoint.monitor == "val/miou"


# ----------------------------------------------------------------------------------------------
# The up-front check of a command line: Hydra's flags, unknown keys, globs.


@pytest.mark.parametrize(
    "args",
    [
        ["--cfg", "job", "model=resnet56", "attn=c3"],
        ["-c", "job", "-p", "model"],
        ["--info", "config"],
        ["-m", "model=glob(resnet2*)", "attn=none,c3"],
        ["-cn", "another_primary_config", "whatever.key=1"],
    ],
)
def test_hydra_flags_keep_their_meaning(args):
    """Hydra's own flags (print the config, sweep a glob) pass the up-front check untouched."""
    check_command_line(args)


def test_overrides_split_by_a_flag_are_one_clear_line():
    """argparse (and so Hydra) takes one group of overrides: `a=1 -m b=2` would end in a usage dump."""
    with pytest.raises(OverrideError, match="unrecognized arguments 'attn=c3': the key=value overrides go in one group"):
        check_command_line(["data=digits", "-m", "attn=c3"])


def test_two_hydra_modes_are_one_clear_line():
    """Hydra refuses -m with --cfg by raising a bare ValueError (a traceback); here it is one line."""
    with pytest.raises(OverrideError, match=r"^flags --multirun and --cfg together: Hydra runs one of"):
        check_command_line(["-m", "attn=c3,se", "--cfg", "job"])


@pytest.mark.parametrize(
    "args,expected",
    [
        (["optim.lr=-1"], "optim.lr is not a config key or group (optim.lr=-1): did you mean optim.optimizer.lr?"),
        (["atn=c3"], "atn is not a config key or group (atn=c3): did you mean attn"),
        (["data.batch_sise=4"], "did you mean data.batch_size"),
        (["foo=1"], "foo is not a config key or group (foo=1): `c3exp train --cfg job` prints the keys"),
        (["-m", "atn=none,c3", "data=digits"], "atn is not a config key or group (atn=none,c3): did you mean attn"),
        (["-m", "logger=csv,wandb", "logger.wandb.projekt=x"], "did you mean logger.wandb.project or"),
    ],
)
def test_an_unknown_key_is_named_with_the_nearest_real_ones(args, expected):
    """Hydra's report would suggest `+key=value`, which adds a key nothing reads; sweeps failed job by job."""
    with pytest.raises(OverrideError) as error:
        check_command_line(args)
    assert expected in str(error.value) and "+" not in str(error.value)


@pytest.mark.parametrize(
    "args",
    [
        ["data=imagefolder", "data.root=/somewhere"],  # a key whose value is still ??? exists
        ["logger=wandb", "logger.wandb.project=x"],  # a key of a group chosen on the same line
        ["-m", "logger=csv,wandb", "logger.wandb.project=x"],
        ["+foo=1"],  # adding a key is explicit
    ],
)
def test_keys_of_the_chosen_groups_pass_the_key_check(args):
    check_command_line(args)


SEARCHPATH = f"hydra.searchpath=[file://{REPO / 'tests' / 'plugins' / 'conf'}]"  # the plug-ins' configs (tests/plugins)


def test_the_configs_of_a_directory_on_the_searchpath_are_choices_too():
    assert "gate" in group_choices("attn", [SEARCHPATH]) and "gate" not in group_choices("attn")
    check_command_line([SEARCHPATH, "attn=gate", "model=tiny", "task=f1", "data=bars", "attn.options.init=1.0"])
    with pytest.raises(OverrideError, match=r"attn.options.int is not a config key .* did you mean attn.options.init"):
        check_command_line(["-m", SEARCHPATH, "attn=gate,none", "attn.options.int=1"])  # sweeps compose each choice


def test_composing_inside_a_hydra_app_of_its_own_leaves_that_app_as_it_was(tmp_path):
    """A run (or a notebook) has Hydra initialised on its own configs: c3exp's composes beside them."""
    import hydra

    (tmp_path / "other.yaml").write_text("x: 1\n")
    with hydra.initialize_config_dir(config_dir=str(tmp_path), version_base="1.3"):
        assert c3exp.compose(["data=digits"]).data.name == "digits" and "gate" in group_choices("attn", [SEARCHPATH])
        assert hydra.compose("other").x == 1


def test_data_of_ones_own_passes_the_task_check_and_is_listed_by_it(tmp_path, monkeypatch):
    from c3exp.config import validate_config
    from tests.conftest import run_config

    monkeypatch.syspath_prepend(str(REPO / "tests" / "plugins"))
    assert data_target("bars", [SEARCHPATH]) == "my_datasets.Bars"
    assert data_target("imagenet") == "c3exp.data.ImageFolderDataModule"  # extends imagefolder
    validate_config(run_config([SEARCHPATH, "data=bars", "task=f1"], tmp_path))
    with pytest.raises(ConfigError, match=r"data for task=segmentation: one of shapes, voc2012 \(data=bars is classification"):
        validate_config(run_config([SEARCHPATH, "data=bars", "task=segmentation"], tmp_path))


@pytest.mark.parametrize(
    "args,key,value,allowed",
    [
        (["optim/optimizer=adam"], "optim/optimizer", "adam", f"one of {', '.join(group_choices('optim/optimizer'))}"),
        (["-m", "model=glob(densenet*)"], "model", "glob(densenet*)", f"one of {', '.join(group_choices('model'))}"),
        ([SEARCHPATH, "attn=gat"], "attn", "gat", "one of c3, cbam, coord, eca, gate, gc, "),  # a searchpath's choices too
        # Hydra would create the run directory before the run starts: an OSError traceback (File name too long)
        (["data=digits", f"run_name={'b' * 240}"], "run_name", "b" * 240, "a shorter name: the run directory's name"),
    ],
)
def test_a_bad_choice_or_name_on_the_command_line_is_one_line_naming_it(args, key, value, allowed):
    with pytest.raises(ConfigError) as error:
        check_command_line(args)
    assert (error.value.key, str(error.value.value)) == (key, value) and allowed in error.value.allowed
    assert "\n" not in str(error.value)


# ----------------------------------------------------------------------------------------------
# Values that would fail only after work (training, a whole epoch) or with a traceback: one line up front.

LONG_NAME = "r" * 256


@pytest.mark.parametrize(
    "overrides,key,value,allowed",
    [
        (["seed=-1"], "seed", "-1", "4294967295"),  # numpy's largest seed
        (["seed=4294967296"], "seed", "4294967296", "4294967295"),
        (["trainer.limit_train_batches=0"], "trainer.limit_train_batches", "0", "0 would train on no batch"),
        (["trainer.limit_val_batches=0"], "trainer.limit_val_batches", "0", "0 would skip validation"),
        (["trainer.limit_test_batches=0.0"], "trainer.limit_test_batches", "0.0", "0 would test on no batch"),
        ([f"run_name={LONG_NAME}"], "run_name", LONG_NAME, "at most 255 bytes"),
        (["task=segmentation", "data=digits"], "data", "digits", "data for task=segmentation: one of shapes, voc2012"),
        (["task=segmentation", "data=synthetic"], "data", "synthetic", "data for task=segmentation: one of shapes, voc2012"),
        (["task=detection", "data=digits"], "data", "digits",
         "data for task=detection: one of coco2017, shapes_coco, shapes_detection, voc2007"),
        (["task=classification", "data=shapes"], "data", "shapes", "data for task=classification: one of cifar10, cifar100, digits"),
        (["experiment=segmentation_shapes", "data=shapes_detection"], "data", "shapes_detection",
         "data for task=segmentation: one of shapes, voc2012 (data=shapes_detection is detection data)"),
    ],
)
def test_values_that_would_fail_after_work_are_one_line_before_it(tmp_path, overrides, key, value, allowed):
    from c3exp.config import validate_config
    from tests.conftest import run_config

    with pytest.raises(ConfigError) as error:
        validate_config(run_config(["data=digits", *overrides], tmp_path))
    assert (error.value.key, str(error.value.value)) == (key, value) and allowed in error.value.allowed
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("decay, value", [("0", 0), ("1", 1), ("1.5", 1.5), ("true", True), ("'0.9'", "0.9")])
def test_an_average_decay_outside_0_to_1_is_one_line(tmp_path, decay, value):
    from c3exp.config import validate_config
    from tests.conftest import run_config

    with pytest.raises(ConfigError) as error:
        validate_config(run_config(["data=digits", f"optim.ema_decay={decay}"], tmp_path))
    assert_names_bad_setting(str(error.value), "optim.ema_decay", value)


@pytest.mark.parametrize("overrides", [["experiment=segmentation_shapes"], ["experiment=detection_shapes"],
                                       ["data=imagenet", "data.root=/x"],
                                       ["data=digits", "trainer.limit_val_batches=0.5", "seed=4294967295"]])
def test_tasks_with_their_data_and_edge_values_pass(tmp_path, overrides):
    from c3exp.config import validate_config
    from tests.conftest import run_config

    validate_config(run_config(overrides, tmp_path))


@pytest.mark.parametrize("override", ["hydra/launcher=slurm", "hydra/launcher=submitit_local", "hydra/launcher=parallel"])
def test_a_plugin_choice_without_any_hydra_plugin_installed_is_one_line(monkeypatch, override):
    """Without the cluster extras the namespace package hydra_plugins itself is missing: find_spec raises."""
    import sys

    for name in [name for name in sys.modules if name.startswith("hydra_plugins.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "hydra_plugins", None)  # what Python sees where no plugin is installed
    with pytest.raises(OverrideError, match=rf"^{re.escape(override)} needs hydra-\w+-\w+, which is not installed: pip install"):
        check_command_line([override])


def test_a_comma_list_without_m_is_one_line_asking_for_it():
    with pytest.raises(OverrideError, match=r"^attn=none,se lists several values, a sweep: add -m to run one job per value"):
        check_command_line(["data=digits", "attn=none,se"])
    check_command_line(["hparams_search=optuna", "seed=0,1"])  # a config that sets hydra.mode=MULTIRUN sweeps without -m
