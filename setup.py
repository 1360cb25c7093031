import importlib.metadata
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.sdist import sdist

# Every OpenCV distribution on PyPI installs the same cv2 package: a second one, installed
# beside the first, overwrites its files (another version, without the first one's GUI or
# contrib modules), and uninstalling either leaves a cv2 that no longer imports. darkfold
# runs with any of them, so it requires the one the environment already has (where several
# are, the fullest, as darkfold/opencv.py's DISTRIBUTIONS orders them).
OPENCV_DISTRIBUTIONS = ("opencv-contrib-python", "opencv-python", "opencv-contrib-python-headless",
                        "opencv-python-headless")
DEFAULT_OPENCV = "opencv-python-headless"  # what darkfold brings where no OpenCV is installed


# Prints the folders a Python imports installed packages from: its site-packages and, outside
# a venv, the user site (where `pip install --user` puts them).
SITE_FOLDERS = ("import json, site, sys; print(json.dumps(site.getsitepackages()"
                " + ([site.getusersitepackages()] if sys.prefix == sys.base_prefix else [])))")


def target_python():
    """The Python darkfold is being installed for.

    pip's build isolation runs setup.py in that same Python, only with its site-packages
    taken off sys.path. A frontend that builds in a venv of its own instead (python -m build;
    pip --use-feature=venv-isolation) makes that venv in the temp folder, named build-env-*
    (pip-build-env-* for pip), without pip, with the target's own `python -m venv`, which
    pyvenv.cfg records (Python 3.11 and later).
    """
    prefix = Path(sys.prefix)
    config = prefix / "pyvenv.cfg"
    if prefix.parent != Path(tempfile.gettempdir()) or "build-env-" not in prefix.name or not config.is_file():
        return sys.executable
    for line in config.read_text(encoding="utf-8").splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "command" and " -m venv --without-pip " in value:
            return value.split(" -m venv ")[0].strip()
    return sys.executable


def target_site_packages():
    """The folders the target Python imports installed packages from."""
    found = subprocess.run([target_python(), "-c", SITE_FOLDERS], capture_output=True, text=True, check=True)
    return [folder for folder in json.loads(found.stdout) if os.path.isdir(folder)]


def installed_opencv(folders):
    """The OpenCV distribution installed in ``folders`` ("" for a cv2 no pip distribution
    owns, such as conda's or Debian's python3-opencv), or None where there is no cv2."""
    names = {(dist.metadata["Name"] or "").lower().replace("_", "-")
             for dist in importlib.metadata.distributions(path=folders)}
    found = [name for name in OPENCV_DISTRIBUTIONS if name in names]
    if found:
        return found[0]
    for folder in folders:
        if any(entry == "cv2" or entry.startswith("cv2.") for entry in os.listdir(folder)):
            return ""
    return None


opencv = installed_opencv(target_site_packages())
if opencv is None:
    opencv = DEFAULT_OPENCV


def requires_opencv(version):
    """The installed OpenCV distribution at ``version``: an older copy is upgraded in place,
    never joined by a second one; a cv2 that pip does not manage is left alone."""
    return [f"{opencv}{version}"] if opencv else []


class NoSdist(sdist):
    """pip caches the wheel it builds from an sdist, keyed by the sdist alone, and would hand
    the OpenCV requirement chosen for one environment to the next. A folder (a clone) is
    never cached: each `pip install .` decides for its own environment."""

    def run(self):
        raise SystemExit("darkfold builds no sdist: its OpenCV requirement depends on the environment it is "
                         "installed into. Install from the source folder (pip install .), or build a wheel "
                         "in the environment it is for (pip wheel . or python -m build --wheel).")


setup(
    name="darkfold",
    version="0.1.0",
    description="Darknet YOLO models from Python: read .cfg/.weights, fold BatchNorm, write Darknet format",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["darkfold", "darkfold.*"]),
    package_data={"darkfold": ["models/*.cfg", "models/*.weights", "data/*.names", "data/*.jpg"]},
    python_requires=">=3.9",
    # OpenCV is for the detection pipeline (image and video I/O, drawing), not its dnn module:
    # OpenCV 5, which dropped readNetFromDarknet, is fine at run time.
    install_requires=["numpy>=1.22", "numba>=0.56", *requires_opencv(">=4.5")],
    extras_require={
        # darkfold export: the onnx package builds and checks the graph; onnxruntime, when
        # installed, runs each export against darkfold's engine before it is written, and
        # runs models for backend="onnxruntime" (--backend onnxruntime).
        "onnx": ["onnx>=1.14"],
        "onnxruntime": ["onnx>=1.14", "onnxruntime>=1.15"],
        # backend="openvino" (--backend openvino): OpenVINO runs the model's ONNX graph, built by onnx.
        "openvino": ["onnx>=1.14", "openvino>=2024.0"],
        # darkfold detect --dask, predict(client=): detection on a Dask cluster (darkfold/cluster.py).
        "dask": ["dask[distributed]>=2024.1"],
        # OpenCV 4.14 is the last release with cv2.dnn.readNetFromDarknet, the independent
        # implementation the tests compare against: the same distribution, pinned.
        # onnxruntime, OpenVINO and Dask: every backend and the cluster are tested for real.
        "test": ["pytest>=7.3", "hypothesis>=6", *requires_opencv("==4.14.*"), "onnx>=1.14", "onnxruntime>=1.15",
                 "openvino>=2024.0", "dask[distributed]>=2024.1"],
    },
    entry_points={"console_scripts": ["darkfold=darkfold.cli:command"]},
    cmdclass={"sdist": NoSdist},
    license="MIT",
)
