"""``darkfold convert``: fold a model's BatchNorms and write the folded pair, checked before it lands."""

import os

from .errors import OutputError, UnsupportedError
from .files import InputFiles, atomic_outputs
from .fold import folded_params, plan_fold
from .layers import build_layers
from .model import load, write_files
from .verify import TOLERANCE, VerificationError
from .verify import verify as compare_outputs


def convert(cfg_path, weights_path, out_cfg_path, out_weights_path, *, force=False, verify=False,
            tolerance=TOLERANCE, threads=None):
    """Fold a model's BatchNorms and write the folded pair, one layer at a time.

    The same files as ``load(cfg_path, weights_path).fold().save(...)``, but
    each folded layer is written and dropped before the next is computed, so
    memory stays near the size of the input file. The inputs are checked
    first; an input is never overwritten, an existing output only with
    ``force=True``, and the two outputs appear together or not at all.

    ``verify=True`` runs the written pair against the original (``verify``)
    while it still has temporary names: a fold that does not reproduce the
    original raises ``VerificationError`` and replaces nothing. A model whose
    layers the engine cannot run is written unchecked, with a warning in the
    result's ``warnings``. Returns the folded model, read back from the
    written files; ``.verification`` holds the check (None if none ran).
    """
    model = load(cfg_path, weights_path)
    if os.path.abspath(out_cfg_path) == os.path.abspath(out_weights_path):
        raise OutputError(f"{out_cfg_path}: the folded cfg and weights need two different paths", path=out_cfg_path,
                          expected="two output paths", found="one")
    plan = plan_fold(model)
    _, layers, _ = build_layers(plan.cfg)
    warnings = list(model.warnings)  # line numbers of the input, which the user edits
    verification = None
    with atomic_outputs(out_cfg_path, out_weights_path, replace=force,
                        inputs=InputFiles(model.sources)) as temporaries:
        write_files(plan.cfg, *temporaries, model.header, layers, folded_params(model, plan))
        if verify:
            verification = _check(model, load(*temporaries), out_weights_path, tolerance, threads, warnings)
    folded = load(out_cfg_path, out_weights_path)
    folded.folded_layers = plan.folded
    folded.warnings = warnings
    folded.verification = verification
    return folded


def _check(original, folded, output, tolerance, threads, warnings):
    try:
        verification = compare_outputs(original, folded, tolerance=tolerance, threads=threads)
    except UnsupportedError as error:  # the fold needs no engine; only its check does
        warnings.append(f"{error}; the folded files are written but not verified")
        return None
    if not verification.ok:
        raise VerificationError(
            f"{output}: the folded model does not reproduce {original.cfg.path} (difference "
            f"{verification.worst.relative:.2e} > {verification.worst.tolerance:g}); nothing was written; "
            "please report this", verification, path=output)
    return verification
