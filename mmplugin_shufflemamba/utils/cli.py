"""argparse ``type`` functions shared by the tools: a bad value is a usage error (exit
status 2) that names the option, what it accepts and what it got; 0 is a value, never
"unset"."""
import argparse
import os.path as osp


def int_at_least(low: int, why: str = ''):
    """argparse ``type``: an integer >= ``low``."""

    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f'{text!r} is not an integer') from None
        if value < low:
            raise argparse.ArgumentTypeError(
                f'must be an integer >= {low}{" (" + why + ")" if why else ""}, got {value}')
        return value

    return parse


def non_empty(text: str) -> str:
    """argparse ``type``: a path that is not the empty string."""
    if not text.strip():
        raise argparse.ArgumentTypeError('must not be empty')
    return text


def existing_file(what: str, allow_uri: bool = False, keep=()):
    """argparse ``type``: the path of an existing file (with ``allow_uri`` also a URI such
    as ``https://...``, which the loader fetches; ``keep``: words passed as they are)."""

    def parse(text):
        if text in keep or (allow_uri and '://' in text):
            return text
        path = osp.expanduser(text)
        if not osp.isfile(path):
            raise argparse.ArgumentTypeError(
                f'{what} {text!r} ' + ('is a directory, not a file' if osp.isdir(path)
                                       else 'does not exist'))
        return path

    return parse


def device(text: str) -> str:
    """argparse ``type``: a device of this machine ('cpu', 'cuda', 'cuda:1')."""
    import torch
    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError):
        dev = None
    if dev is None or dev.type not in ('cpu', 'cuda'):
        raise argparse.ArgumentTypeError(f"{text!r} is not 'cpu', 'cuda' or 'cuda:N'")
    if dev.type == 'cuda' and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f'{text!r}: CUDA is not available on this machine')
    if dev.type == 'cuda' and dev.index is not None and \
            dev.index >= torch.cuda.device_count():
        raise argparse.ArgumentTypeError(
            f'{text!r}: this machine has {torch.cuda.device_count()} CUDA device(s)')
    return text


def file_in_the_way(path: str):
    """The file at ``path`` or above it that would stop a directory being made there
    (``None`` when there is none)."""
    path = osp.abspath(osp.expanduser(path))
    while not osp.exists(path) and osp.dirname(path) != path:
        path = osp.dirname(path)
    return None if osp.isdir(path) else path


def output_dir(text: str) -> str:
    """argparse ``type``: a directory to write into, new or existing (no file on its
    path)."""
    blocking = file_in_the_way(non_empty(text))
    if blocking is not None:
        raise argparse.ArgumentTypeError(
            f'{text!r}: {blocking} is a file, so no directory can be made there; give a '
            'directory (new or existing)')
    return text


def output_file(text: str) -> str:
    """argparse ``type``: a file to write, in a directory that exists."""
    path = osp.abspath(osp.expanduser(non_empty(text)))
    if osp.isdir(path):
        raise argparse.ArgumentTypeError(f'{text!r} is a directory, not a file')
    folder = osp.dirname(path)
    if not osp.isdir(folder):
        raise argparse.ArgumentTypeError(
            f'{text!r}: the directory {folder} does not exist (create it first: '
            f'mkdir -p {folder})')
    return path


def key_value(text: str) -> str:
    """argparse ``type`` of the items of ``--cfg-options`` (with MMEngine's ``DictAction``,
    which raises a bare ValueError / AssertionError on a malformed item): ``KEY=VALUE``,
    the brackets of a list or tuple value balanced."""
    key, eq, value = text.partition('=')
    if not eq or not key.strip():
        raise argparse.ArgumentTypeError(
            f'{text!r} is not KEY=VALUE (e.g. train_cfg.max_iters=10; a list: KEY=[a,b])')
    if (',' in value or value.startswith(('[', '('))) and (
            value.count('[') != value.count(']') or value.count('(') != value.count(')')):
        raise argparse.ArgumentTypeError(f'{text!r}: unbalanced brackets in the value')
    return text
