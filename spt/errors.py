"""The one exception type the command line turns into a one-line message."""


class SuiteError(Exception):
    """A user-facing error: bad input, a missing file, a wrong option.

    The message must fit on one line, name the file or option at fault and say how to fix it.
    The CLI prints it as ``error: <message>`` and exits with status 2, without a traceback.
    """
