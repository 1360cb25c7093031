"""darkfold's version, at the ground of the package, for the CLI and the ONNX export's metadata."""

__version__ = "0.1.0"  # as setup.py says
