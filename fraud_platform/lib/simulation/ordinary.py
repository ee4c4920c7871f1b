"""Ordinary (legitimate) behaviour of account holders, one day at a time.

Per user: a typical daily volume, a lognormal spending scale, favourite shops, 1-2 cards and
1-2 devices, a home country; a daily and weekly cycle; logins (mostly from own devices at
home), the odd typo'd password, rare legitimate security changes and new phones, and trips
abroad. From the drift day on, ``drift`` scales amounts, channel shares and travel.
"""

from __future__ import annotations

import math
import random
from datetime import datetime, timedelta

import numpy as np

from fraud_platform.lib.simulation import drift
from fraud_platform.lib.simulation.common import Day, Recorder, choose, ip_in, stream
from fraud_platform.lib.simulation.world import (
    ATMS,
    COUNTRIES,
    P2P,
    PAYOUT_BANK,
    PAYOUT_CRYPTO,
    TOPUP,
    TRAVEL_WEIGHTS,
    Country,
    Merchant,
    User,
    World,
)

WEEKDAY_VOLUME = (0.95, 0.95, 0.97, 1.0, 1.12, 1.15, 0.86)  # Monday .. Sunday
WEEKEND_CHANNEL = {"card_present": 1.2, "ecommerce": 0.85, "withdrawal": 1.2}
APP_CHANNELS = frozenset({"ecommerce", "p2p", "deposit"})
ATM_NOTES = (20, 40, 50, 50, 100, 100, 100, 150, 200, 200, 300, 400)

# Chances per user and day of a legitimate security event.
LEGIT_DEVICE_ADDED = 0.0012
LEGIT_PASSWORD_CHANGE = 0.0008
LEGIT_ADDRESS_ADDED = 0.0006
LEGIT_TWOFA_DISABLED = 0.0002


def simulate_ordinary_day(world: World, rec: Recorder, seed: int, day: Day, rate: float) -> None:
    """Every user's legitimate activity on ``day`` (uses the ``ordinary`` stream of the day)."""
    rng = day.rng
    volume = WEEKDAY_VOLUME[day.start.weekday()] * rate
    means = np.array([u.activity for u in world.users]) * volume
    counts = np.random.default_rng(stream(seed, "volume", day.index).getrandbits(64)).poisson(means)
    for user, n in zip(world.users, counts.tolist(), strict=True):
        _travel(rng, user, day.index, drift.travel_factor(day))
        _security_events(world, rec, day, user)
        cum = _channel_cum(user, day)
        for _ in range(n):
            channel = choose(rng, _CHANNELS, cum)
            _transaction(world, rec, day, user, channel)
        for _ in range(_extra_logins(rng)):
            _login(rec, day, user, day.time_at(user.home.tz), user.devices[-1])


_CHANNELS = ("card_present", "ecommerce", "p2p", "withdrawal", "deposit")


def _channel_cum(user: User, day: Day) -> list[float]:
    total, cum = 0.0, []
    for channel in _CHANNELS:
        weight = user.channel_weights[channel]
        if day.weekend:
            weight *= WEEKEND_CHANNEL.get(channel, 1.0)
        weight *= drift.channel_factor(day, channel)
        total += weight
        cum.append(total)
    return cum


def _extra_logins(rng: random.Random) -> int:
    return (rng.random() < 0.55) + (rng.random() < 0.2)


def _travel(rng: random.Random, user: User, day: int, factor: float = 1.0) -> None:
    """Trips: a few users leave for 2-9 days and pay, log in and withdraw cash abroad."""
    if user.trip is not None and day > user.trip_end:
        user.trip = None
    if user.trip is None and rng.random() < user.travel_p * factor:
        choices = {c: w for c, w in TRAVEL_WEIGHTS.items() if c != user.home.code}
        user.trip = COUNTRIES[rng.choices(list(choices), weights=list(choices.values()))[0]]
        user.trip_end = day + rng.randint(2, 9)
        user.trip_ip = ip_in(rng, user.trip)


def _where(rng: random.Random, user: User) -> tuple[Country, str]:
    """Country and address of a session: home (home wifi or mobile), or the trip's hotel."""
    if user.trip is not None:
        if rng.random() < 0.6:
            return user.trip, user.trip_ip
        return user.trip, ip_in(rng, user.trip)
    if rng.random() < 0.7:
        return user.home, rng.choice(user.home_ips)
    return user.home, ip_in(rng, user.home)


def _login(rec: Recorder, day: Day, user: User, time: datetime, device: str) -> None:
    """A login, preceded now and then by a mistyped password or two."""
    rng = day.rng
    country, ip = _where(rng, user)
    if rng.random() < 0.03:
        for k in range(rng.randint(1, 2), 0, -1):
            slip = day.before(time, k * rng.uniform(5, 40))
            rec.account_event(slip, user, "login_failed", device, ip, country)
    rec.account_event(time, user, "login", device, ip, country)


def _security_events(world: World, rec: Recorder, day: Day, user: User) -> None:
    """Rare legitimate changes: a new phone, a new password, a new payout address, 2FA off."""
    rng = day.rng
    if rng.random() < LEGIT_DEVICE_ADDED:
        time = day.time_at(user.home.tz)
        phone = f"dev_{rng.getrandbits(40):010x}"
        ip = rng.choice(user.home_ips)
        rec.account_event(time, user, "login", phone, ip, user.home)
        rec.account_event(time + timedelta(seconds=rng.uniform(20, 300)), user, "device_added",
                          phone, ip, user.home)  # fmt: skip
        user.devices[0] = phone
    if rng.random() < LEGIT_PASSWORD_CHANGE:
        time = day.time_at(user.home.tz)
        rec.account_event(time, user, "password_change", user.devices[0],
                          rng.choice(user.home_ips), user.home)  # fmt: skip
    if rng.random() < LEGIT_TWOFA_DISABLED:
        time = day.time_at(user.home.tz)
        rec.account_event(time, user, "twofa_disabled", user.devices[-1],
                          rng.choice(user.home_ips), user.home)  # fmt: skip
    if rng.random() < LEGIT_ADDRESS_ADDED * (3 if user.crypto_user else 1):
        _new_payout_address(rec, day, user)


def _new_payout_address(rec: Recorder, day: Day, user: User) -> None:
    """A legitimate new withdrawal address, often used for a payout within two days."""
    rng = day.rng
    time = day.time_at(user.home.tz)
    ip = rng.choice(user.home_ips)
    rec.account_event(time, user, "withdrawal_address_added", user.devices[-1], ip, user.home)
    if rng.random() < 0.5:
        target = PAYOUT_CRYPTO if user.crypto_user else PAYOUT_BANK
        later = time + timedelta(hours=rng.uniform(0.2, 48))
        amount = 400 * rng.lognormvariate(0.0, 0.7) * user.fx
        rec.transaction(later, user, user.cards[0], target, amount, "withdrawal",
                        user.devices[-1], ip, user.home)  # fmt: skip


def _transaction(world: World, rec: Recorder, day: Day, user: User, channel: str) -> None:
    """One ordinary transaction of ``channel`` (with a login before app-initiated ones)."""
    rng = day.rng
    time = day.time_at(user.home.tz)
    country, ip = _where(rng, user)
    card, device = user.cards[0], user.devices[0]
    counterparty = None
    if channel == "card_present":
        merchant = _shop(world, rng, user)
        country = merchant.country if user.trip is None else user.trip
        if len(user.cards) > 1 and rng.random() < 0.2:
            card = user.cards[1]
        amount = user.amount_scale * merchant.scale * rng.lognormvariate(0.0, 0.6)
        rec.remember_card(day.index, merchant.merchant_id, user.index, card)
    elif channel == "ecommerce":
        merchant = user.favourite_ec.pick(rng) if rng.random() < 0.6 and user.favourite_ec \
            else world.ecommerce.pick(rng)  # fmt: skip
        card = user.cards[-1] if rng.random() < 0.5 else card
        device = user.devices[-1] if rng.random() < 0.4 else device
        amount = user.amount_scale * merchant.scale * rng.lognormvariate(0.0, 0.6)
        rec.remember_card(day.index, merchant.merchant_id, user.index, card)
    elif channel == "p2p":
        merchant = P2P
        counterparty = _counterparty(world, rng, user)
        amount = 40 * rng.lognormvariate(0.0, 0.8)
    elif channel == "withdrawal":
        merchant, amount = _withdrawal(rng, user, country)
    else:
        merchant = TOPUP
        amount = 150 * rng.lognormvariate(0.0, 0.8)
    if merchant.category != "atm":  # cash comes in round notes of the billing currency
        amount *= user.fx * drift.amount_factor(day)
    if channel in APP_CHANNELS and rng.random() < 0.5:
        _login(rec, day, user, day.before(time, rng.uniform(10, 600)), device)
    rec.transaction(time, user, card, merchant, amount, channel, device, ip, country,
                    counterparty=counterparty)  # fmt: skip


def _shop(world: World, rng: random.Random, user: User) -> Merchant:
    """A shop around the user: a favourite one at home, any local one, or one on the trip."""
    if user.trip is not None:
        pool = world.cp_by_country.get(user.trip.code)
        if pool:
            return pool.pick(rng)
    if user.favourite_cp and rng.random() < 0.7:
        return user.favourite_cp.pick(rng)
    return (world.cp_by_country.get(user.home.code) or world.cp_by_country["*"]).pick(rng)


def _counterparty(world: World, rng: random.Random, user: User) -> str:
    """Mostly a friend; sometimes somebody new (splitting a bill, buying second hand)."""
    if user.friends and rng.random() < 0.85:
        return rng.choice(user.friends)
    while (other := rng.choice(world.users)) is user:
        pass
    return other.user_id


def _withdrawal(rng: random.Random, user: User, country: Country) -> tuple[Merchant, float]:
    """Cash at an ATM where the user is (round notes), or a payout to a bank or crypto wallet."""
    if user.crypto_user and rng.random() < 0.4:
        return PAYOUT_CRYPTO, 200 * rng.lognormvariate(0.0, 1.0)
    if rng.random() < 0.8:
        notes = rng.choice(ATM_NOTES) * math.ceil(user.amount_scale / 40)
        return ATMS[country.code], float(notes)
    return PAYOUT_BANK, 300 * rng.lognormvariate(0.0, 0.7)
