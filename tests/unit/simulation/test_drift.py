"""The drift switch: a new fraud pattern and more travel appear from the drift day on only."""

from datetime import timedelta

from fraud_platform.lib.simulation import SimulationConfig, simulate

DAYS, DRIFT_DAY = 8, 4
CONFIG = SimulationConfig(days=DAYS, users=800, seed=11)


def _night_p2p_takeovers(sim, start, end) -> int:
    """p2p frauds labelled account_takeover: the sim-swap signature (the older takeover
    scenario sends at most one p2p transfer)."""
    truth = sim.fraud_type_by_transaction
    return sum(
        1
        for t in sim.transactions
        if truth.get(t["transaction_id"]) == "account_takeover"
        and t["channel"] == "p2p"
        and start <= t["event_time"] < end
    )


def test_drift_adds_sim_swap_takeovers_and_travel_only_after_the_switch() -> None:
    plain = simulate(CONFIG)
    drifted = simulate(SimulationConfig(days=DAYS, users=800, seed=11, drift_at=DRIFT_DAY))
    switch = CONFIG.start + timedelta(days=DRIFT_DAY)
    before = [t for t in drifted.transactions if t["event_time"] < switch]
    assert before == [t for t in plain.transactions if t["event_time"] < switch]
    after_plain = _night_p2p_takeovers(plain, switch, CONFIG.end)
    after_drift = _night_p2p_takeovers(drifted, switch, CONFIG.end)
    assert after_drift >= after_plain + 10, (after_plain, after_drift)

    def abroad(sim) -> int:
        return sum(
            1
            for t in sim.transactions
            if t["event_time"] >= switch
            and t["transaction_id"] not in sim.fraud_type_by_transaction
            and t["country"]
            not in {"DE", "FR", "ES", "IT", "NL", "GB", "BE", "AT", "PT", "IE", "US"}
        )

    assert abroad(drifted) > 1.5 * abroad(plain), (abroad(plain), abroad(drifted))
