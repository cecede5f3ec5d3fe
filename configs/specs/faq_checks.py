"""Our own checks for the Kelvin One FAQ bot (`product_faq.yaml`). The bot may link to our help centre, and to
nothing else: small models love to invent support pages (www.kelvinone.com/support, hearthly.net/faq, ...)
that do not exist; a made-up link is worse than no link. And the answer must be about the question: one that
touches a fact of the system prompt (wifi, power, warranty, ...) states it, any other shares a word with it.

    check: {kind: python, function: "faq_checks:only_help_centre_links"}
    check: {kind: python, function: "faq_checks:uses_a_fitting_fact"}
"""

from __future__ import annotations

import re

from content_checks import shares_content  # content_checks.py sits beside this file, like this one

ALLOWED = "help.hearthly.com"

# http(s) links, www. hosts, and bare host names with a common TLD (optionally followed by a path)
_LINK = re.compile(
    r"(?:https?://|www\.)[^\s<>()\"']+"
    r"|\b(?:[a-z0-9-]+\.)+(?:com|net|org|io|co|app|help|support|info|us|uk|de)\b(?:/[^\s<>()\"']*)?",
    re.IGNORECASE,
)


def _host(link: str) -> str:
    host = re.sub(r"^(?:https?://)", "", link, flags=re.IGNORECASE)
    return host.split("/")[0].lower().rstrip(".,;:!?")


def only_help_centre_links(input: str, response: str) -> tuple[bool, str]:
    """Every link or web address in the answer points at help.hearthly.com (any page of it); no link is fine."""
    links = [m.group(0).rstrip(".,;:!?") for m in _LINK.finditer(response)]
    others = [link for link in links if _host(link) != ALLOWED]
    if others:
        return False, f"links outside {ALLOWED}: {others[:3]}"
    return True, f"{len(links)} help-centre links" if links else "no links"


# --- the answer uses the fact that fits the question ------------------------------------------------------------
# A fixed answer ("Need anything else? Reply here.") passes every format rule above. This check reads the content:
# a question about one of the facts in the system prompt must get that fact; any other question must get an
# answer that shares a content word with it (content_checks.py: stems, stop words and the sign-off left out).

FACTS = {
    # topic: (a question about it matches this, ... and not this, an answer that states the fact matches this)
    "power": (r"\bc[- ]?wire|common wire|neutral wire|power adapter|\badapters?\b|usb charger", None,
              r"\bc[- ]?wire|common wire|adapter"),
    "wifi": (r"wi-?fi|\bghz\b|router|\bwpa\d?\b|\bnetwork\b", None, r"2[.,]4|\bghz\b"),
    "voice assistants": (r"alexa|google|apple|homekit|\bsiri\b|smartthings|voice assistant|smart home", None,
                         r"alexa|google|apple|homekit|\bsiri\b"),
    "fees": (r"\bfees?\b|subscription|monthly|pay for|\bpremium\b", None,
             r"subscription|(?:is|are|for|it's) free\b|free of charge|no (?:extra |monthly |ongoing |hidden )?"
             r"(?:fees?|costs?|charges?)"),
    "warranty": (r"warrant|guarantee|\bcovered\b", None, r"\b(?:2|two)[- ]years?\b|warranty"),
    "factory reset": (r"factory|\breset\b|start over|\bwipe\b", r"password|link|filter",
                      r"\b(?:10|ten) seconds\b|hold(?:ing)? (?:down )?the dial|dial (?:pressed |held )?down"),
    "help centre": (r"\bmanual\b|\bguide\b|\bvideo\b|diagram|instructions|documentation|step[- ]by[- ]step", None,
                    r"help\.hearthly\.com"),
}
SIGN_OFF = "Need anything else? Reply here."
FAQ_IGNORE = frozenset({"kelvin", "hearthly", "thermostat", "thermostats", "work", "works", "help", "reply",
                        "anything", "else", "here", "make", "get"})


def topics_of(question: str) -> list[str]:
    """The facts of the system prompt that the question asks about (none for most questions)."""
    q = question.casefold()
    return [topic for topic, (asks, unless, _) in FACTS.items()
            if re.search(asks, q) and not (unless and re.search(unless, q))]


MAX_OTHER_FACTS = 2
"""An answer stating more facts than this that the question did not ask about recites the fact sheet: one fixed
answer listing every fact would otherwise pass every question about one of them."""


def uses_a_fitting_fact(input: str, response: str) -> tuple[bool, str]:
    """A question about power, wifi, voice assistants, fees, the warranty, a factory reset or the manuals gets
    the fact from the system prompt for (one of) its topics; any other question gets an answer that shares a
    content word with it (the sign-off and the product's name left out). Neither recites the other facts."""
    answer = response.replace(SIGN_OFF, " ")
    a = answer.casefold()
    topics = topics_of(input)
    stated = [t for t, (_, _, fact) in FACTS.items() if re.search(fact, a)]
    others = [t for t in stated if t not in topics and t != "help centre"]  # a help-centre link is always welcome
    if len(others) > MAX_OTHER_FACTS:
        return False, f"recites facts the question did not ask about: {', '.join(others)}"
    if topics:
        used = [t for t in topics if t in stated]
        if used:
            return True, f"states the {used[0]} fact"
        return False, f"a question about {' / '.join(topics)} without that fact"
    return shares_content(input, answer, FAQ_IGNORE)
