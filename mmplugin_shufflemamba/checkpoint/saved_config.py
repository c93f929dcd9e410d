"""What a checkpoint's saved config says: values read from MMEngine's ``meta['cfg']``
text (parsed, never executed) and how its model differs from the current config's, for
the reports of :mod:`.fit`."""
import ast
import re
from typing import Any, Dict, List


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
