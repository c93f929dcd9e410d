import os
import re
import sys

from setuptools import find_namespace_packages, setup


def get_version() -> str:
    path = os.path.join(os.path.dirname(__file__), 'mmplugin_shufflemamba', 'version.py')
    with open(path, encoding='utf-8') as f:
        return re.search(r"__version__ = '([^']+)'", f.read()).group(1)


def _build_flags():
    """mmplugin_shufflemamba/ops/build_flags.py, loaded by path (the package itself
    imports torch and the OpenMMLab stack)."""
    import importlib.util
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'mmplugin_shufflemamba',
                        'ops', 'build_flags.py')
    spec = importlib.util.spec_from_file_location('_shufflemamba_build_flags', path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


#: setup.py commands that build the extension (pip's PEP 517 and PEP 660 builds run
#: bdist_wheel / editable_wheel; egg_info, dist_info and sdist need no compiler).
BUILD_COMMANDS = {'build', 'build_ext', 'bdist_wheel', 'bdist_egg', 'develop', 'install',
                  'editable_wheel'}


def get_extensions():
    """The compiled CPU kernels (selective scan, causal conv).

    The kernels are compiled once per code path (generic; on x86-64 also AVX2 and
    AVX-512) and chosen at run time from the CPU's features, so that one build runs on
    any machine of its architecture (see mmplugin_shufflemamba/ops/build_flags.py).
    Set SHUFFLEMAMBA_NO_EXT=1 to skip the extension (the pure-PyTorch path is used then)
    and SHUFFLEMAMBA_CPU_ARCH=<march> (e.g. native) to build one path for one kind of
    machine only. MAX_JOBS sets how many sources compile at once (default: 1).

    Building needs torch in the build environment: pip's default isolated build has
    none, so a command that builds binaries then stops with the fix (--no-build-isolation)
    instead of installing the package without its kernels; metadata and sdist commands
    need no extension.
    """
    if os.environ.get('SHUFFLEMAMBA_NO_EXT', '0') == '1':
        return [], {}
    try:
        from torch.utils.cpp_extension import BuildExtension, CppExtension
    except ImportError as e:
        if not set(sys.argv[1:]) & BUILD_COMMANDS:
            return [], {}
        raise SystemExit(
            f'mmplugin_shufflemamba: building the compiled CPU kernels needs torch in the '
            f'build environment ({type(e).__name__}: {e}). pip builds in an isolated '
            'environment without it by default: install torch first, then run pip with '
            '--no-build-isolation (pip install --no-build-isolation . , or -e . for an '
            'editable install); or set SHUFFLEMAMBA_NO_EXT=1 to install without the '
            'kernels (the PyTorch path, several times slower on the CPU).') from None
    bf = _build_flags()
    per_source = bf.source_flags()
    ext = CppExtension(
        'mmplugin_shufflemamba._ext',
        bf.sources(),
        depends=[f'{bf.CSRC}/{h}' for h in bf.HEADERS],
        define_macros=bf.define_macros(),
        extra_compile_args=list(bf.COMMON_FLAGS),
        extra_link_args=['-fopenmp'])

    class BuildExt(BuildExtension):
        """Per-source flags (each code path has its own instruction set) and MAX_JOBS
        sources compiled at once."""

        def build_extension(self, extension):
            compiler = self.compiler
            # The compiler class's own _compile (torch's wrapper only adds -std=c++20,
            # which COMMON_FLAGS has, and a ccache prefix; it swaps compiler_so per call,
            # which is not safe from several threads).
            base_compile = type(compiler)._compile

            def compile_all(sources, output_dir=None, macros=None, include_dirs=None,
                            debug=0, extra_preargs=None, extra_postargs=None, depends=None):
                macros, objects, extra_postargs, pp_opts, build = compiler._setup_compile(
                    output_dir, macros, include_dirs, sources, depends, extra_postargs)
                cc_args = compiler._get_cc_args(pp_opts, debug, extra_preargs)
                if isinstance(extra_postargs, dict):
                    extra_postargs = extra_postargs['cxx']
                jobs = [(obj, build[obj]) for obj in objects if obj in build]

                def one(job):
                    obj, (src, ext_) = job
                    key = os.path.relpath(os.path.abspath(src)).replace(os.sep, '/')
                    flags = list(extra_postargs or []) + per_source.get(key, [])
                    base_compile(compiler, obj, src, ext_, cc_args, flags, pp_opts)

                workers = max(1, int(os.environ.get('MAX_JOBS', '1') or 1))
                if workers == 1:
                    for job in jobs:
                        one(job)
                else:
                    from concurrent.futures import ThreadPoolExecutor
                    with ThreadPoolExecutor(workers) as pool:
                        list(pool.map(one, jobs))
                return objects

            original = compiler.compile
            compiler.compile = compile_all
            try:
                super().build_extension(extension)
            finally:
                compiler.compile = original

    return [ext], {'build_ext': BuildExt.with_options(use_ninja=False)}


def readme() -> str:
    with open('README.md', encoding='utf-8') as f:
        return f.read()


ext_modules, cmdclass = get_extensions()

setup(
    name='mmplugin_shufflemamba',
    version=get_version(),
    description='ShuffleMamba (Vision Mamba with stochastic layer-wise shuffle) '
    'backbones for OpenMMLab: mmsegmentation and mmdetection.',
    long_description=readme(),
    long_description_content_type='text/markdown',
    # Namespace packages so that the data-only ops/csrc folders are part of the package.
    packages=find_namespace_packages(include=('mmplugin_shufflemamba',
                                              'mmplugin_shufflemamba.*')),
    include_package_data=True,  # the kernel sources (MANIFEST.in): an sdist builds them
    python_requires='>=3.8',
    install_requires=[
        'torch>=2.4',  # nn.RMSNorm, torch.serialization.add_safe_globals
        'torchvision',
        'mmengine>=0.10.0,<1.0',
        'mmcv>=2.0.0,<2.2.0',
        'mmsegmentation>=1.2.0',
        'mmdet>=3.0.0',
        'mmpretrain>=1.2.0',  # ImageNet pretraining (configs/pretrain)
        'timm>=0.9',  # the classifiers are registered in timm's model registry
        'ftfy',
        'regex',
        'pycocotools',
    ],
    extras_require={
        # Fused CUDA kernels, used automatically when importable and tensors are on GPU.
        'cuda': ['mamba-ssm>=2.0', 'causal-conv1d>=1.2'],
        'tests': ['pytest>=7', 'pytest-timeout'],
    },
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    license='Apache License 2.0',
    zip_safe=False,
)
