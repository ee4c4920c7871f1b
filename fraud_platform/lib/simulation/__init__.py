"""The traffic simulator, in small modules; ``fraud_platform.lib.simulator`` is its public face."""

from fraud_platform.lib.simulation.engine import Simulation, SimulationConfig, simulate
from fraud_platform.lib.simulation.publisher import publish

__all__ = ["Simulation", "SimulationConfig", "publish", "simulate"]
