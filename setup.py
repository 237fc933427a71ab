"""ddsr: efficient super-resolution (DDistill-SR, EDSRmini/SwinIRmini compression, DIPNet boosting) for BasicSR."""
from setuptools import find_packages, setup

with open('README.md', encoding='utf-8') as f:
    long_description = f.read()

setup(
    name='ddsr',
    version='0.1.0',
    description='Efficient super-resolution plugged into BasicSR: DDistill-SR, compression, multi-stage boosting',
    long_description=long_description,
    long_description_content_type='text/markdown',
    license='Apache-2.0',
    python_requires='>=3.10',
    packages=find_packages(include=['ddsr', 'ddsr.*']),
    install_requires=[
        'basicsr>=1.4.2',
        'torch>=2.1',
        'torchvision',
        'numpy',
        'opencv-python',
        'lmdb',
        'pyyaml',
        'addict',
        'scikit-image',
        'tqdm',
        'torch-pruning>=1.3',
        'matplotlib',
    ],
    extras_require={
        'onnx': ['onnx', 'onnxruntime'],
        'test': ['pytest'],
    },
    entry_points={'console_scripts': ['basicsr=ddsr.cli:basicsr_main', 'ddsr=ddsr.cli:ddsr_main']},
)
