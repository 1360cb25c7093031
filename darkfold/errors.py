"""The one exception type darkfold raises for bad input.

Every message names the file (and the line or layer where it can) and says what
was expected, so the CLI can print it as it is, without a traceback.
"""


class DarkfoldError(Exception):
    """A model file, option or argument darkfold cannot accept.

    ``warnings`` lists what looked wrong before the error (an unknown key
    next to a missing one, say), for the reader to see first.
    """

    warnings = ()


class CfgError(DarkfoldError):
    """A .cfg file that is not a valid Darknet network description."""


class WeightsError(DarkfoldError):
    """A .weights file that does not match its cfg or is not a weights file."""
