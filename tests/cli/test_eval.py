"""`c3exp eval` (c3exp/cli/eval.py): a checkpoint's test metrics again, on other data or another machine,
and the checkpoints and settings it cannot use as asked, each one line."""
from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

import c3exp.cli.eval as eval_cli
from c3exp.config import group_choices
from c3exp.cli.eval import evaluate, main as eval_main, network_settings
from c3exp.tasks import build_task
from c3exp.training.train import build_datamodule, train
from tests.conftest import TINY_DIGITS, assert_names_bad_setting, error_line, run_config


TINY = TINY_DIGITS + [
    "model=resnet20", "attn=none", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1", "trainer.limit_test_batches=2",
]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, one_thread) -> str:
    """last.ckpt of a one-epoch, two-step digits run on the CPU."""
    return train(run_config(TINY, tmp_path_factory.mktemp("tiny")))["checkpoints"]["last"]


def edited_copy(ckpt: str, folder: Path, edit) -> str:
    """A copy of the checkpoint with `edit(checkpoint)` applied: a run trained elsewhere, a damaged file."""
    checkpoint = torch.load(ckpt, map_location="cpu", weights_only=False)
    edit(checkpoint)
    path = folder / "edited.ckpt"
    torch.save(checkpoint, path)
    return str(path)


def eval_error(capsys, *args: str) -> str:
    return error_line(lambda: eval_main(list(args)), capsys)


def no_gpu(monkeypatch) -> None:
    """This machine as one without any GPU, whatever the test machine has."""
    monkeypatch.setattr(eval_cli, "accelerator_available", lambda name: name in ("auto", "cpu"))


def test_eval_prints_the_metrics_and_where_it_wrote_them(ckpt, capsys):
    eval_main([f"ckpt_path={ckpt}"])
    written = Path(ckpt).with_suffix(".eval.json")
    saved = json.loads(written.read_text())
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last == " ".join(f"{key}={saved[key]:.4f}" for key in saved if key != "ckpt_path") + f" -> {written}"


def test_eval_reproduces_the_test_accuracy(two_epochs):
    metrics = evaluate(two_epochs["checkpoints"]["last"])
    assert metrics["test/acc1"] == pytest.approx(two_epochs["test_acc1"], abs=1e-6)
    assert metrics["test/acc5"] == pytest.approx(two_epochs["test_acc5"], abs=1e-6)


@pytest.mark.slow
def test_eval_cli_prints_the_metrics(two_epochs):
    ckpt = two_epochs["checkpoints"]["last"]
    done = subprocess.run([sys.executable, "-m", "c3exp.eval", f"ckpt_path={ckpt}", "data.num_workers=0"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"test/acc1={two_epochs['test_acc1']:.4f}" in done.stdout
    assert json.loads(Path(ckpt).with_suffix(".eval.json").read_text())["test/acc1"] == pytest.approx(two_epochs["test_acc1"])


# 1. a file that is not a checkpoint


@pytest.mark.parametrize("content", [b"not a checkpoint\n", b"", b"PK\x03\x04 cut short"], ids=["text", "empty", "zip"])
def test_a_file_that_is_no_checkpoint_is_one_line(tmp_path, capsys, content):
    path = tmp_path / "fake.ckpt"
    path.write_bytes(content)
    line = eval_error(capsys, f"ckpt_path={path}")
    assert_names_bad_setting(line, "ckpt_path", str(path))
    assert "a c3exp/Lightning checkpoint" in line


def test_a_torch_file_that_is_no_c3exp_checkpoint_is_one_line(tmp_path, capsys):
    torch.save(torch.zeros(3), tmp_path / "tensor.ckpt")
    assert "expected a checkpoint written by c3exp" in eval_error(capsys, f"ckpt_path={tmp_path / 'tensor.ckpt'}")


# 2. group choices: data= and trainer= replace the run's config file; the others are refused


def test_data_choice_tests_on_that_dataset(ckpt, cifar10_root):
    overrides = ["data=cifar10", f"data.root={cifar10_root}", "data.download=false", "data.verify_checksums=false",
                 "data.num_workers=0", "data.batch_size=8"]
    metrics = evaluate(ckpt, overrides)
    # the checkpoint's network by hand on the test batches of the CIFAR files written here (not on the digits)
    module, cfg = eval_cli.load_trained(ckpt, overrides, build_task)
    datamodule = build_datamodule(cfg)
    datamodule.setup("test")
    hits, tested = torch.zeros(2), 0
    with torch.no_grad():
        for images, labels in itertools.islice(datamodule.test_dataloader(), cfg.trainer.limit_test_batches):
            top5 = module.eval()(images).topk(5, dim=1).indices
            hits += torch.stack([(top5[:, 0] == labels).sum(), (top5 == labels[:, None]).any(dim=1).sum()])
            tested += len(labels)
    assert tested == 16  # the run's 2 test batches, of 8 CIFAR images now
    assert [metrics["test/acc1"], metrics["test/acc5"]] == pytest.approx((hits / tested).tolist())


def test_trainer_choice_replaces_the_trainer_config(ckpt):
    cfg = eval_cli.load_run(ckpt, ["trainer=cpu"])[1]
    assert cfg.trainer.accelerator == "cpu" and cfg.trainer.limit_test_batches is None


@pytest.mark.parametrize(
    "argument,key,value,specific",
    [
        ("data=cifar100", "data", "cifar100", "the checkpoint's 10 classes (cifar100 has 100)"),
        ("data=nope", "data", "nope", ", ".join(group_choices("data"))),
        ("model=resnet32", "model", "resnet32", "the checkpoint's own model (resnet20)"),
        ("attn=c3", "attn", "c3", "the checkpoint's own attn (none)"),
        ("optim=cosine", "optim", "cosine", "data=NAME or trainer=NAME"),
    ],
)
def test_a_group_choice_evaluation_cannot_take_is_one_line(ckpt, capsys, argument, key, value, specific):
    line = eval_error(capsys, f"ckpt_path={ckpt}", argument)
    assert_names_bad_setting(line, key, value)
    assert specific in line


# 3. accelerators


@pytest.mark.parametrize("argument", ["trainer.accelerator=gpu", "trainer=gpu"])
def test_asking_for_a_gpu_there_is_not_is_one_line(ckpt, capsys, monkeypatch, argument):
    no_gpu(monkeypatch)
    key, _, value = argument.partition("=")
    line = eval_error(capsys, f"ckpt_path={ckpt}", argument)
    assert_names_bad_setting(line, key, value)
    assert "cpu or auto: there is no gpu device on this machine" in line


def test_a_gpu_run_is_tested_on_the_cpu_with_a_notice(ckpt, tmp_path, capsys, monkeypatch):
    no_gpu(monkeypatch)
    gpu_ckpt = edited_copy(ckpt, tmp_path, lambda c: c["c3exp"]["config"]["trainer"].update(accelerator="gpu"))
    metrics = evaluate(gpu_ckpt)
    assert metrics == pytest.approx(evaluate(ckpt))
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")]
    assert notes == ["note: the run trained with trainer.accelerator=gpu; there is none here, so it is tested on the CPU"]


def test_an_unknown_accelerator_is_one_line(ckpt, capsys):
    line = eval_error(capsys, f"ckpt_path={ckpt}", "trainer.accelerator=tpx")
    assert_names_bad_setting(line, "trainer.accelerator", "tpx")
    choices = line.rpartition("one of ")[2].split(", ")
    assert choices[:3] == ["auto", "cpu", "gpu"] and len(set(choices)) == len(choices)  # each named once


# 4. the network is the checkpoint's


@pytest.mark.parametrize(
    "argument,key,value,specific",
    [
        ("data.batch_sise=4", "data.batch_sise", "4", "a key of the checkpoint's config"),
        ("nonsense=1", "nonsense", "1", "a key of the checkpoint's config"),
        ("data", "argument", "data", "a key=value config override"),
        ("model.depth=32", "model.depth", 32, "the checkpoint's 20"),
        ("attn.name=se", "attn.name", "se", "the checkpoint's 'none'"),
        ("data.num_classes=5", "data.num_classes", 5, "the checkpoint's 10"),
    ],
)
def test_a_bad_override_or_a_change_of_the_network_is_one_line(ckpt, capsys, argument, key, value, specific):
    line = eval_error(capsys, f"ckpt_path={ckpt}", argument)
    assert_names_bad_setting(line, key, value)
    assert specific in line


def image_folder(root: Path, classes: int) -> Path:
    """`classes` class folders of one black 8x8 image each, in train/ and val/."""
    for split, label in itertools.product(("train", "val"), range(classes)):
        (root / split / f"c{label}").mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(root / split / f"c{label}" / "0.png")
    return root


def test_an_image_folder_of_the_checkpoints_classes_is_counted_then_tested(ckpt, tmp_path):
    """Ten identical images, one per class, score alike: one is right, five have their label in the top 5."""
    metrics = evaluate(ckpt, ["data=imagefolder", f"data.root={image_folder(tmp_path, 10)}", "data.image_size=32",
                              "data.num_workers=0"])
    assert (metrics["test/acc1"], metrics["test/acc5"]) == pytest.approx((0.1, 0.5))


def test_an_image_folder_of_other_classes_is_one_line(ckpt, tmp_path, capsys):
    line = eval_error(capsys, f"ckpt_path={ckpt}", "data=imagefolder", f"data.root={image_folder(tmp_path, 3)}")
    assert_names_bad_setting(line, "data.num_classes", 3)
    assert "the checkpoint's 10" in line


def test_a_checkpoint_is_tested_with_flip_tta_when_asked(ckpt):
    """task.tta_flip scores the mean of each image's and its mirror's logits; the weights stay the checkpoint's."""
    plain, flipped = evaluate(ckpt), evaluate(ckpt, ["task.tta_flip=true"])
    assert plain != flipped and set(plain) == set(flipped)


def test_speed_options_are_not_network_settings():
    cfg = OmegaConf.create({"task": {"compile": True, "channels_last": True}, "model": {"depth": 20},
                            "attn": {"options": {"reduction": 8}}, "data": {"num_classes": 10}})
    assert network_settings(cfg) == {"model.depth": 20, "attn.options.reduction": 8, "data.num_classes": 10}


def test_weights_that_do_not_fit_are_one_line(ckpt, tmp_path, capsys):
    damaged = edited_copy(ckpt, tmp_path, lambda c: c["state_dict"].popitem())
    line = eval_error(capsys, f"ckpt_path={damaged}")
    assert_names_bad_setting(line, "ckpt_path", damaged)
    assert "a checkpoint whose weights fit the model of its config" in line


# 5. -h / --help


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_prints_the_usage(capsys, flag):
    eval_main([flag])
    out = capsys.readouterr().out
    assert out.startswith("usage: c3exp eval ckpt_path=PATH [key=value ...]") and "example: " in out


def test_eval_of_nan_weights_warns_beside_the_metrics(ckpt, tmp_path, capsys):
    def poison(checkpoint):
        name = next(key for key, value in checkpoint["state_dict"].items() if value.is_floating_point())
        checkpoint["state_dict"][name] = torch.full_like(checkpoint["state_dict"][name], float("nan"))

    metrics = eval_main([f"ckpt_path={edited_copy(ckpt, tmp_path, poison)}"])
    err = capsys.readouterr().err
    assert "holds NaN or infinite weights in 1 tensors" in err and "these metrics mean nothing" in err
    assert set(metrics) >= {"test/acc1", "test/loss"}
