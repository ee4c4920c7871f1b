"""Synthetic payment traffic with labelled fraud, for training, replay and demos.

A deterministic simulation (per seed) of account holders paying, logging in and moving
money, plus five fraud scenarios (``card_testing``, ``account_takeover``, ``stolen_card``,
``p2p_scam``, ``compromised_merchant``), late chargeback labels, and optional drift.
Modules:

* ``world``: countries, merchants, users and fraud rings (static per seed);
* ``ordinary``: legitimate behaviour, day by day;
* ``scenarios``: one function per fraud scenario, each documenting its signature;
* ``labels``: chargebacks and reviews; ``engine``: ``simulate`` (whole) and
``simulate_chunks`` (a week at a time, bounded memory); ``publisher``: ``publish``, ``publish_chunks``.

Conventions: ``country`` is where the event happens (shop country, or geolocated address);
``ip`` addresses are ``10.<country index>.x.y`` (a toy GeoIP); ``device_id`` is the device
the platform sees: the user's phone for wallet/card-present payments and ATM withdrawals,
the phone or laptop online; ``amount`` is in the account's billing ``currency`` (EUR, GBP or
USD, from the user's home country).
"""

from fraud_platform.lib.simulation.engine import (
    Simulation,
    SimulationConfig,
    concatenate,
    simulate,
    simulate_chunks,
)
from fraud_platform.lib.simulation.publisher import publish, publish_chunks

__all__ = [
    "Simulation",
    "SimulationConfig",
    "concatenate",
    "publish",
    "publish_chunks",
    "simulate",
    "simulate_chunks",
]
