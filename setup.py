import os
import re

from setuptools import find_packages, setup


def get_version() -> str:
    path = os.path.join(os.path.dirname(__file__), 'mmplugin_shufflemamba', 'version.py')
    with open(path, encoding='utf-8') as f:
        return re.search(r"__version__ = '([^']+)'", f.read()).group(1)


def get_extensions():
    """The compiled CPU selective scan, built when torch is importable.

    Set SHUFFLEMAMBA_NO_EXT=1 to skip it (the pure-PyTorch path is used then) and
    SHUFFLEMAMBA_CPU_ARCH to choose -march (default: native, i.e. this machine).
    """
    if os.environ.get('SHUFFLEMAMBA_NO_EXT', '0') == '1':
        return [], {}
    try:
        from torch.utils.cpp_extension import BuildExtension, CppExtension
    except ImportError:
        return [], {}
    arch = os.environ.get('SHUFFLEMAMBA_CPU_ARCH', 'native')
    ext = CppExtension(
        'mmplugin_shufflemamba._ext',
        ['mmplugin_shufflemamba/ops/csrc/selective_scan_cpu.cpp',
         'mmplugin_shufflemamba/ops/csrc/causal_conv1d_cpu.cpp'],
        depends=['mmplugin_shufflemamba/ops/csrc/cpu_math.h',
                 'mmplugin_shufflemamba/ops/csrc/cpu_layout.h'],
        extra_compile_args=['-O3', f'-march={arch}', '-mprefer-vector-width=512', '-ffast-math', '-fopenmp',
                            '-std=c++20'],
        extra_link_args=['-fopenmp'])
    return [ext], {'build_ext': BuildExtension.with_options(use_ninja=False)}


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
    packages=find_packages(exclude=('tests', 'tests.*', 'configs', 'tools')),
    include_package_data=True,
    python_requires='>=3.8',
    install_requires=[
        'torch>=2.0',
        'torchvision',
        'mmengine>=0.10.0,<1.0',
        'mmcv>=2.0.0,<2.2.0',
        'mmsegmentation>=1.2.0',
        'mmdet>=3.0.0',
        'timm',
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
