"""Progress bars that stay out of log files."""
from __future__ import annotations

import sys


def progress_bar(items, desc: str, unit: str, enabled: bool = True):
    """A tqdm bar over ``items`` on a terminal; none where stderr is a file or a pipe (a log), where
    every redraw of the bar would be kept and the bar printed over and over."""
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit=unit, disable=not (enabled and sys.stderr.isatty()))
