"""ddsr: efficient super-resolution (DDistill-SR, EDSRmini/SwinIRmini compression, DIPNet boosting) for BasicSR."""
import os
import shutil

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

# The start-up hook (see ddsr_torchvision_shim.py): this .pth file goes to the root of site-packages (purelib), next
# to the module it imports, in regular and editable installs alike.
HOOK_PTH = 'ddsr_torchvision_shim.pth'
HERE = os.path.dirname(os.path.abspath(__file__))


class BuildPyWithHook(build_py):
    """build_py that also copies the .pth hook to the build root (it becomes the wheel's purelib root)."""

    def run(self) -> None:
        super().run()
        if not self.editable_mode:
            self.copy_file(os.path.join(HERE, HOOK_PTH), os.path.join(self.build_lib, HOOK_PTH))

    def get_outputs(self, include_bytecode=True):
        return super().get_outputs(include_bytecode) + [os.path.join(self.build_lib, HOOK_PTH)]


def _editable_wheel_with_hook():
    """setuptools' editable_wheel (PEP 660) that adds the .pth hook to the wheel it builds. The hook's module is
    found through the editable install's own path entry / finder (``py_modules`` below)."""
    from setuptools.command.editable_wheel import editable_wheel

    class EditableWheelWithHook(editable_wheel):

        def _run_build_commands(self, dist_name, unpacked_wheel, build_lib, tmp_dir):
            result = super()._run_build_commands(dist_name, unpacked_wheel, build_lib, tmp_dir)
            shutil.copyfile(os.path.join(HERE, HOOK_PTH), os.path.join(unpacked_wheel, HOOK_PTH))
            return result

    return EditableWheelWithHook


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
    py_modules=['ddsr_torchvision_shim'],
    cmdclass={'build_py': BuildPyWithHook, 'editable_wheel': _editable_wheel_with_hook()},
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
