"""OpenCV's cv2, for detection's image and video I/O and drawing (never ``cv2.dnn``).

Every OpenCV distribution on PyPI installs the same cv2 folder. Where two were installed
into one environment, uninstalling one deletes files the other still needs: cv2 then fails
to import, or imports as an empty namespace package. Both get one DarkfoldError that names
the distribution to reinstall, rather than an AttributeError deep inside detection.
"""

import importlib.metadata

from .errors import DarkfoldError

# The distributions that install cv2 (setup.py lists the same), the fullest first: the one
# to keep where several are installed.
DISTRIBUTIONS = ("opencv-contrib-python", "opencv-python", "opencv-contrib-python-headless",
                 "opencv-python-headless")


def installed_distributions():
    """The OpenCV distributions pip lists in this environment."""
    found = []
    for name in DISTRIBUTIONS:
        try:
            importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        found.append(name)
    return found


def broken_opencv(problem):
    """The DarkfoldError for a cv2 that ``problem`` describes, with the pip command that repairs it."""
    installed = installed_distributions()
    if not installed:
        fix = "no OpenCV distribution is installed; install one: pip install opencv-python-headless"
    elif "cannot open shared object file" in problem:  # opencv-python's GUI needs libGL and X11
        fix = (f"a system library it needs is missing: install it, or use OpenCV without a GUI: "
               f"pip uninstall -y {' '.join(installed)} && pip install opencv-python-headless")
    elif len(installed) == 1:
        fix = f"reinstall it: pip install --force-reinstall {installed[0]}"
    else:
        keep, *others = installed
        fix = (f"{', '.join(installed)} are all installed and share the cv2 folder; keep one: "
               f"pip uninstall -y {' '.join(others)} && pip install --force-reinstall {keep}")
    return DarkfoldError(f"OpenCV (cv2) {problem}: {fix}", expected="an OpenCV that imports, with cv2.imdecode",
                         found=problem)


try:
    import cv2
except ImportError as error:
    raise broken_opencv(f"does not import ({error})") from None
if not hasattr(cv2, "imdecode"):
    raise broken_opencv("imports but is incomplete (no cv2.imdecode), as a half-uninstalled OpenCV is")
