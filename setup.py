import os
import re

from setuptools import find_packages, setup


def get_version() -> str:
    path = os.path.join(os.path.dirname(__file__), 'mmplugin_shufflemamba', 'version.py')
    with open(path, encoding='utf-8') as f:
        return re.search(r"__version__ = '([^']+)'", f.read()).group(1)


def readme() -> str:
    with open('README.md', encoding='utf-8') as f:
        return f.read()


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
    license='Apache License 2.0',
    zip_safe=False,
)
