"""The static world of a simulation: countries, merchants, account holders, fraud rings.

Built once per seed from its own random stream, independently of ``drift_at``, so a drifted
run and a plain run share the same people, merchants and fraudsters.
"""

from __future__ import annotations

import math
import random
from bisect import bisect
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Generic, TypeVar

from fraud_platform.lib.simulation.common import ip_in, stream, token

T = TypeVar("T")


@dataclass(frozen=True)
class Country:
    code: str  # ISO 3166-1 alpha-2
    currency: str
    tz: int  # rough local time, hours from UTC
    index: int  # second octet of the country's 10.x.y.z addresses


_COUNTRY_ROWS = (
    ("DE", "EUR", 1), ("FR", "EUR", 1), ("NL", "EUR", 1), ("ES", "EUR", 1), ("IT", "EUR", 1),
    ("BE", "EUR", 1), ("AT", "EUR", 1), ("IE", "EUR", 0), ("PT", "EUR", 0), ("GB", "GBP", 0),
    ("US", "USD", -5), ("CH", "CHF", 1), ("TH", "THB", 7), ("MX", "MXN", -6), ("JP", "JPY", 9),
    ("AE", "AED", 4), ("NG", "NGN", 1), ("RU", "RUB", 3), ("BR", "BRL", -3), ("ID", "IDR", 7),
    ("VN", "VND", 7), ("UA", "UAH", 2), ("RO", "RON", 2), ("PH", "PHP", 8), ("KH", "KHR", 7),
    ("TR", "TRY", 3),
)  # fmt: skip
COUNTRIES = {code: Country(code, cur, tz, i + 1) for i, (code, cur, tz) in enumerate(_COUNTRY_ROWS)}

# Where account holders live (weights), and the value of their billing currency in EUR terms.
HOME_WEIGHTS = {"DE": 22, "FR": 18, "ES": 12, "IT": 12, "NL": 9, "GB": 8, "BE": 5, "AT": 4,
                "PT": 4, "IE": 3, "US": 3}  # fmt: skip
FX = {"EUR": 1.0, "GBP": 0.86, "USD": 1.08}
TRAVEL_WEIGHTS = {"ES": 10, "IT": 8, "FR": 8, "PT": 5, "GB": 5, "DE": 5, "NL": 3, "AT": 3,
                  "US": 5, "CH": 3, "TH": 3, "TR": 3, "MX": 2, "JP": 2, "AE": 2, "BR": 1,
                  "ID": 1}  # fmt: skip
FRAUD_COUNTRIES = ("NG", "RU", "BR", "ID", "VN", "UA", "RO")
DRIFT_FRAUD_COUNTRIES = ("PH", "KH", "TR")  # rings that only appear after the drift
FOREIGN = tuple(code for code in COUNTRIES if code not in HOME_WEIGHTS)


@dataclass(frozen=True)
class Category:
    name: str
    channel: str  # "card_present" or "ecommerce"
    weight: float  # share of merchants
    scale: float  # typical ticket relative to the user's own scale


CATEGORIES = (
    Category("grocery", "card_present", 12, 1.0),
    Category("restaurants", "card_present", 12, 0.9),
    Category("fuel", "card_present", 5, 1.6),
    Category("transport", "card_present", 5, 0.4),
    Category("fashion", "card_present", 5, 1.8),
    Category("pharmacy", "card_present", 3, 0.7),
    Category("entertainment", "card_present", 4, 1.0),
    Category("electronics", "card_present", 2, 4.0),
    Category("hotels", "card_present", 2, 4.5),
    Category("jewelry", "card_present", 1, 6.0),
    Category("marketplace", "ecommerce", 6, 1.3),
    Category("digital_goods", "ecommerce", 5, 0.35),
    Category("subscriptions", "ecommerce", 4, 0.5),
    Category("food_delivery", "ecommerce", 4, 0.9),
    Category("fashion", "ecommerce", 3, 1.8),
    Category("utilities", "ecommerce", 2, 2.5),
    Category("electronics", "ecommerce", 2, 4.0),
    Category("travel", "ecommerce", 2, 6.0),
    Category("gift_cards", "ecommerce", 1, 2.0),
    Category("gambling", "ecommerce", 1, 1.5),
)
RISKY_EC = frozenset({"electronics", "gift_cards", "travel", "gambling", "marketplace"})
RISKY_CP = frozenset({"electronics", "jewelry", "fashion"})
TESTING_EC = frozenset({"digital_goods", "subscriptions"})


@dataclass(frozen=True)
class Merchant:
    merchant_id: str
    category: str
    channel: str
    country: Country
    popularity: float = 1.0
    scale: float = 1.0


ATMS = {code: Merchant(f"m_atm_{code.lower()}", "atm", "withdrawal", country)
        for code, country in COUNTRIES.items()}  # fmt: skip
PAYOUT_BANK = Merchant("m_payout_bank", "bank_transfer", "withdrawal", COUNTRIES["NL"])
PAYOUT_CRYPTO = Merchant("m_payout_crypto", "crypto_exchange", "withdrawal", COUNTRIES["IE"])
TOPUP = Merchant("m_topup", "topup", "deposit", COUNTRIES["NL"])
P2P = Merchant("m_p2p", "p2p", "p2p", COUNTRIES["NL"])


class Pool(Generic[T]):
    """Items with weights, drawn with replacement."""

    def __init__(self, items: list[T], weights: list[float]) -> None:
        self.items = items
        self.cum = list(accumulate(weights))

    def __bool__(self) -> bool:
        return bool(self.items)

    def pick(self, rng: random.Random) -> T:
        return self.items[bisect(self.cum, rng.random() * self.cum[-1])]

    @classmethod
    def of(cls, merchants: list[Merchant]) -> Pool[Merchant]:
        return cls(merchants, [m.popularity for m in merchants])


@dataclass(eq=False)
class User:
    """An account holder: habits are fixed, devices and trips change during the simulation."""

    index: int
    user_id: str
    home: Country
    currency: str
    fx: float
    cards: list[str]
    devices: list[str]  # devices[0] is the phone, devices[1] (if any) a laptop
    home_ips: list[str]
    activity: float  # expected transactions per day
    amount_scale: float  # typical card payment, EUR
    channel_weights: dict[str, float]
    favourite_cp: Pool[Merchant]
    favourite_ec: Pool[Merchant]
    travel_p: float  # chance per day of leaving for a trip
    crypto_user: bool
    friends: list[str] = field(default_factory=list)
    trip: Country | None = None
    trip_end: int = -1
    trip_ip: str = ""


@dataclass(eq=False)
class Ring:
    """A fraud ring: a home country, a handful of devices and addresses, and mule accounts."""

    country: Country
    devices: list[str]
    ips: list[str]
    proxy_share: float  # how often it hides behind an address in the victim's country
    mules: list[str]


@dataclass
class World:
    users: list[User]
    merchants: list[Merchant]
    cp_by_country: dict[str, Pool[Merchant]]
    ecommerce: Pool[Merchant]
    risky_ec: Pool[Merchant]
    testing_ec: Pool[Merchant]
    rings: list[Ring]
    drift_rings: list[Ring]


CHANNEL_MIX = {"card_present": 0.46, "ecommerce": 0.32, "p2p": 0.08, "withdrawal": 0.06,
               "deposit": 0.08}  # fmt: skip


def _weighted(rng: random.Random, weights: dict[str, float]) -> str:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def _merchants(rng: random.Random, count: int) -> list[Merchant]:
    """``count`` merchants; the first ones cover every foreign country so travellers and
    cloned cards find shops there."""
    cats = {ch: [c for c in CATEGORIES if c.channel == ch] for ch in ("card_present", "ecommerce")}
    merchants = []
    for i in range(count):
        channel = "card_present" if rng.random() < 0.6 else "ecommerce"
        if i < 2 * len(FOREIGN) and count >= 4 * len(FOREIGN):
            channel, country = "card_present", COUNTRIES[FOREIGN[i % len(FOREIGN)]]
        elif rng.random() < (0.15 if channel == "card_present" else 0.1):
            country = COUNTRIES[rng.choice(FOREIGN)]
        else:
            country = COUNTRIES[_weighted(rng, HOME_WEIGHTS)]
        pool = cats[channel]
        category = rng.choices(pool, weights=[c.weight for c in pool])[0]
        popularity = rng.paretovariate(1.2)
        scale = category.scale * rng.lognormvariate(0.0, 0.25)
        merchants.append(Merchant(f"m_{i:05d}", category.name, channel, country, popularity, scale))
    return merchants


def _favourites(rng: random.Random, pool: Pool[Merchant], low: int, high: int) -> Pool[Merchant]:
    chosen = [pool.pick(rng) for _ in range(rng.randint(low, high))] if pool else []
    return Pool(chosen, [1.0 / (rank + 1) for rank in range(len(chosen))])


def _user(rng: random.Random, index: int, world: World, seen: set[str]) -> User:
    home = COUNTRIES[_weighted(rng, HOME_WEIGHTS)]
    currency = "GBP" if home.code == "GB" else "USD" if home.code == "US" else "EUR"
    weights = {ch: w * rng.lognormvariate(0.0, 0.4) for ch, w in CHANNEL_MIX.items()}
    local_cp = world.cp_by_country.get(home.code) or world.cp_by_country["*"]
    return User(
        index=index,
        user_id=_unique(rng, "u_", seen),
        home=home,
        currency=currency,
        fx=FX[currency],
        cards=[_unique(rng, "card_", seen, 6) for _ in range(1 if rng.random() < 0.6 else 2)],
        devices=[_unique(rng, "dev_", seen) for _ in range(1 if rng.random() < 0.55 else 2)],
        home_ips=[ip_in(rng, home) for _ in range(rng.randint(1, 2))],
        activity=rng.lognormvariate(math.log(3.3) - 0.245, 0.7),
        amount_scale=rng.lognormvariate(math.log(28.0), 0.45),
        channel_weights=weights,
        favourite_cp=_favourites(rng, local_cp, 4, 12),
        favourite_ec=_favourites(rng, world.ecommerce, 2, 8),
        travel_p=rng.choice((0.0, 0.0, 0.002, 0.005, 0.01)),
        crypto_user=rng.random() < 0.1,
    )


def _unique(rng: random.Random, prefix: str, seen: set[str], nbytes: int = 5) -> str:
    while (value := token(rng, prefix, nbytes)) in seen:
        pass
    seen.add(value)
    return value


def _ring(rng: random.Random, code: str, seen: set[str]) -> Ring:
    country = COUNTRIES[code]
    return Ring(
        country=country,
        devices=[_unique(rng, "dev_", seen) for _ in range(rng.randint(3, 8))],
        ips=[ip_in(rng, country) for _ in range(rng.randint(4, 12))],
        proxy_share=rng.uniform(0.15, 0.5),
        mules=[_unique(rng, "u_", seen) for _ in range(rng.randint(3, 8))],
    )


def build_world(seed: int, users: int, merchants: int) -> World:
    """The people, shops and fraud rings of a seed."""
    rng = stream(seed, "world")
    shops = _merchants(rng, merchants)
    cp = [m for m in shops if m.channel == "card_present"]
    ec = [m for m in shops if m.channel == "ecommerce"] or shops
    by_country: dict[str, Pool[Merchant]] = {"*": Pool.of(cp or shops)}
    for code in COUNTRIES:
        local = [m for m in cp if m.country.code == code]
        if local:
            by_country[code] = Pool.of(local)
    world = World(
        users=[],
        merchants=shops,
        cp_by_country=by_country,
        ecommerce=Pool.of(ec),
        risky_ec=Pool.of([m for m in ec if m.category in RISKY_EC] or ec),
        testing_ec=Pool.of([m for m in ec if m.category in TESTING_EC] or ec),
        rings=[],
        drift_rings=[],
    )
    seen: set[str] = set()
    world.users = [_user(rng, i, world, seen) for i in range(users)]
    for user in world.users:
        others = rng.sample(range(users), min(users, rng.randint(2, 6)))
        user.friends = [world.users[i].user_id for i in others if i != user.index]
    world.rings = [_ring(rng, FRAUD_COUNTRIES[i % len(FRAUD_COUNTRIES)], seen) for i in range(10)]
    world.drift_rings = [_ring(rng, code, seen) for code in DRIFT_FRAUD_COUNTRIES * 2]
    return world
