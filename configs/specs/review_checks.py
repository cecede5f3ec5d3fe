"""Checks for the app-store reply spec (`review_reply.yaml`): every reply starts with the sentiment tag that our
review dashboard files it under, and the tag must be the review's sentiment as the `label` column gives it
(positive, negative or mixed), e.g. "[mixed] Thanks for ...". And the reply responds to what the reviewer said:
it names at least one thing from the review. With three balanced tags, one fixed reply has the right tag for a
third of the reviews; it is about almost none of them.

    check: {kind: python, function: "review_checks:sentiment_tag"}
    check: {kind: python, function: "review_checks:mentions_the_review"}
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


# words that say nothing about a particular review: function words, our own name and boilerplate (the sign-off,
# Settings > Help), and the thanks and regrets that any reply may hold
_STOPWORDS = frozenset("""
a about after again all also am an and any are as at be because been before being both but by can cannot could
did do does doing don each even ever every for from get gets got had has have having he her here him his how i if
in into is isn it its just let me more most much my no nor not now of off on once one only or other our out over
own really same she should so some still such than that the their them then there these they this those through
to too under until up us very was we were what when where which while who why will with would you your yours
acme team app apps budget budgeting setting settings help review reviews feedback thank thanks kind word words
love glad sorry happy hear great good star stars
""".split())
_WORD = re.compile(r"[^\W_]+")


def _stem(word: str) -> str:
    """A rough stem: one common ending removed (keeping 3 letters), then the first five letters, so that `sync`,
    `syncing` and `synced` are one stem, and `charge`, `charged`, `charges` another."""
    for ending in ("ing", "ed", "es", "er", "ly", "s", "e"):
        if word.endswith(ending) and len(word) - len(ending) >= 3:
            word = word[: -len(ending)]
            break
    return word[:5]


def _content_stems(text: str) -> set[str]:
    stops = {_stem(w) for w in _STOPWORDS}
    return {_stem(w) for w in _WORD.findall(text.casefold())
            if w not in _STOPWORDS and (len(w) >= 3 or w.isdigit()) and _stem(w) not in stops}


def mentions_the_review(input: str, response: str) -> tuple[bool, str]:
    """The reply shares at least one content word (by rough stem) with the review: a feature, a problem, a
    detail the reviewer wrote; a review with no content word at all is passed."""
    wrote = _content_stems(input)
    if not wrote:
        return True, "the review has no content words"
    shared = sorted(wrote & _content_stems(_TAG.sub("", response, count=1)))
    if shared:
        return True, f"mentions {shared[:5]} from the review"
    return False, f"mentions nothing from the review (its words: {sorted(wrote)[:8]})"
