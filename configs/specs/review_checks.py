"""Check for the app-store reply spec (`review_reply.yaml`): every reply starts with the sentiment tag that our
review dashboard files it under, and the tag must be the review's sentiment as the `label` column gives it
(positive, negative or mixed), e.g. "[mixed] Thanks for ...".

    check: {kind: python, function: "review_checks:sentiment_tag"}
"""

from __future__ import annotations

import re

TAGS = ("positive", "negative", "mixed")
_TAG = re.compile(r"\s*\[([^\]\n]{1,20})\]")


def sentiment_tag(input: str, response: str, label: str | None) -> tuple[bool, str]:
    """The reply opens with `[<label>]`, lowercase, before any other text."""
    if label not in TAGS:
        return False, f"label {label!r} is not one of {list(TAGS)}"
    m = _TAG.match(response)
    if m is None:
        return False, f"does not start with a tag like [{label}]"
    if m.group(1) != label:
        return False, f"tag [{m.group(1)}], expected [{label}]"
    return True, f"[{label}]"
