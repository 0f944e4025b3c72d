"""Name patterns users write on the command line: exact names, globs or regular expressions."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable


def matches(name: str, patterns: str | Iterable[str]) -> bool:
    """True if ``name`` equals, glob-matches or fully regex-matches any of ``patterns``.

    Args:
        name: an initializer, layer or node name.
        patterns: one pattern or several. A pattern that is not a valid regular expression
            is still tried as a name and a glob.

    Returns:
        Whether any pattern matches.
    """
    for pattern in [patterns] if isinstance(patterns, str) else patterns:
        if name == pattern or fnmatch.fnmatchcase(name, pattern):
            return True
        try:
            if re.fullmatch(pattern, name):
                return True
        except re.error:
            continue
    return False
