"""Load the scripts under ``tools/`` (not a package) as modules, by path."""
import importlib.util
import os.path as osp
import sys

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TOOLS = osp.join(ROOT, 'tools')


def tool_path(*parts: str) -> str:
    """``tools/<parts...>``, e.g. ``tool_path('analysis', 'plot_logs.py')``."""
    return osp.join(TOOLS, *parts)


def load_tool(*parts: str, name: str = None):
    """Execute ``tools/<parts...>`` as a fresh module and return it.

    ``load_tool('convert_checkpoint.py')``, ``load_tool('analysis', 'stress_dist_exit.py')``.
    The module is registered in ``sys.modules`` under ``name`` (default ``tool_`` + the
    path's parts, e.g. ``tool_analysis_stress_dist_exit``: never the bare script name, which
    could shadow a real module such as ``test``) while and after it runs, as an import
    would do it, so dataclasses and pickling inside the script find it.
    """
    path = tool_path(*parts)
    if not osp.isfile(path):
        raise FileNotFoundError(path)
    if name is None:
        name = 'tool_' + '_'.join(p[:-3] if p.endswith('.py') else p for p in parts)
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    try:
        spec.loader.exec_module(mod)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return mod
