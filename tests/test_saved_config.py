"""A checkpoint's stored config is data (c3exp/saved_config.py): planted calls never run, a reference bomb is
refused before it expands, an honest checkpoint's config comes back as it was, and resume checks the settings."""
from __future__ import annotations

import base64
import io
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from c3exp.cli.analyze import main as analyze_main
from c3exp.cli.eval import main as eval_main
from c3exp.saved_config import (LOCAL_KEYS, MAX_NODES, UNUSED_SECTIONS, changed_settings, flatten, moved_keys,
                                 rebuild_config)
from c3exp.training.train import train
from tests.conftest import REPO, SHORT_RUN, assert_names_bad_setting, error_line, run_config, run_main
from tests.test_checkpoints import RunsCode


def planted(ckpt: str, folder: Path, edit) -> Path:
    """A copy of a real checkpoint whose stored config `edit` changed: what someone else could share."""
    checkpoint = torch.load(ckpt, map_location="cpu", weights_only=True)
    edit(checkpoint["c3exp"]["config"], checkpoint["c3exp"])
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "shared.ckpt"
    torch.save(checkpoint, path)
    return path


def pickled_call(marker: Path) -> str:
    """base64 of a torch file that touches `marker` when loaded with weights_only=False."""
    buffer = io.BytesIO()
    torch.save(RunsCode(marker), buffer)
    return base64.b64encode(buffer.getvalue()).decode()


def target_chain(marker: Path) -> dict:
    """Targets Hydra's blocklist lets through, ending in an unsafe torch.load of planted bytes."""
    return {"_target_": "torch.load", "weights_only": False,
            "f": {"_target_": "io.BytesIO", "initial_bytes": {"_target_": "base64.b64decode", "s": pickled_call(marker)}}}


def reference_bomb(levels: int = 12, width: int = 8) -> list:
    """A few hundred bytes in the file (pickle keeps shared references), width**levels values once expanded."""
    node: list = ["x"]
    for _ in range(levels):
        node = [node] * width
    return node


ATTACKS = {
    "chain in data.seed": lambda cfg, section, marker: cfg["data"].update(seed=target_chain(marker)),
    "os.system as data": lambda cfg, section, marker: cfg.update(
        data={**cfg["data"], "_target_": "os.system", "command": f"touch {marker}"}),
    "call in a list": lambda cfg, section, marker: cfg["attn"].update(stages=[target_chain(marker)]),
    "call in a new section": lambda cfg, section, marker: cfg["attn"].update(
        options={"_target_": "os.system", "command": f"touch {marker}"}),
    "another attention block": lambda cfg, section, marker: cfg["attn"].update(_target_="builtins.exec"),
    "interpolation": lambda cfg, section, marker: cfg["data"].update(name="${oc.env:HOME}"),
    "group that is no config": lambda cfg, section, marker: section.update(choices={"model": "../../tmp/evil"}),
}


def tree_snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(path): (path.stat().st_size, path.stat().st_mtime_ns) for path in folder.rglob("*")}


@pytest.mark.parametrize("attack", ATTACKS)
def test_eval_and_analyze_never_run_what_a_checkpoint_plants(two_epochs, tmp_path, capsys, attack):
    marker = tmp_path / "code-ran"
    ckpt = planted(two_epochs["checkpoints"]["last"], tmp_path / "from-someone",
                   lambda cfg, section: ATTACKS[attack](cfg, section, marker))
    before = tree_snapshot(tmp_path)
    for command in (lambda: eval_main([f"ckpt_path={ckpt}"]), lambda: analyze_main(["correlation", f"ckpt_path={ckpt}"])):
        line = error_line(command, capsys)
        assert_names_bad_setting(line, "ckpt_path", str(ckpt))
        assert "stored config is plain data" in line, line
    assert not marker.exists()
    assert tree_snapshot(tmp_path) == before  # no eval.json, no analysis folder, nothing else


def test_a_target_the_user_names_on_the_command_line_is_taken_and_only_that_one(two_epochs, tmp_path):
    checkpoint = torch.load(two_epochs["checkpoints"]["last"], map_location="cpu", weights_only=True)
    checkpoint["c3exp"]["config"]["task"]["_target_"] = "my_plugins.MyTask"
    vouched = rebuild_config(checkpoint, "x.ckpt", vouched={"task._target_": "my_plugins.MyTask"})
    assert vouched.task._target_ == "my_plugins.MyTask"
    with pytest.raises(ValueError, match=r"its task._target_='my_plugins.MyTask' is not what c3exp's configs build there"):
        rebuild_config(checkpoint, "x.ckpt", vouched={"data._target_": "my_plugins.MyTask"})


def test_the_target_chain_runs_code_when_instantiated_so_the_attack_is_real(tmp_path):
    from hydra.utils import instantiate

    marker = tmp_path / "code-ran"
    instantiate(OmegaConf.create(target_chain(marker)))
    assert marker.exists()


def test_a_reference_bomb_is_refused_before_it_expands(two_epochs, tmp_path):
    ckpt = planted(two_epochs["checkpoints"]["last"], tmp_path, lambda cfg, section: cfg["data"].update(extra=reference_bomb()))
    assert ckpt.stat().st_size < Path(two_epochs["checkpoints"]["last"]).stat().st_size + 4096
    # in a subprocess with a time and memory limit: expanding 8**12 values would hang or die
    done = subprocess.run([sys.executable, "-m", "c3exp.eval", f"ckpt_path={ckpt}"], capture_output=True, text=True,
                          timeout=120, cwd=REPO, preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30)))
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr[-2000:]
    assert f"it expands past {MAX_NODES:,} values (at c3exp.config.data.extra[" in done.stderr


def test_a_reference_bomb_in_the_history_is_refused_on_resume(two_epochs, tmp_path, capsys, monkeypatch):
    checkpoint = torch.load(two_epochs["checkpoints"]["last"], map_location="cpu", weights_only=True)
    checkpoint["c3exp"]["history"] = reference_bomb()
    torch.save(checkpoint, tmp_path / "bomb.ckpt")
    cfg = run_config(["data=digits", "trainer=cpu", f"ckpt_path={tmp_path / 'bomb.ckpt'}"], tmp_path / "run")
    with pytest.raises(ValueError, match="expands past"):
        train(cfg)


def test_an_honest_checkpoint_gives_back_its_run_config(two_epochs):
    checkpoint = torch.load(two_epochs["checkpoints"]["last"], map_location="cpu", weights_only=True)
    rebuilt = flatten(OmegaConf.to_container(rebuild_config(checkpoint, two_epochs["checkpoints"]["last"]), resolve=False))
    stored = flatten(checkpoint["c3exp"]["config"])
    local = [key for key in stored if any(key == k or key.startswith(f"{k}.") for k in (*LOCAL_KEYS, *UNUSED_SECTIONS))]
    assert local and {key: rebuilt[key] for key in stored if key not in local} == {key: stored[key] for key in stored if key not in local}
    assert rebuilt["output_dir"] == str(Path(two_epochs["run_dir"]).resolve())


def test_an_older_checkpoint_without_choices_finds_its_nested_optimizer(two_epochs):
    checkpoint = torch.load(two_epochs["checkpoints"]["last"], map_location="cpu", weights_only=True)
    checkpoint["c3exp"].pop("choices", None)
    checkpoint["c3exp"]["config"]["optim"]["optimizer"] = {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 0.002,
                                                          "weight_decay": 0.05, "betas": [0.9, 0.999]}
    cfg = rebuild_config(checkpoint, "old.ckpt")
    assert cfg.optim.optimizer._target_ == "torch.optim.AdamW" and cfg.optim.optimizer.lr == 0.002


def test_an_older_checkpoint_without_an_attn_target_gets_the_block_of_c3exps_config(two_epochs):
    checkpoint = torch.load(two_epochs["checkpoints"]["last"], map_location="cpu", weights_only=True)
    checkpoint["c3exp"].pop("choices", None)
    del checkpoint["c3exp"]["config"]["attn"]["_target_"]  # attn configs named no block before the YAML files did
    cfg = rebuild_config(checkpoint, "old.ckpt")
    assert cfg.attn._target_ == "c3exp.attention.c3.C3Block" and cfg.attn.name == "c3"


def test_an_older_checkpoint_gets_its_speed_options_under_the_task(two_epochs):
    checkpoint = torch.load(two_epochs["checkpoints"]["last"], map_location="cpu", weights_only=True)
    checkpoint["c3exp"]["config"]["model"].update(channels_last=True, compile=False)  # model.* until the options moved
    for key in ("channels_last", "compile"):
        checkpoint["c3exp"]["config"]["task"].pop(key, None)
    cfg = rebuild_config(checkpoint, "old.ckpt")
    assert cfg.task.channels_last is True and cfg.task.compile is False and "channels_last" not in cfg.model


def test_older_keys_move_to_where_the_settings_live_now():
    config = {"model": {"depth": 20, "compile": True}, "task": {"name": "segmentation", "head": "deeplabv3",
                                                            "aux_loss": True}}
    moved_keys(config)
    assert config == {"model": {"depth": 20}, "task": {"name": "segmentation", "compile": True,
                                                       "net": {"head": "deeplabv3", "aux_loss": True}}}
    detection = {"task": {"network": {"fpn_channels": 16}}}
    moved_keys(detection)
    assert detection == {"task": {"net": {"fpn_channels": 16}}}


def test_resume_names_every_setting_that_would_change_the_result():
    stored = {"seed": 0, "optim": {"optimizer": {"lr": 0.1}}, "data": {"num_workers": 4, "batch_size": 8},
              "trainer": {"max_epochs": 2, "accelerator": "cpu"}}
    current = {"seed": 1, "optim": {"optimizer": {"lr": 0.05}}, "data": {"num_workers": 0, "batch_size": 8},
               "trainer": {"max_epochs": 3, "accelerator": "gpu"}}
    assert changed_settings(stored, current) == [
        "optim.optimizer.lr=0.05 (the checkpoint's run: 0.1)", "seed=1 (the checkpoint's run: 0)"]


@pytest.mark.parametrize("change", ["seed=1", "optim.optimizer.lr=0.05"])
def test_resume_auto_under_other_settings_is_one_line_and_trains_nothing(two_epochs, tmp_path, capsys, monkeypatch, change):
    run_dir = tmp_path / "run"
    shutil.copytree(two_epochs["run_dir"], run_dir)
    before = {path: stat for path, stat in tree_snapshot(run_dir).items() if not path.endswith("train.log")}
    code, err = run_main(monkeypatch, capsys, [*SHORT_RUN, "trainer.max_epochs=2", change, "resume=auto", f"hydra.run.dir={run_dir}"])
    assert code == 2 and err.count("\n") == 1, err
    assert "expected a checkpoint trained with this command's settings, but these differ: " in err
    assert f"{change} (the checkpoint's run: " in err
    assert (run_dir / "train.log").read_text().rstrip().endswith(err.rstrip())  # the run's story ends with its cause
    after = tree_snapshot(run_dir)
    assert {path: after.get(path) for path in before} == before  # no checkpoint, CSV row or result touched
    assert sorted(path for path in after if path.endswith(".ckpt")) == sorted(path for path in before if path.endswith(".ckpt"))
