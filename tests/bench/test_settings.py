"""bench.* settings (c3exp/bench/settings.py): each bad value is one line naming it."""
from __future__ import annotations

import pytest

from c3exp.cli.bench import main


@pytest.mark.parametrize(
    "args,message",
    [
        (["bench.device=tpu"], "bench.device='tpu' is not valid"),
        (["bench.precision=8-mixed"], "bench.precision='8-mixed' is not valid"),
        (["bench.precision=16-mixed"], "bench.precision='16-mixed' is not valid: expected 32 or bf16-mixed on a CPU"),
        (["bench.steps=1"], "bench.steps=1 is not valid"),
        (["bench.peak=maybe"], "bench.peak='maybe' is not valid: expected true or false"),
        (["attn=none,sk"], "attn='sk' is not valid"),
        (["bench.threads=1,2"], "bench.threads=[1, 2] is not valid: expected one value for all configurations"),
        (["bench.nope=1"], "bench.nope is not a config key or group (bench.nope=1): did you mean bench.peak"),
        (["bench=foo"], "bench is not a config key or group (bench=foo): did you mean bench."),
        (["model.nope=1", "bench.steps=3"], "model.nope is not a config key or group (model.nope=1): did you mean model.name"),
        (["bench.path="], "bench.path='' is not valid"),
    ],
)
def test_bad_bench_settings_are_one_line_errors(args, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith("error: ") and message in err and err.count("\n") == 1
