"""Fold BatchNorm into the layer before it, and rewrite the cfg to match.

Which layers fold, and how their cfg changes; the arithmetic is batchnorm.py's. The folded
layer keeps ``biases`` + ``weights`` and loses the three BN arrays; its cfg line becomes
``batch_normalize=0``. A standalone ``[batchnorm]`` layer directly after a linear convolution
is merged into that convolution and its section removed, with later layer references
renumbered.
"""

from dataclasses import dataclass

from .batchnorm import fold_own_batchnorm, merge_batchnorm
from .errors import ModelError


@dataclass(frozen=True)
class FoldPlan:
    """What folding ``model`` changes: the new cfg and which layers fold."""

    cfg: object  # the folded Cfg
    folded: tuple  # indices (in the original) of layers whose BatchNorm folds
    merged: frozenset  # indices of [batchnorm] layers merged into the convolution before


def plan_fold(model):
    """Decide which BatchNorms fold and write the folded cfg; no arrays are touched."""
    if not model.has_weights:
        raise ModelError(f"{model.cfg.path}: fold needs the weights; load the model with its .weights file",
                         path=model.cfg.path, expected="a model loaded with weights", found="no weights")
    model.check_params()
    cfg = model.cfg.copy()
    sections = cfg.sections[1:]  # sections[i] is layer i in the copy
    own = [layer.index for layer in model.layers if _has_own_batchnorm(model, layer)]
    for index in own:
        for key in ("batch_normalize", "cbn"):
            if key in sections[index]:
                cfg.set(sections[index], key, 0)
    merged = [layer.index for layer in model.layers if _is_mergeable_batchnorm(model, layer)]
    if merged:
        _renumber_references(cfg, model.layers, merged)
        cfg = cfg.without_sections([sections[i] for i in merged])
    return FoldPlan(cfg, tuple(sorted(own + merged)), frozenset(merged))


def folded_params(model, plan):
    """Yield the arrays of each layer of the folded model, one layer at a time.

    A consumer that writes and drops each layer (as ``darkfold.convert``
    does) never holds more than one folded layer in memory.
    """
    for layer in model.layers:
        if layer.index in plan.merged:
            continue
        arrays = model.params[layer.index]
        if _has_own_batchnorm(model, layer):
            arrays = fold_own_batchnorm(arrays)
        if layer.index + 1 in plan.merged:
            arrays = merge_batchnorm(arrays, model.params[layer.index + 1])
        yield arrays


def fold_model(model):
    """A new Model with every foldable BatchNorm folded (see module docstring).

    ``model`` is not changed. The new model's ``folded`` lists the indices
    (in ``model``) of the layers whose BatchNorm was folded.
    """
    plan = plan_fold(model)
    result = type(model)(plan.cfg, model.header, list(folded_params(model, plan)))
    result.folded_layers = plan.folded
    result.sources = model.sources  # unfolded layers' arrays are still the input file's
    result.warnings = model.warnings  # with the input's line numbers, which the user edits
    return result


def _has_own_batchnorm(model, layer):
    return (layer.type in ("convolutional", "connected") and layer.batch_normalize
            and model.params[layer.index] is not None)


def _is_mergeable_batchnorm(model, layer):
    """A [batchnorm] right after a linear convolution that nothing else reads."""
    if layer.type != "batchnorm" or not layer.inputs or model.params[layer.index] is None:
        return False
    before = model.layers[layer.inputs[0]]  # the layer before, all a [batchnorm] reads
    if before.type != "convolutional" or before.activation != "linear":
        return False
    return all(other is layer for other in model.layers if before.index in other.inputs)


def _renumber_references(cfg, layers, dropped):
    """Rewrite route/shortcut references for the removal of layers ``dropped``.

    A reference to a dropped [batchnorm] now points at the convolution it was
    merged into, which has the same output.
    """

    def new_index(old):
        return old - sum(1 for d in dropped if d <= old)

    sections = cfg.sections[1:]
    for layer in layers:
        key = layer.kind.source_key
        if key is None or layer.index in dropped:
            continue
        section = sections[layer.index]
        here = new_index(layer.index)
        values = section.get_ints(key)
        targets = [new_index(layer.index + v if v < 0 else v) for v in values]
        rewritten = [t - here if v < 0 else t for v, t in zip(values, targets)]
        if rewritten != values:
            separator = ", " if ", " in section.options[key].value else ","
            cfg.set(section, key, separator.join(str(v) for v in rewritten))
