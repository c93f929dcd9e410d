"""Build and install the fused CUDA kernels (mamba-ssm's selective scan and
causal-conv1d) for the GPU of this machine, offline, with cached wheels.

    python tools/build_cuda_kernels.py [--src DIR] [--cache DIR] [--arch 9.0]
        [--jobs N] [--only mamba-ssm|causal-conv1d]

Called by ``WITH_MAMBA_KERNELS=1 bash tools/setup_env.sh``. What it takes care of:

- Their installers try to download a prebuilt wheel and stop with a URLError on a node
  without network unless ``MAMBA_FORCE_BUILD=TRUE`` / ``CAUSAL_CONV1D_FORCE_BUILD=TRUE``
  (exactly "TRUE"): both are set.
- Their ``setup.py`` hard-code ``-gencode`` flags for every architecture (so
  ``TORCH_CUDA_ARCH_LIST`` is ignored): the unpacked ``setup.py`` is patched to build
  for this GPU's compute capability only (mamba-ssm took 173 s for sm_90 with 11 jobs,
  causal-conv1d 408 s: one file holds 1242 kernels).
- mamba-ssm 2.3 declares tilelang, apache-tvm-ffi, quack-kernels, triton and
  transformers, which the scan does not need (this package imports the compiled module
  ``selective_scan_cuda`` directly): installed with ``--no-deps``.
- Sources: the sdists in ``--src`` (default ``$SHUFFLEMAMBA_CACHE/src``), downloaded
  there with ``pip download`` when missing and the index is reachable. On an offline
  node, put ``mamba_ssm-2.3.2.post1.tar.gz`` and ``causal_conv1d-1.7.0.tar.gz`` (or the
  unpacked folders) there.
- Wheels are cached per torch version, Python and GPU architecture in
  ``$SHUFFLEMAMBA_CACHE/wheels``: a second install takes seconds.
"""
import argparse
import glob
import os
import os.path as osp
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time

PACKAGES = {
    'mamba-ssm': dict(version='2.3.2.post1', dist='mamba_ssm', env='MAMBA_FORCE_BUILD',
                      module='selective_scan_cuda'),
    'causal-conv1d': dict(version='1.7.0', dist='causal_conv1d',
                          env='CAUSAL_CONV1D_FORCE_BUILD', module='causal_conv1d_cuda'),
}
MARKER = '# mmplugin_shufflemamba: build for one GPU architecture'


def patch_gencode(setup_py: str, arch: str) -> str:
    """Make a ``setup.py`` that appends ``-gencode`` pairs to ``cc_flag`` build for
    ``arch`` ('9.0' -> sm_90) only: after the last ``-gencode`` line, keep every other
    flag and put exactly one pair. Raises ValueError when there is nothing to patch."""
    major, minor = arch.split('.')
    sm = f'{major}{minor}'
    if MARKER in setup_py:
        return setup_py
    lines = setup_py.splitlines(keepends=True)
    last, indent = None, None
    for i, line in enumerate(lines):
        if re.match(r'\s*cc_flag\s*=\s*\[\s*\]', line):
            indent = line[:len(line) - len(line.lstrip())]
        if 'cc_flag' in line and ('"-gencode"' in line or "'-gencode'" in line
                                  or 'arch=compute_' in line):
            last = i
    if last is None or indent is None:
        raise ValueError('setup.py has no cc_flag -gencode flags to patch; build it by '
                         'hand with TORCH_CUDA_ARCH_LIST set')
    patch = (f'{indent}{MARKER}\n'
             f'{indent}cc_flag = [f for f in cc_flag if f != "-gencode" and not '
             f'f.startswith("arch=")] + ["-gencode", "arch=compute_{sm},code=sm_{sm}"]\n')
    return ''.join(lines[:last + 1]) + patch + ''.join(lines[last + 1:])


def log(msg: str) -> None:
    print(f'[build_cuda_kernels] {msg}', file=sys.stderr, flush=True)


def gpu_arch() -> str:
    import torch
    if not torch.cuda.is_available():
        raise RuntimeError('no CUDA GPU visible: the fused kernels are built on the GPU '
                           'node itself (or pass --arch, e.g. --arch 9.0 for H100/H200)')
    major, minor = torch.cuda.get_device_capability()
    return f'{major}.{minor}'


def find_source(src_dir: str, name: str, version: str, dist: str) -> str:
    """An sdist or unpacked folder of ``name==version`` in src_dir, downloaded there
    when missing (and the index is reachable)."""
    pattern = osp.join(src_dir, f'{dist}-{version}*')
    found = sorted(glob.glob(pattern)) + sorted(
        glob.glob(osp.join(src_dir, f'{dist.replace("_", "-")}-{version}*')))
    if not found:
        log(f'downloading the {name}=={version} source into {src_dir}')
        os.makedirs(src_dir, exist_ok=True)
        run = subprocess.run([sys.executable, '-m', 'pip', 'download', '--no-deps',
                              '--no-binary', ':all:', '--no-build-isolation',
                              f'{name}=={version}', '-d', src_dir],
                             capture_output=True, text=True)
        found = sorted(glob.glob(pattern))
        if run.returncode != 0 or not found:
            raise RuntimeError(
                f'the {name}=={version} source is not in {src_dir} and could not be '
                f'downloaded ({run.stderr.strip().splitlines()[-1:] or run.returncode}). '
                f'On an offline node copy {dist}-{version}.tar.gz there (from PyPI) and '
                'run again.')
    return found[0]


def unpack(src: str, work: str) -> str:
    if osp.isdir(src):
        dst = osp.join(work, osp.basename(src))
        shutil.copytree(src, dst)
        return dst
    with tarfile.open(src) as tar:
        tar.extractall(work, filter='data')
        top = tar.getnames()[0].split('/')[0]
    return osp.join(work, top)


def build(name: str, args, arch: str) -> None:
    import torch
    spec = PACKAGES[name]
    tag = (f'torch{torch.__version__.split("+")[0]}-cp{sys.version_info[0]}'
           f'{sys.version_info[1]}-sm{arch.replace(".", "")}')
    wheel_dir = osp.join(args.cache, 'wheels', f'{name}-{spec["version"]}-{tag}')
    wheels = glob.glob(osp.join(wheel_dir, '*.whl'))
    if not wheels:
        src = find_source(args.src, name, spec['version'], spec['dist'])
        with tempfile.TemporaryDirectory() as work:
            folder = unpack(src, work)
            setup_py = osp.join(folder, 'setup.py')
            with open(setup_py) as f:
                text = f.read()
            with open(setup_py, 'w') as f:
                f.write(patch_gencode(text, arch))
            env = dict(os.environ, MAX_JOBS=str(args.jobs), **{spec['env']: 'TRUE'})
            log(f'building {name} {spec["version"]} for sm_{arch.replace(".", "")} '
                f'with {args.jobs} jobs (mamba-ssm: about 3 minutes, causal-conv1d: '
                'about 7 on an H200 node)')
            start = time.time()
            os.makedirs(wheel_dir, exist_ok=True)
            subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-build-isolation',
                            '--no-deps', '-w', wheel_dir, '.'], cwd=folder, env=env,
                           check=True)
            log(f'built {name} in {time.time() - start:.0f} s; wheel cached in {wheel_dir}')
        wheels = glob.glob(osp.join(wheel_dir, '*.whl'))
    subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', '--no-deps',
                    '--force-reinstall', *wheels], check=True)
    check = subprocess.run([sys.executable, '-c', f'import torch, {spec["module"]}'],
                           capture_output=True, text=True)
    if check.returncode != 0:
        raise RuntimeError(f'{name} installed but `import {spec["module"]}` fails: '
                           f'{check.stderr.strip().splitlines()[-1:]}')
    log(f'{name}: `import {spec["module"]}` works')


def main(argv=None) -> int:
    cache = os.environ.get('SHUFFLEMAMBA_CACHE',
                           osp.join(osp.expanduser('~'), '.cache', 'mmplugin_shufflemamba'))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--cache', default=cache, help='wheel cache root')
    parser.add_argument('--src', default=None, help='folder with the source archives '
                        '(default: CACHE/src)')
    parser.add_argument('--arch', default=None, help='compute capability, e.g. 9.0 '
                        '(default: the visible GPU)')
    parser.add_argument('--jobs', type=int, default=max(1, min(12, os.cpu_count() or 1)),
                        help='parallel compile jobs (MAX_JOBS)')
    parser.add_argument('--only', choices=sorted(PACKAGES), default=None)
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error('--jobs must be >= 1')
    args.src = args.src or osp.join(args.cache, 'src')
    if args.arch is not None and not re.fullmatch(r'\d+\.\d+', args.arch):
        parser.error(f'--arch must look like 9.0 or 8.6, got {args.arch!r}')
    try:
        arch = args.arch or gpu_arch()
        for name in ([args.only] if args.only else ['mamba-ssm', 'causal-conv1d']):
            build(name, args, arch)
    except (RuntimeError, subprocess.CalledProcessError, ValueError) as e:
        log(f'ERROR: {e}')
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
