"""Hypothesis profiles: ci (derandomized, no database), dev, thorough.

Chosen by hypothesis' own --hypothesis-profile option (`python -m certify
--profile` passes it on) or the CERTIFY_PROFILE environment variable; `ci` is the
default so that the same commit gives the same report on the same backend.
Hypothesis is imported only when a profile is loaded, so the CLI can validate a
profile name before pytest starts (and pytest can still rewrite hypothesis' asserts).
"""

from __future__ import annotations

import os

PROFILES = ("ci", "dev", "thorough")
DEFAULT_PROFILE = "ci"


def active_profile_name(explicit: str | None = None) -> str:
    name = explicit or os.environ.get("CERTIFY_PROFILE") or DEFAULT_PROFILE
    if name not in PROFILES:
        raise ValueError(f"unknown hypothesis profile {name!r}; choose one of {', '.join(PROFILES)}")
    return name


def freeze_local_constants() -> None:
    """Draw from hypothesis' built-in constants only, never from literals harvested from local code.

    Since 6.131 hypothesis mixes literals from every *local* module then in sys.modules into
    generation.  Which modules a process has imported depends on what it ran before (the xdist
    schedule, the durations order, pytester runs), so a derandomized run of one commit drew
    different examples in different workers; this keeps the ci profile a function of the commit
    (tests/test_profiles.py runs generation with and without an extra local module)."""
    try:
        from hypothesis.internal.conjecture import providers
    except ImportError:  # pragma: no cover - a hypothesis without the module has no harvest either
        return
    if hasattr(providers, "_get_local_constants"):
        empty = providers.Constants()
        providers._get_local_constants = lambda: empty
        providers.CONSTANTS_CACHE.cache.clear()


def register() -> None:
    from hypothesis import HealthCheck, settings

    freeze_local_constants()

    # A recorder fixture is shared by the examples of one test on purpose; certificates
    # are slow by nature (arb references), so the too_slow/data_too_large checks would
    # only reward smaller problems.
    suppress = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large]
    settings.register_profile("ci", derandomize=True, database=None, deadline=None, max_examples=100,
                              print_blob=True, suppress_health_check=suppress)
    settings.register_profile("dev", deadline=None, max_examples=60, print_blob=True,
                              suppress_health_check=suppress)
    settings.register_profile("thorough", deadline=None, max_examples=2000, database=None,
                              print_blob=True, suppress_health_check=suppress)


def load(explicit: str | None = None) -> str:
    from hypothesis import settings

    name = active_profile_name(explicit)
    register()
    settings.load_profile(name)
    return name
