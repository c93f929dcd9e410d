"""What a checkpoint says of itself: values read from MMEngine's ``meta['cfg']`` text
(parsed, never executed) and how its model differs from the current config's, for the
reports of :mod:`.fit`; where it came from; its layout (:func:`format_evidence`: the
conversion marker, the model name in ``args``, MMEngine's ``meta``) and the position
grid it was saved with (:func:`recorded_grid`)."""
import ast
import re
from typing import Any, Dict, List, Optional, Tuple

from .files import CheckpointError, is_mmengine_checkpoint, own_meta
from .layout import CHECKPOINT_FORMATS


def _literal(node: ast.AST) -> Any:
    """A value of a config's pretty text without executing it: literals, ``dict(...)``
    calls with keywords, lists / tuples; anything else as its source text."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, (ast.List, ast.Tuple)):
        values = [_literal(e) for e in node.elts]
        return values if isinstance(node, ast.List) else tuple(values)
    if isinstance(node, ast.Dict):
        return {_literal(k): _literal(v) for k, v in zip(node.keys, node.values)
                if k is not None}
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and \
            node.func.id == 'dict' and not node.args:
        return {kw.arg: _literal(kw.value) for kw in node.keywords if kw.arg is not None}
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        value = _literal(node.operand)
        if isinstance(value, (int, float)):
            return -value
    return f'<{ast.unparse(node)}>'


def saved_config_value(cfg_text: str, name: str) -> Any:
    """The value of top-level ``name`` in a config's text as MMEngine saves it in
    ``meta['cfg']`` (parsed, not executed); None when absent or unreadable."""
    try:
        tree = ast.parse(cfg_text)
    except (SyntaxError, ValueError, TypeError):
        return None
    found = [node.value for node in tree.body if isinstance(node, ast.Assign) and any(
        isinstance(t, ast.Name) and t.id == name for t in node.targets)]
    return _literal(found[-1]) if found else None


def _plain(node: Any) -> Any:
    """A config node as plain dicts / lists (ConfigDict -> dict, tuples -> lists)."""
    if isinstance(node, dict):
        return {k: _plain(v) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return [_plain(v) for v in node]
    return node


def _flatten(node: Any, prefix: str = '') -> Dict[str, Any]:
    """``{'a.b.c': plain leaf}`` of a config node."""
    if not isinstance(node, dict):
        return {prefix[:-1]: _plain(node)}
    out = {}
    for k, v in node.items():
        out.update(_flatten(v, f'{prefix}{k}.'))
    return out


_NOT_SHAPE = re.compile(r'(^|\.)(init_cfg|pretrained|train_cfg|test_cfg|loss_\w*|'
                        r'data_preprocessor)(\.|$)')
_SAME_NORM = {'SyncBN', 'BN', 'MMSyncBN', 'TorchSyncBN'}


def model_config_differences(saved: dict, current: dict, limit: int = 8) -> List[str]:
    """``'backbone.embed_dims: 32 in the file's config, 96 here'`` for the model settings
    that differ (initialisation, losses, train/test settings and SyncBN vs BN left out)."""
    if isinstance(current, dict) and str(current.get('type', '')).endswith('TTAModel') \
            and isinstance(current.get('module'), dict):
        current = current['module']
    a, b = _flatten(saved), _flatten(current)
    lines = []
    for k in list(b) + [k for k in a if k not in b]:
        if _NOT_SHAPE.search(k):
            continue
        va, vb = a.get(k, '<unset>'), b.get(k, '<unset>')
        if va == vb or isinstance(va, str) and isinstance(vb, str) and {va, vb} <= _SAME_NORM:
            continue
        lines.append(f'{k}: {va!r} in the file\'s config, {vb!r} here')
    if len(lines) > limit:
        lines = lines[:limit] + [f'... ({len(lines) - limit} more)']
    return lines


def checkpoint_origin(ckpt: Any) -> str:
    """Where a checkpoint came from, from its ``meta``: MMEngine's experiment name (the
    config's file name and a time stamp), the iteration / epoch and the time."""
    meta = ckpt.get('meta') if isinstance(ckpt, dict) else None
    if not isinstance(meta, dict):
        return ''
    parts = []
    if meta.get('experiment_name'):
        parts.append(f"experiment '{meta['experiment_name']}'")
    if isinstance(meta.get('cfg'), str):
        work_dir = saved_config_value(meta['cfg'], 'work_dir')
        if isinstance(work_dir, str):
            parts.append(f"work_dir '{work_dir}'")
    if meta.get('iter') is not None:
        parts.append(f"iteration {meta['iter']}" + (
            f", epoch {meta['epoch']}" if meta.get('epoch') else ''))
    if meta.get('time'):
        parts.append(f"saved {meta['time']}")
    return ', '.join(parts)


_CFG_SHUFFLEMAMBA = re.compile(r"type\s*=\s*['\"]ShuffleMamba['\"]")
_CFG_CLS_FIRST = re.compile(r'with_cls_token\s*=\s*True')
_OVERLAPPING = re.compile(r'patch(\d+)_stride(\d+)')  # (a factory name's patch / stride)


def format_evidence(ckpt: object) -> Tuple[Optional[str], str]:
    """What a checkpoint object says about its own layout (see :func:`format_hint`):
    ``(format or None, the evidence in words)``. A model it names with overlapping
    patches (Vim's stride-8 "+" models) is a :class:`CheckpointError`: this backbone's
    patches do not overlap, so its weights would compute something else."""
    own = own_meta(ckpt)
    if own.get('shufflemamba_format') in CHECKPOINT_FORMATS[1:]:
        return own['shufflemamba_format'], "meta['shufflemamba_format']"
    args = ckpt.get('args') if isinstance(ckpt, dict) else None
    name = args.get('model') if isinstance(args, dict) else getattr(args, 'model', None)
    where = 'args.model'
    if not name and isinstance(ckpt, dict) and isinstance(ckpt.get('arch'), str):
        name, where = ckpt['arch'], 'arch'  # timm's train.py names the model there too
    name = str(name or '')
    low = name.lower()
    overlap = _OVERLAPPING.search(low)
    if overlap and overlap.group(1) != overlap.group(2):
        raise CheckpointError(
            f'{where}={name!r} has overlapping patches (patch {overlap.group(1)}, stride '
            f'{overlap.group(2)}: Vim\'s "+" models), and this backbone embeds '
            'non-overlapping patches (stride = patch size): its weights would compute '
            'something else here. Use a checkpoint of a model whose stride is its patch '
            'size (docs/model_zoo.md#weights).')
    if 'midclstok' in low or 'middle_cls' in low:
        return 'vim', f'{where}={name!r} (Vim, middle cls token)'
    if low.startswith('videomamba'):
        return 'videomamba', (f'{where}={name!r} (VideoMamba: cls first, the two '
                              'directions summed, not averaged)')
    if low.startswith(('mambar', 'shufflemamba', 'shuffle_mamba')):
        return 'shufflemamba', f'{where}={name!r} (cls token first)'
    if is_mmengine_checkpoint(ckpt):
        cfg_text = ckpt['meta'].get('cfg') if isinstance(ckpt.get('meta'), dict) else None
        if isinstance(cfg_text, str) and _CFG_CLS_FIRST.search(cfg_text) and \
                _CFG_SHUFFLEMAMBA.search(cfg_text):  # a classifier trained here
            return 'shufflemamba', ("MMEngine meta: the config's ShuffleMamba backbone "
                                    'has with_cls_token=True (cls first)')
        return 'mmplugin', "MMEngine 'meta' (a model trained in this framework)"
    return None, (f'{where}={name!r} is not a known factory name' if name
                  else 'no args.model, no MMEngine meta, no shufflemamba_format marker')


def _pair(value) -> Optional[Tuple[int, int]]:
    if isinstance(value, int) and not isinstance(value, bool):
        return value, value
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(
            isinstance(v, int) and not isinstance(v, bool) for v in value):
        return tuple(value)
    return None


#: The backbones whose saved config gives their position grid (img_size / patch_size,
#: defaults 224 / 16).
_GRID_BACKBONES = ('ShuffleMamba', 'ShuffleMambaAdapter')


def recorded_grid(ckpt: object, prefix: Optional[str] = None) -> Optional[Tuple[int, int]]:
    """The (H, W) grid of the position embedding a file in this project's layout was
    saved with, where the file says: the conversion marker's ``target_grid``
    (tools/convert_checkpoint.py), else the ``img_size`` / ``patch_size`` of the backbone
    at ``prefix`` (default ``'backbone.'``: ``model.backbone``; ``'student.backbone.'``:
    ``model.student.backbone``) in an MMEngine checkpoint's saved config; None
    otherwise."""
    own = own_meta(ckpt)
    if own:
        return _pair(own.get('target_grid'))
    if not is_mmengine_checkpoint(ckpt) or not isinstance(ckpt['meta'].get('cfg'), str):
        return None
    path = (prefix or 'backbone.').strip('.').split('.')
    node = saved_config_value(ckpt['meta']['cfg'], 'model')
    for part in path[1:] if path[0] == 'module' else path:  # (a DDP-saved key)
        node = node.get(part) if isinstance(node, dict) else None
    if not isinstance(node, dict) or \
            str(node.get('type', '')).split('.')[-1] not in _GRID_BACKBONES:
        return None
    img, patch = _pair(node.get('img_size', 224)), _pair(node.get('patch_size', 16))
    if img is None or patch is None or not all(patch):
        return None
    return img[0] // patch[0], img[1] // patch[1]


def format_hint(ckpt: object) -> Optional[str]:
    """The format a checkpoint object's own contents establish, or None: the
    ``meta['shufflemamba_format']`` marker, else the model name in ``args``, else
    MMEngine's ``meta`` (see docs/loading.md, "What loads, and how"). A model it names
    with overlapping patches is a :class:`CheckpointError` (:func:`format_evidence`)."""
    return format_evidence(ckpt)[0]
