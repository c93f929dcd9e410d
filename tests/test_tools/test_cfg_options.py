"""``--cfg-options`` items that MMEngine's DictAction cannot read (no '=', unbalanced
brackets) are a usage error of every tool that takes them (exit status 2, the KEY=VALUE
form named), not a ValueError / AssertionError traceback from inside argparse."""
import sys

import pytest

from helpers.tools import load_tool

TOOLS = [('train.py', ), ('test.py', ), ('analysis', 'get_flops.py'),
         ('analysis', 'benchmark.py')]


def _argv(tool, tmp_path, options):
    config, ckpt = tmp_path / 'config.py', tmp_path / 'ckpt.pth'
    config.write_text('x = 1\n')
    ckpt.write_bytes(b'')
    files = [str(config), str(ckpt)] if tool[-1] == 'test.py' else [str(config)]
    return [tool[-1]] + files + ['--cfg-options'] + options


@pytest.mark.parametrize('tool', TOOLS, ids=lambda t: t[-1])
@pytest.mark.parametrize('item, words', [
    ('foo', "argument --cfg-options: 'foo' is not KEY=VALUE (e.g. train_cfg.max_iters=10; "
     'a list: KEY=[a,b])'),
    ('=3', "argument --cfg-options: '=3' is not KEY=VALUE"),
    ('a=[1,2', "argument --cfg-options: 'a=[1,2': unbalanced brackets in the value"),
    ('a=[[1]', "argument --cfg-options: 'a=[[1]': unbalanced brackets in the value"),
])
def test_malformed_cfg_options_are_usage_errors(capsys, monkeypatch, tmp_path, tool, item,
                                                words):
    parse = load_tool(*tool).parse_args
    monkeypatch.setattr(sys, 'argv', _argv(tool, tmp_path, ['a=1', item]))
    with pytest.raises(SystemExit) as e:
        parse()
    assert e.value.code == 2
    assert words in capsys.readouterr().err.strip().splitlines()[-1]


@pytest.mark.parametrize('tool', TOOLS, ids=lambda t: t[-1])
def test_well_formed_cfg_options_pass(monkeypatch, tmp_path, tool):
    monkeypatch.setattr(sys, 'argv', _argv(tool, tmp_path, [
        'a=1', 'b.c=[1,(2,3)]', 'd=x,y', 'e=', 'f=p=q']))
    args = load_tool(*tool).parse_args()
    assert args.cfg_options == dict(a=1, **{'b.c': [1, (2, 3)]}, d=['x', 'y'], e='',
                                    f='p=q')
