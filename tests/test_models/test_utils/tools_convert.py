"""Import tools/convert_checkpoint.py's main() for the tests."""
import importlib.util
import os.path as osp

_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
_spec = importlib.util.spec_from_file_location(
    'convert_checkpoint', osp.join(_ROOT, 'tools', 'convert_checkpoint.py'))
_mod = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_mod)
convert_main = _mod.main
