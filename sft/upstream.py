"""Is the library code a fast path replaces still the code it was written for? Each CPU fast path (sft/lm_head.py,
sft/fused_lora.py, sft/padding_mask.py) checks the upstream function it replaces or hooks before it goes on.

Here rather than in sft/fast_paths.py, which installs the paths: the paths import these checks, and fast_paths
imports the paths, so the imports run one way only.
"""

from __future__ import annotations

import inspect
import warnings


def check_upstream(path: str, what: str, function, expected: tuple[str, ...], subset: bool = False) -> bool:
    """True when `function` (named `what`: the upstream code fast path `path` replaces or hooks) takes the
    parameters `expected`, by name and in order, or with `subset` at least those names. Otherwise one
    RuntimeWarning says the path is off and why, and False tells the caller to leave the library's code alone."""
    try:
        found = tuple(inspect.signature(function).parameters)
    except (TypeError, ValueError):  # gone (None) or not introspectable
        found = None
    if found is not None and (set(expected) <= set(found) if subset else found == expected):
        return True
    why = f"{what} takes {found}, not {expected}" if found is not None else f"{what} is missing"
    fall_back(path, why)
    return False


def fall_back(path: str, why: str) -> None:
    """Warn that fast path `path` stays off because its upstream changed (Python shows a warning once per
    process and place)."""
    warnings.warn(f"CPU fast path {path} is off: {why} (upstream changed since constraints.txt); training goes on "
                  f"with the library's own code, slower on a CPU; revisit sft/{path}.py", RuntimeWarning,
                  stacklevel=3)
