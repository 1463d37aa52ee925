"""The one way these tests wait: poll a check until it gives an answer,
failing the test (naming what was awaited) when the deadline passes."""

import time


def eventually(what, check, within=60.0, every=0.01):
    """Calls ``check()`` every ``every`` seconds until it returns an answer
    (anything but ``None`` and ``False``), and returns that answer; fails
    the test when ``within`` seconds pass first."""
    deadline = time.monotonic() + within
    while True:
        answer = check()
        if answer is not None and answer is not False:
            return answer
        assert time.monotonic() < deadline, f"not within {within} s: {what}"
        time.sleep(every)
