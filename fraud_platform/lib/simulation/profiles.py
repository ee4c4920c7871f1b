"""Account profiles of the simulated users, for the PostgreSQL profiles source.

Deterministic per seed: the users come from ``build_world`` (same seed, same people) and the
profile attributes from their own named random stream, so adding profiles changes no event.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from fraud_platform.lib.ingestion.profiles_source import Profile
from fraud_platform.lib.simulation.common import stream
from fraud_platform.lib.simulation.world import User, build_world

MAX_ACCOUNT_AGE_DAYS = 6 * 365
_KYC_WEIGHTS = (0.04, 0.26, 0.52, 0.18)  # levels 0..3 of an ordinary personal account


def _profile(user: User, seed: int, start: datetime) -> Profile:
    rng = stream(seed, "profiles", user.user_id)
    # Account age: many young accounts, a long tail of old ones; always before the simulation.
    age_days = min(MAX_ACCOUNT_AGE_DAYS, 1 + rng.expovariate(1 / 500))
    signup_time = (start - timedelta(days=age_days)).replace(microsecond=0)
    # Heavy spenders are more often business or premium accounts, and better verified.
    spend = math.log(max(user.amount_scale, 1.0) * max(user.activity, 0.1))
    draw = rng.random()
    if draw < 0.02 * max(spend, 0.0):
        account_type = "business"
    elif draw < 0.02 * max(spend, 0.0) + 0.08:
        account_type = "premium"
    else:
        account_type = "personal"
    kyc = rng.choices(range(4), weights=_KYC_WEIGHTS)[0]
    if account_type != "personal" or user.crypto_user:
        kyc = max(kyc, 2)  # business, premium and crypto withdrawals require full verification
    if age_days < 14:
        kyc = min(kyc, 1)  # very young accounts have not finished verification
    return Profile(
        user_id=user.user_id,
        signup_time=signup_time,
        kyc_level=kyc,
        home_country=user.home.code,
        account_type=account_type,
    )


def simulated_profiles(
    seed: int, users: int, start: datetime, merchants: int = 400
) -> list[Profile]:
    """One profile per simulated user of ``SimulationConfig(seed, users, merchants, start)``."""
    if start.tzinfo is None:
        raise ValueError("start must be timezone-aware (UTC)")
    world = build_world(seed, users, merchants)
    return [_profile(user, seed, start) for user in world.users]
