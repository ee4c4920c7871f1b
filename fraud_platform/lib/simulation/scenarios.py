"""The five fraud scenarios and their daily schedule.

Each scenario function generates one incident from the random stream of its day and type;
its docstring states the signature a model can learn. Incidents are scheduled per day as a
Poisson number per type; after the drift day the mix moves towards account takeover and
authorised-push-payment scams, and new rings from new countries appear.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from fraud_platform.lib.simulation.common import (
    Day,
    Recorder,
    chargeback_delay_days,
    ip_in,
    poisson,
    token,
)
from fraud_platform.lib.simulation.world import (
    ATMS,
    P2P,
    PAYOUT_BANK,
    PAYOUT_CRYPTO,
    RISKY_CP,
    Country,
    Merchant,
    Ring,
    User,
    World,
)

# Incidents per day for 2000 users at rate 1, and how the drift changes them.
INCIDENTS_PER_DAY = {
    "card_testing": 1.1,
    "stolen_card": 4.0,
    "account_takeover": 3.0,
    "p2p_scam": 1.6,
    "compromised_merchant": 0.8,
}
DRIFT_FACTOR = {
    "card_testing": 0.3,
    "stolen_card": 1.0,
    "account_takeover": 2.5,
    "p2p_scam": 3.0,
    "compromised_merchant": 1.0,
}
DRIFT_NEW_RING_SHARE = 0.6
# compromised_merchant: a breach ended 1-5 days ago and lasted 2-5 days.
BREACH_ENDED_DAYS_AGO = (1, 5)
BREACH_DAYS = (2, 5)
BREACH_LOOKBACK_DAYS = BREACH_ENDED_DAYS_AGO[1] + BREACH_DAYS[1] - 1


@dataclass
class Incident:
    """What a scenario works with: the world, where to record, its day and random stream."""

    world: World
    rec: Recorder
    day: Day
    fraud_type: str

    @property
    def rng(self) -> random.Random:
        return self.day.rng

    def victim(self) -> User:
        return self.rng.choice(self.world.users)

    def ring(self) -> Ring:
        """A fraud ring; after the drift mostly one of the new rings."""
        rng = self.rng
        if self.day.drifted and rng.random() < DRIFT_NEW_RING_SHARE:
            return rng.choice(self.world.drift_rings)
        return rng.choice(self.world.rings)

    def hideout(self, ring: Ring, victim: User) -> tuple[Country, str]:
        """Where the fraudster appears to be: the ring's country, or a proxy in the victim's."""
        rng = self.rng
        if rng.random() < ring.proxy_share:
            return victim.home, ip_in(rng, victim.home)
        return ring.country, rng.choice(ring.ips)

    def pay(self, time: datetime, user: User, card: str, merchant: Merchant, amount: float,
            channel: str, device: str, ip: str, country: Country, label_after: float,
            counterparty: str | None = None) -> None:  # fmt: skip
        self.rec.transaction(time, user, card, merchant, amount, channel, device, ip, country,
                             counterparty=counterparty, fraud=self.fraud_type,
                             label_after=label_after)  # fmt: skip

    def account(self, time: datetime, user: User, event_type: str, device: str, ip: str,
                country: Country) -> None:  # fmt: skip
        self.rec.account_event(time, user, event_type, device, ip, country)


def _minutes(rng: random.Random, low: float, high: float) -> timedelta:
    return timedelta(minutes=rng.uniform(low, high))


def card_testing(inc: Incident) -> None:
    """One card, 8-35 ecommerce payments of 0.50-3.00 a few seconds apart at 1-3 low-risk
    digital merchants, from one fraud-ring device; half the time a large electronics or
    gift-card payment follows within 90 minutes."""
    rng, user, ring = inc.rng, inc.victim(), inc.ring()
    card, device = rng.choice(user.cards), rng.choice(ring.devices)
    country, ip = inc.hideout(ring, user)
    shops = [inc.world.testing_ec.pick(rng) for _ in range(rng.randint(1, 3))]
    time, delay = inc.day.time_at(ring.country.tz), chargeback_delay_days(rng)
    for _ in range(rng.randint(8, 35)):
        time += timedelta(seconds=rng.uniform(2, 45))
        amount = 1.0 if rng.random() < 0.3 else rng.uniform(0.5, 3.0)
        inc.pay(time, user, card, rng.choice(shops), amount, "ecommerce", device, ip, country,
                delay)  # fmt: skip
    if rng.random() < 0.5:
        shop = inc.world.risky_ec.pick(rng)
        amount = 70 * shop.scale * rng.lognormvariate(0.3, 0.5) * user.fx
        inc.pay(time + _minutes(rng, 3, 90), user, card, shop, amount, "ecommerce", device, ip,
                country, delay)  # fmt: skip


def account_takeover(inc: Incident) -> None:
    """Credential stuffing (a burst of failed logins) or phishing, then a login from a new
    device, mostly abroad; device_added, password_change / twofa_disabled and often a new
    withdrawal address within minutes; then 1-4 large withdrawals (mostly to crypto) within
    hours, sometimes a p2p transfer to a mule, all from the fraudster's device and address."""
    rng, user, ring = inc.rng, inc.victim(), inc.ring()
    device = rng.choice(ring.devices)
    country, ip = inc.hideout(ring, user)
    time, delay = inc.day.time_at(ring.country.tz), chargeback_delay_days(rng)
    if rng.random() < 0.6:
        for _ in range(rng.randint(3, 12)):
            inc.account(time, user, "login_failed", device, ip, country)
            time += timedelta(seconds=rng.uniform(3, 60))
    inc.account(time, user, "login", device, ip, country)
    changes = ["device_added"] if rng.random() < 0.8 else []
    changes += [c for c, p in (("password_change", 0.6), ("twofa_disabled", 0.4),
                               ("withdrawal_address_added", 0.7)) if rng.random() < p]  # fmt: skip
    if len(changes) < 2:
        changes.append(rng.choice(("password_change", "withdrawal_address_added")))
    for change in changes:
        time += _minutes(rng, 0.5, 15)
        inc.account(time, user, change, device, ip, country)
    time += _minutes(rng, 5, 360)
    for _ in range(rng.randint(1, 4)):
        target = PAYOUT_CRYPTO if rng.random() < 0.65 else PAYOUT_BANK
        amount = 900 * rng.lognormvariate(0.0, 0.6) * user.fx
        inc.pay(time, user, user.cards[0], target, amount, "withdrawal", device, ip, country, delay)
        time += _minutes(rng, 3, 60)
    if rng.random() < 0.25:
        amount = 500 * rng.lognormvariate(0.0, 0.5) * user.fx
        inc.pay(time, user, user.cards[0], P2P, amount, "p2p", device, ip, country, delay,
                counterparty=rng.choice(ring.mules))  # fmt: skip


def stolen_card(inc: Incident) -> None:
    """A card used by somebody else for 2-7 purchases within hours: large amounts in risky
    categories (electronics, jewelry, gift cards, travel) from an unknown device, mostly
    online via the ring's address; a quarter are cloned cards used in shops and ATMs of a
    foreign country."""
    rng, user, ring = inc.rng, inc.victim(), inc.ring()
    card, delay = rng.choice(user.cards), chargeback_delay_days(rng)
    device = token(rng, "dev_") if rng.random() < 0.5 else rng.choice(ring.devices)
    time = inc.day.time_at(ring.country.tz)
    cloned = rng.random() < 0.25
    country, ip = (ring.country, ip_in(rng, ring.country)) if cloned else inc.hideout(ring, user)
    local = inc.world.cp_by_country.get(ring.country.code)
    risky_shops = [m for m in local.items if m.category in RISKY_CP] if local else []
    for _ in range(rng.randint(2, 7)):
        if not cloned:
            shop, channel = inc.world.risky_ec.pick(rng), "ecommerce"
        elif risky_shops and rng.random() < 0.7:
            shop, channel = rng.choice(risky_shops), "card_present"
        else:
            shop, channel = ATMS[ring.country.code], "withdrawal"
        base = 300.0 if shop.category == "atm" else 75 * shop.scale
        amount = base * rng.lognormvariate(0.3, 0.5) * user.fx
        inc.pay(time, user, card, shop, amount, channel, device, ip, country, delay)
        time += _minutes(rng, 4, 240)


def p2p_scam(inc: Incident) -> None:
    """An authorised push-payment scam: the victim, on their own phone at home, sends 2-6
    p2p transfers of growing size (x1.3-2.2 each) to a mule they never paid before, spread
    over hours to days; the same mules collect from many victims."""
    rng, user, ring = inc.rng, inc.victim(), inc.ring()
    mule, delay = rng.choice(ring.mules), chargeback_delay_days(rng) + 1.0
    device = user.devices[0]
    time = inc.day.time_at(user.home.tz)
    amount = 120 * rng.lognormvariate(0.0, 0.5)
    for _ in range(rng.randint(2, 6)):
        ip = rng.choice(user.home_ips)
        login = inc.day.before(time, rng.uniform(30, 600))
        inc.account(login, user, "login", device, ip, user.home)
        inc.pay(time, user, user.cards[0], P2P, amount * user.fx, "p2p", device, ip, user.home,
                delay, counterparty=mule)  # fmt: skip
        time += timedelta(hours=0.5 + rng.expovariate(1 / 14))
        amount *= rng.uniform(1.3, 2.2)


def compromised_merchant(inc: Incident) -> None:
    """A merchant breached for a 2-5 day window that ended 1-5 days ago: a share of the cards
    that paid there is now used online elsewhere, over the next 4 days, for 1-3 medium-large
    purchases each at risky merchants, from ring devices and addresses."""
    rng, day = inc.rng, inc.day
    last = day.index - rng.randint(*BREACH_ENDED_DAYS_AGO)
    first = max(0, last - rng.randint(*BREACH_DAYS) + 1)
    exposed: dict[str, dict[tuple[int, str], None]] = {}
    for d in range(first, last + 1):
        for merchant_id, cards in inc.rec.card_history.get(d, {}).items():
            exposed.setdefault(merchant_id, {}).update(cards)
    candidates = [(m, list(cards)) for m, cards in exposed.items() if len(cards) >= 3]
    if not candidates:
        return
    _, cards = rng.choices(candidates, weights=[len(c) for _, c in candidates])[0]
    ring = inc.ring()
    share = rng.uniform(0.2, 0.5)
    for user_index, card in rng.sample(cards, min(12, max(2, round(share * len(cards))))):
        user = inc.world.users[user_index]
        device, delay = rng.choice(ring.devices), chargeback_delay_days(rng)
        country, ip = inc.hideout(ring, user)
        time = day.start + timedelta(days=rng.uniform(0, 4))
        for _ in range(rng.randint(1, 3)):
            shop = inc.world.risky_ec.pick(rng)
            amount = 60 * shop.scale * rng.lognormvariate(0.3, 0.5) * user.fx
            inc.pay(time, user, card, shop, amount, "ecommerce", device, ip, country, delay)
            time += _minutes(rng, 10, 480)


SCENARIOS: dict[str, Callable[[Incident], None]] = {
    "card_testing": card_testing,
    "account_takeover": account_takeover,
    "stolen_card": stolen_card,
    "p2p_scam": p2p_scam,
    "compromised_merchant": compromised_merchant,
}


def simulate_fraud_day(world: World, rec: Recorder, day_for: Callable[[str], Day],
                       scale: float) -> None:  # fmt: skip
    """All incidents starting on a day; each type draws from its own stream ``day_for(type)``."""
    for fraud_type, scenario in SCENARIOS.items():
        day = day_for(fraud_type)
        mean = INCIDENTS_PER_DAY[fraud_type] * scale
        if day.drifted:
            mean *= DRIFT_FACTOR[fraud_type]
        for _ in range(poisson(day.rng, mean)):
            scenario(Incident(world, rec, day, fraud_type))
