"""What changes from the drift day on (``SimulationConfig.drift_at``), in one place.

Ordinary behaviour: amounts grow 30%, ecommerce and p2p take a larger share of payments, and
people travel four times as often (more payments, logins and cash abroad). Fraud: the mix moves
towards account takeover and push-payment scams and new rings from new countries appear
(``scenarios.DRIFT_FACTOR``, ``DRIFT_NEW_RING_SHARE``), and a fraud pattern appears that
did not exist before: ``sim_swap_takeover``.

The simulator asks this module per day (``channel_factor``, ``amount_factor``,
``travel_factor``; ``simulate_drift_fraud_day`` after the day's regular incidents), so the days
before the switch are identical with and without drift.
"""

from __future__ import annotations

from datetime import timedelta

from fraud_platform.lib.simulation.common import (
    Day,
    Recorder,
    chargeback_delay_days,
    ip_in,
    poisson,
)
from fraud_platform.lib.simulation.scenarios import Incident
from fraud_platform.lib.simulation.world import P2P, World

DRIFT_CHANNEL = {"ecommerce": 1.6, "p2p": 1.8}
DRIFT_AMOUNT = 1.3
DRIFT_TRAVEL = 4.0
# New incidents per day for 2000 users at rate 1 (the other types total ~10.5 per day).
SIM_SWAP_PER_DAY = 3.0


def channel_factor(day: Day, channel: str) -> float:
    return DRIFT_CHANNEL.get(channel, 1.0) if day.drifted else 1.0


def amount_factor(day: Day) -> float:
    return DRIFT_AMOUNT if day.drifted else 1.0


def travel_factor(day: Day) -> float:
    return DRIFT_TRAVEL if day.drifted else 1.0


def sim_swap_takeover(inc: Incident) -> None:
    """A takeover through a ported phone number: no failed logins, no password change. A login
    at night from a new device on an address in the victim's own country, then within 1-3
    hours 3-8 p2p transfers of 150-600 each to 2-3 new mules of the same ring, minutes apart.
    Labelled ``account_takeover`` (the contract's closed set of fraud types)."""
    rng, user = inc.rng, inc.victim()
    ring = rng.choice(inc.world.drift_rings)
    device, delay = rng.choice(ring.devices), chargeback_delay_days(rng)
    ip = ip_in(rng, user.home)
    time = inc.day.start + timedelta(hours=(rng.uniform(0, 5) - user.home.tz) % 24)
    inc.account(time, user, "login", device, ip, user.home)
    inc.account(time + timedelta(minutes=rng.uniform(1, 5)), user, "device_added", device, ip,
                user.home)  # fmt: skip
    time += timedelta(minutes=rng.uniform(60, 180))
    mules = rng.sample(ring.mules, min(len(ring.mules), rng.randint(2, 3)))
    for _ in range(rng.randint(3, 8)):
        amount = rng.uniform(150, 600) * user.fx
        inc.pay(time, user, user.cards[0], P2P, amount, "p2p", device, ip, user.home, delay,
                counterparty=rng.choice(mules))  # fmt: skip
        time += timedelta(minutes=rng.uniform(2, 25))


def simulate_drift_fraud_day(world: World, rec: Recorder, day: Day, scale: float) -> None:
    """The incidents of the patterns that exist only after the switch (``day`` carries the
    day's own ``drift_fraud`` stream)."""
    if not day.drifted:
        return
    for _ in range(poisson(day.rng, SIM_SWAP_PER_DAY * scale)):
        sim_swap_takeover(Incident(world, rec, day, "account_takeover"))
