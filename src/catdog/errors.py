"""The one exception type whose message is shown to the user as is."""


class CatdogError(Exception):
    """A mistake the user can fix (bad path, bad config value, wrong checkpoint).

    The scripts print its message as a single line and exit with status 2, without a
    traceback: so the message must say what is wrong *and* what to do about it.
    """
