from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="darkfold",
    version="0.1.0",
    description="Darknet YOLO models from Python: read .cfg/.weights, fold BatchNorm, write Darknet format",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["darkfold", "darkfold.*"]),
    package_data={"darkfold": ["models/*.cfg", "models/*.weights", "data/*.names", "data/*.jpg"]},
    python_requires=">=3.9",
    # OpenCV is for the detection pipeline (image I/O, resizing), not its dnn module:
    # OpenCV 5, which dropped readNetFromDarknet, is fine at run time.
    install_requires=["numpy>=1.22", "opencv-python-headless>=4.5", "numba>=0.56"],
    extras_require={
        # darkfold export: the onnx package builds and checks the graph; onnxruntime, when
        # installed, runs each export against darkfold's engine before it is written.
        "onnx": ["onnx>=1.14"],
        "onnxruntime": ["onnx>=1.14", "onnxruntime>=1.15"],
        # OpenCV 4.14 is the last release with cv2.dnn.readNetFromDarknet, the
        # independent implementation the tests compare against.
        "test": ["pytest>=7", "hypothesis>=6", "opencv-python-headless==4.14.*", "onnx>=1.14", "onnxruntime>=1.15"],
    },
    entry_points={"console_scripts": ["darkfold=darkfold.cli:main"]},
    license="MIT",
)
