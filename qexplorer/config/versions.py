"""What a result was made with: the interpreter and the library versions that decide it.

Every model card, evaluation report and benchmark report records :func:`library_versions`,
so a figure can be traced to the code that produced it (``constraints.txt`` pins the same
versions for a fresh install).
"""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version

#: The libraries whose versions change what QExplorer computes or how fast.
LIBRARIES = ("tantivy", "torch", "transformers", "tokenizers", "trl", "peft", "accelerate",
             "datasets", "yake", "aiokafka", "faust-streaming", "orjson", "pydantic",
             "pydantic-settings", "confusable-homoglyphs", "rjieba", "pypinyin")


def library_versions(extra: tuple[str, ...] = ()) -> dict[str, str]:
    """``python`` and each library's installed version ("not installed" when absent)."""
    found = {"python": platform.python_version()}
    for name in (*LIBRARIES, *extra):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found
