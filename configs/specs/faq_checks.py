"""Our own check for the Kelvin One FAQ bot (`product_faq.yaml`): the bot may link to our help centre, and to
nothing else. Small models love to invent support pages (www.kelvinone.com/support, hearthly.net/faq, ...)
that do not exist; a made-up link is worse than no link.

    check: {kind: python, function: "faq_checks:only_help_centre_links"}
"""

from __future__ import annotations

import re

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
