"""Text hygiene shared by indexing, queries and prompts: what is invisible in a text.

Pure functions only.
"""

from __future__ import annotations

import re
import unicodedata

# Characters that are never useful to a model or a search engine and can hide text:
# zero-width spaces and joiners (ZWJ is handled separately), bidi controls, BOM, soft hyphen.
_ZWJ = "\u200d"
_ZWJ_IN_WORD = re.compile(r"(?<=\w)\u200d+|\u200d+(?=\w)")
_WS_CONTROLS = frozenset("\t\n\r\x0b\x0c\x1c\x1d\x1e\x1f\x85\u2028\u2029")

#: Han (CJK ideographs): unified, extensions A-H, compatibility, iteration/zero marks.
HAN = (
    "\u3005\u3007\u3021-\u3029\u3038-\u303b"
    "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
    "\U00020000-\U0003134f"
)


def strip_invisible(text: str) -> str:
    """Remove control, format (zero-width, bidi), surrogate and replacement (U+FFFD, left
    by broken decoding) characters from ``text``.

    Whitespace controls (tab, newlines, line/paragraph separators) become spaces. A
    zero-width joiner survives only between two non-word characters (inside an emoji
    sequence such as a family or a flag); between letters it is a disguise and is removed.
    Everything else is kept as is: odd spellings, emoji, Chinese, full-width forms. Nothing
    is NFKC-normalised. Whitespace is not collapsed here.
    """
    if not text:
        return ""
    # printable text holds no control, format, surrogate or separator character (bar the
    # space): only U+FFFD could need removing; checked in C, far faster than the loop
    if text.isprintable() and "\ufffd" not in text:
        return text
    out: list[str] = []
    for ch in text:
        if ch in _WS_CONTROLS:
            out.append(" ")
            continue
        cat = unicodedata.category(ch)
        if cat in ("Cc", "Cs") or (cat == "Cf" and ch != _ZWJ) or ch == "\ufffd":
            continue
        out.append(ch)
    cleaned = "".join(out)
    if _ZWJ in cleaned:
        cleaned = _ZWJ_IN_WORD.sub("", cleaned)
    return cleaned
