"""The model pool (talkies.pool.model_pool): `async with pool.acquire(slug) as engine`; what it keeps per
model (slot), starting and stopping engines (loads), and which resident models make room for another
(residency)."""

from talkies.pool.model_pool import Clock, EngineFactory, ModelPool
from talkies.pool.slot import PoolEvents

__all__ = ["Clock", "EngineFactory", "ModelPool", "PoolEvents"]
