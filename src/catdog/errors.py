"""The one exception type whose message is shown to the user as is, and how other errors become one line."""

import urllib.error


class CatdogError(Exception):
    """A mistake the user can fix (bad path, bad config value, wrong checkpoint).

    The scripts print its message as a single line and exit with status 2, without a
    traceback: so the message must say what is wrong *and* what to do about it.
    """


def one_line(error: BaseException, limit: int = 160, *, kind: bool = False) -> str:
    """An exception as one short line for a CatdogError message.

    Network errors give their reason (``HTTP Error 404: Not Found``, ``no network``); others their message,
    prefixed by the exception's type with ``kind=True`` (``TimeoutError: timed out``).
    """
    if isinstance(error, urllib.error.HTTPError):
        text = str(error)
    elif isinstance(error, urllib.error.URLError):
        text = str(error.reason)  # str(error) would wrap it in "<urlopen error ...>"
    else:
        text = f"{type(error).__name__}: {error}" if kind else str(error)
    text = " ".join(text.split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
