"""The one exception type darkfold raises for bad input.

Every message names the file (and the line or layer where it can) and says what
was expected, so the CLI can print it as it is, without a traceback.
"""


class DarkfoldError(Exception):
    """A model file, option or argument darkfold cannot accept."""


class CfgError(DarkfoldError):
    """A .cfg file that is not a valid Darknet network description."""


class WeightsError(DarkfoldError):
    """A .weights file that does not match its cfg or is not a weights file."""
