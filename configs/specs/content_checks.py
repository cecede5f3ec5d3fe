"""Content checks for the gallery specs whose other rules test only the form of an answer (`bilingual_replies.yaml`,
`style_rules.yaml`; `faq_checks.py` builds on the same word stems; `demo_style.yaml` now uses the built-in
`on_topic` kind, which reads meaning: `demo_on_topic` below is its former check, kept for the comparison of
`scripts/on_topic_agreement.py`). A format rule is passed
by one fixed answer given to every input ("quick answer: yes.", "anything else i can help with?"); these checks
ask that the answer be about the input: it shares at least one content word with the question or message.

Words are compared as rough stems: case-folded, split on anything that is not a letter or digit, stop words and
the spec's own boilerplate dropped (the closing question, the "quick answer:" prefix, the EN:/ES: markers), one
or two common English endings removed (-ing, -ed, -es, -er, -ly, -s, -e; a doubled last consonant undone) and
the first five letters kept: `charged`, `charger` and `charges` are one stem, `shipping` and `ship` another;
a root of 4+ letters inside a longer word also counts (`plant` answers `houseplant`).

    check: {kind: python, function: "content_checks:style_on_topic"}
"""

from __future__ import annotations

import re

STOPWORDS = frozenset("""
a about above after again against all also am an and any anyone anything are aren as at be because been before
being below between both but by can cannot could couldn did didn do does doesn doing don down during each either
else even ever every few for from further get gets getting got had hadn has hasn have haven having he her here
hers herself him himself his how i if in into is isn it its itself just let lets like ll me might mine more most
much must my myself need needs no nor not now of off on once one only or other our ours ourselves out over own
per please re really same shall she should shouldn since so some something still such than thank thanks that the
their theirs them themselves then there these they this those through thus to too under until up upon us use
used using very ve want wants was wasn way we well were weren what whatever when where whether which while who
whom whose why will with won would wouldn yes yet you your yours yourself yourselves hello hi hey sorry dear
okay ok sure
""".split())
"""English function words and the words of politeness that any answer may contain."""

SPANISH_STOPWORDS = frozenset("""
al algo como con de del el ella ellos en era es esa ese eso esta este esto estos estas fue ha hay la las le les
lo los mas más me mi mis muy nos nuestro nuestra o para pero por que qué se si sí sin su sus también te tu tus
un una uno unos unas usted ustedes y ya hola gracias lamentamos sentimos
""".split())
"""Spanish function words: the ES paragraph is compared with an English question only through its content."""

_TOKEN = re.compile(r"[^\W_]+")
_ENDINGS = ("ing", "ed", "es", "er", "ly", "s", "e")


def root(word: str) -> str:
    """The word with up to two common endings removed (keeping at least 3 letters) and a doubled last consonant
    undone; digits are kept whole."""
    if word.isdigit():
        return word
    for _ in range(2):
        for ending in _ENDINGS:
            if word.endswith(ending) and len(word) - len(ending) >= 3 and not (ending == "s" and word.endswith("ss")):
                word = word[: -len(ending)]
                break
        else:
            break
    if len(word) >= 4 and word[-1] == word[-2] and word[-1] not in "aeiouls":
        word = word[:-1]
    return word


def stem(word: str) -> str:
    """A rough stem: the word's root (`root`), first five letters."""
    return root(word)[:5]


def content_roots(text: str, ignore: frozenset[str] | set[str] = frozenset()) -> set[str]:
    """The roots of the text's content words: no stop words, no words in `ignore` (nor their stems), no word
    under 3 letters (numbers of 2 digits or more count)."""
    ignored = {stem(w) for w in ignore}
    roots = set()
    for word in _TOKEN.findall(text.casefold()):
        if word in STOPWORDS or word in SPANISH_STOPWORDS or word in ignore:
            continue
        if len(word) < 3 and not (word.isdigit() and len(word) >= 2):
            continue
        if stem(word) not in ignored:
            roots.add(root(word))
    return roots


def _same(a: str, b: str) -> bool:
    """Two roots name the same thing: one stem, or one root of 4+ letters inside the other (plant, houseplant)."""
    return a[:5] == b[:5] or (len(a) >= 4 and a in b) or (len(b) >= 4 and b in a)


def shares_content(question: str, answer: str, ignore: frozenset[str] | set[str] = frozenset()
                   ) -> tuple[bool, str]:
    """The answer shares at least one content word (by stem) with the question, or the question has none."""
    asked = content_roots(question, ignore)
    if not asked:
        return True, "the question has no content words"
    given = content_roots(answer, ignore)
    shared = sorted(q for q in asked if any(_same(q, a) for a in given))
    if shared:
        return True, f"shares {shared[:5]} with the input"
    return False, f"shares no content word with the input (its words: {sorted(asked)[:8]})"


def _without(text: str, phrases: tuple[str, ...]) -> str:
    for phrase in phrases:
        text = re.sub(re.escape(phrase), " ", text, flags=re.IGNORECASE)
    return text


# --- style_rules.yaml: the closing question is the same in every answer, so it never counts as content
STYLE_BOILERPLATE = ("anything else i can help with?",)
STYLE_IGNORE = frozenset({"help", "anything", "else", "safest", "avoid", "mistakes", "long", "take", "takes",
                          "best", "easiest", "right", "correct", "thing", "things", "make", "made"})


def style_on_topic(input: str, response: str) -> tuple[bool, str]:
    """The home-improvement answer names what the question is about (a shared content word, the closing
    question left out)."""
    return shares_content(input, _without(response, STYLE_BOILERPLATE), STYLE_IGNORE)


# --- demo_style.yaml until the embedding check replaced it (this failed 27 of the 230 hand-labelled answers of
# the test half that are on topic, such as detergent for a wool sweater): "quick answer:" starts every answer; the
# question shapes' own words are not the topic, nor are the generic verbs and adjectives of its tasks: "keep", "fix"
# or "new" name no thing, and the sleep example's "keep a fixed bedtime ..." is not about a houseplant or a flat
# bike tire. A verb that names the activity itself (study, paint, brew, bake, cook, grow, run) still counts: "study
# regularly" answers "study for an exam".
DEMO_BOILERPLATE = ("quick answer:",)
DEMO_IGNORE = frozenset({"quick", "answer", "three", "tips", "tip", "best", "steps", "step", "list", "learn",
                         "mistakes", "mistake", "beginners", "beginner", "make", "makes", "made", "good", "better",
                         "keep", "fix", "take", "start", "save", "plan", "prepare", "organize", "reduce", "choose",
                         "care", "put", "try", "find", "give", "stay", "new", "small", "long", "bad", "alive"})


def demo_on_topic(input: str, response: str) -> tuple[bool, str]:
    """The answer names what the question's task is about: it shares a content word with it (the "quick answer:"
    prefix, the question shape's words such as tips, steps, mistakes, and the generic verbs such as keep and fix
    left out)."""
    return shares_content(input, _without(response, DEMO_BOILERPLATE), DEMO_IGNORE)


# --- bilingual_replies.yaml: the reply addresses the message, and its Spanish half is not the English one again
BILINGUAL_IGNORE = frozenset({"en", "es", "help", "happy", "glad", "customer", "service", "shop", "store",
                              "message", "contact", "reply"})
COPY_SHARE = 0.5
"""An ES paragraph with at least this share of its word pairs also in the EN paragraph is a copy, not a translation
(a translation shares only its names and numbers: "Galaxy Tab S9" in both is 2 pairs of a dozen)."""


def _pairs(text: str) -> set[tuple[str, str]]:
    words = _TOKEN.findall(text.casefold())
    return set(zip(words, words[1:]))


def _paragraph(response: str, marker: str) -> str | None:
    match = re.search(rf"(?m)^\s*{marker}:(.*?)(?=\n\s*\n|\Z)", response, flags=re.DOTALL)
    return match.group(1) if match else None


def bilingual_on_topic(input: str, response: str) -> tuple[bool, str]:
    """The reply shares a content word with the customer's message, and its ES paragraph (when there is one)
    does not repeat most of the EN paragraph's word pairs."""
    ok, reason = shares_content(input, _without(response, ("EN:", "ES:")), BILINGUAL_IGNORE)
    if not ok:
        return False, reason
    english, spanish = _paragraph(response, "EN"), _paragraph(response, "ES")
    if english is not None and spanish is not None:
        es_pairs = _pairs(spanish)
        if es_pairs:
            copied = len(es_pairs & _pairs(english)) / len(es_pairs)
            if copied >= COPY_SHARE:
                return False, f"{copied:.0%} of the ES paragraph's word pairs are in the EN one: not a translation"
    return True, reason
