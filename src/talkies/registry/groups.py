"""Registry groups as residency rules: which resident models a load must evict, may keep, may never touch.

Two meanings, chosen per group:

- A group without flags (talkies' original meaning): its members may stay resident together and do not
  count against TALKIES_MAX_LOADED_MODELS for each other. Everything else follows that limit (least
  recently used evicted first).
- A group with any of `swap` / `exclusive` / `persistent` (every group of a llama-swap file): llama-swap's
  meaning (`internal/router/group.go`), unset flags taking its defaults (swap and exclusive true,
  persistent false). Loading a member evicts the other members of its group when `swap`, and every
  model of the other groups when `exclusive`, except members of `persistent` groups. TALKIES_MAX_LOADED_MODELS
  does not apply to such a load: the flags alone decide, as in llama-swap.

A model outside every group follows TALKIES_MAX_LOADED_MODELS; it may evict members of flagged groups
that way, but never members of a persistent group.

`GroupRules` is the one place these rules live; the pool's residency code asks it (its three methods are
the hooks a residency planner needs) and `victims` is the whole decision for a count-limited pool.
"""

from __future__ import annotations

from collections.abc import Sequence

from talkies.registry.schema import GroupSpec, ModelSpec


class GroupRules:
    def __init__(self, groups: dict[str, GroupSpec]) -> None:
        self._group_of: dict[str, tuple[str, GroupSpec]] = {}
        for name, group in groups.items():
            for member in group.members:
                self._group_of[member] = (name, group)

    def group_of(self, slug: str) -> tuple[str, GroupSpec] | None:
        return self._group_of.get(slug)

    def _same_group(self, a: str, b: str) -> bool:
        ga, gb = self._group_of.get(a), self._group_of.get(b)
        return ga is not None and gb is not None and ga[0] == gb[0]

    def _flagged(self, slug: str) -> GroupSpec | None:
        found = self._group_of.get(slug)
        return found[1] if found and found[1].flagged else None

    def must_evict(self, loading: ModelSpec, resident: ModelSpec) -> bool:
        """True: `resident` goes when `loading` loads (a swap group's sibling, or another group's model
        when the loading model's group is exclusive and the other group is not persistent)."""
        group = self._flagged(loading.slug)
        if group is None or resident.slug == loading.slug:
            return False
        if self._same_group(loading.slug, resident.slug):
            return group.swap is not False
        if group.exclusive is False:
            return False
        return not self.protected(resident, loading)

    def exempt_from_count(self, loading: ModelSpec, resident: ModelSpec) -> bool:
        """True: `resident` does not count against TALKIES_MAX_LOADED_MODELS for this load."""
        if self._flagged(loading.slug) is not None:
            return True  # the flags alone decide a flagged group's loads
        if self._same_group(loading.slug, resident.slug):
            return True  # unflagged group mates co-reside
        return self.protected(resident, loading)

    def protected(self, resident: ModelSpec, loading: ModelSpec | None = None) -> bool:
        """True: `resident` may not be evicted for `loading` (a persistent group's member, unless the
        load is from its own group)."""
        found = self._group_of.get(resident.slug)
        if found is None or not found[1].persistent:
            return False
        return loading is None or not self._same_group(loading.slug, resident.slug)

    def victims(self, loading: ModelSpec, resident: Sequence[ModelSpec], max_loaded: int) -> list[ModelSpec]:
        """The resident models to unload so `loading` may load; `resident` least recently used first."""
        others = [r for r in resident if r.slug != loading.slug]
        chosen = [r for r in others if self.must_evict(loading, r)]
        counted = [
            r
            for r in others
            if r not in chosen and not self.exempt_from_count(loading, r) and not self.protected(r, loading)
        ]
        excess = len(counted) + 1 - max_loaded
        return chosen + counted[: max(0, excess)]
