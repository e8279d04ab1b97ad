"""Which resident models must go so that another fits: registry groups, TALKIES_MAX_LOADED_MODELS and the
memory budget (TALKIES_MEMORY_BUDGET), least recently used first, idle before busy. Pure choices over the
pool's slots, where a model that loads or unloads counts as resident; the scheduler marks the victims and
unloads them as they drain (talkies.pool.owner)."""

from __future__ import annotations

from talkies.engines import EXECUTORS
from talkies.errors import ModelTooLargeError
from talkies.memory import MemoryBudget, estimate_footprint, format_bytes
from talkies.pool.slot import Slot
from talkies.registry import Registry
from talkies.registry.groups import GroupRules
from talkies.settings import Settings


class Residency:
    def __init__(
        self,
        registry: Registry,
        settings: Settings,
        group_rules: GroupRules,
        memory: MemoryBudget,
        slots: dict[str, Slot],
    ) -> None:
        self.registry = registry
        self.settings = settings
        self.group_rules = group_rules
        self.memory = memory
        self.slots = slots

    def victims_for(self, slot: Slot) -> list[Slot]:
        """Registry groups (talkies.registry.groups) and TALKIES_MAX_LOADED_MODELS, LRU first. Slugs that
        share `slot`'s weights (registry.weight_mates: one copy in memory) neither count nor go."""
        mates = self.registry.weight_mates(slot.spec.slug)
        resident = sorted(  # what loads or unloads counts too; idle ones go first, then the least used
            (s for s in self.slots.values() if s.occupies and s is not slot and s.spec.slug not in mates),
            key=lambda s: (s.busy or not s.loaded, s.last_used),
        )
        chosen = self.group_rules.victims(
            slot.spec, [s.spec for s in resident], self.settings.max_loaded_models
        )
        slugs = {spec.slug for spec in chosen}
        return [s for s in resident if s.spec.slug in slugs]

    def memory_victims(self, slot: Slot, chosen: list[Slot]) -> list[Slot]:
        """Resident models to evict besides `chosen` so that `slot` fits the memory budget: least recently
        used first, idle ones before busy ones (a busy one goes only after its requests). Raises
        ModelTooLargeError when it can never fit."""
        budget = self.memory.budget
        mates = self.registry.weight_mates(slot.spec.slug)
        resident = [s for s in self.slots.values() if s.occupies and s is not slot and s not in chosen]
        if budget is None or any(s.spec.slug in mates for s in resident):
            return []  # no known budget, or its weights are resident already (one copy, counted once)
        need, how = self.footprint(slot)
        kept = [s for s in resident if self.group_rules.protected(s.spec, slot.spec)]
        if need + self.used(kept) > budget:
            held = f", {format_bytes(self.used(kept))} of it held by persistent-group models" if kept else ""
            raise ModelTooLargeError(
                f"model {slot.spec.slug!r} needs about {format_bytes(need)} ({how}) but the memory budget "
                f"is {format_bytes(budget)}{held} (TALKIES_MEMORY_BUDGET)"
            )
        candidates = sorted(
            (s for s in resident if s not in kept), key=lambda s: (s.busy or not s.loaded, s.last_used)
        )
        extra: list[Slot] = []
        while candidates and need + self.used([*kept, *candidates]) > budget:
            first = candidates[0]
            going = [
                c
                for c in candidates
                if c is first or c.spec.slug in self.registry.weight_mates(first.spec.slug)
            ]
            extra += going
            candidates = [c for c in candidates if c not in going]
        return extra

    def footprint(self, slot: Slot) -> tuple[int, str]:
        """(bytes, "measured" or "estimated"): the figure the budget counts for `slot`."""
        measured = self.memory.measured.get(slot.spec.slug)
        if measured is not None:
            return measured, "measured"
        needs_repo = EXECUTORS[slot.spec.executor].needs_repo
        return estimate_footprint(
            self.settings.models_dir / slot.spec.slug, needs_repo=needs_repo
        ), "estimated"

    def used(self, slots: list[Slot]) -> int:
        """Bytes `slots` hold together; slugs sharing one copy of weights count once."""
        total, counted = 0, set[str]()
        for s in slots:
            if not counted & self.registry.weight_mates(s.spec.slug):
                total += self.footprint(s)[0]
            counted.add(s.spec.slug)
        return total

    def refresh_footprints(self) -> None:
        """Worker engines grow after their first requests: measure the resident ones again (a thread)."""
        for s in list(self.slots.values()):
            engine = s.engine
            if engine is not None and getattr(engine, "worker_pid", None) is not None:
                figure = self.memory.measure(engine, None)
                if figure is not None:
                    self.memory.measured[s.spec.slug] = figure

    def overshoot(self, slot: Slot) -> list[Slot]:
        """After `slot` loaded: a load measured bigger than estimated may overshoot the budget; the idle
        models (least recently used first) to evict until the resident set fits again. Busy ones stay."""
        budget = self.memory.budget
        if budget is None:
            return []
        mates = self.registry.weight_mates(slot.spec.slug)
        others = [s for s in self.slots.values() if s.occupies and s is not slot and s.spec.slug not in mates]
        idle = sorted(
            (
                s
                for s in others
                if s.loaded
                and not s.busy
                and not s.evicting
                and not self.group_rules.protected(s.spec, slot.spec)
            ),
            key=lambda s: s.last_used,
        )
        going: list[Slot] = []
        while idle and self.used([slot, *(s for s in others if s not in going)]) > budget:
            going.append(idle.pop(0))
        return going
