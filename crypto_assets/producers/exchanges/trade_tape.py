"""Which trade ids of each product were sent: the bookkeeping behind dedup and gap detection.

Exchanges number a product's trades 1, 2, 3, ... so what a stream has sent is stated exactly by
the highest id sent plus the holes below it (ids never seen, not healed). That is small and
bounded (no set of every id), and it answers both questions the stream asks of every trade:

- already sent? (an id at or below the highest that is not in a hole: a duplicate, dropped);
- a jump? (an id above highest + 1: the ids between are missing and go to the gap healer).

A trade that arrives late into a hole (out of order, or after its heal failed) fills the hole.
Holes are capped per product (`max_holes`, oldest forgotten first): a stream that never heals
must not grow without bound; a forgotten hole's late trade is then dropped like a duplicate,
and bronze's (exchange, product, trade_id) dedup stays the last word either way.
"""

from __future__ import annotations

from dataclasses import dataclass, field

Hole = tuple[int, int]  # first and last missing trade id, inclusive


@dataclass
class ProductTape:
    """One product: the highest trade id sent and the holes below it (sorted, disjoint)."""

    last_id: int | None = None
    holes: list[Hole] = field(default_factory=list)

    def in_hole(self, trade_id: int) -> int | None:
        """Index of the hole holding trade_id, if any."""
        for i, (lo, hi) in enumerate(self.holes):
            if lo <= trade_id <= hi:
                return i
        return None

    def missing(self) -> int:
        return sum(hi - lo + 1 for lo, hi in self.holes)


class TradeTape:
    """Per-product sequencing state of a stream (see the module doc)."""

    def __init__(self, max_holes: int = 1000) -> None:
        self.max_holes = max_holes
        self.products: dict[str, ProductTape] = {}
        self.holes_forgotten = 0

    def product(self, product: str) -> ProductTape:
        return self.products.setdefault(product, ProductTape())

    def is_sent(self, product: str, trade_id: int) -> bool:
        """True when trade_id was already sent (so a copy of it is a duplicate)."""
        p = self.products.get(product)
        if p is None or p.last_id is None or trade_id > p.last_id:
            return False
        return p.in_hole(trade_id) is None

    def gap_before(self, product: str, trade_id: int) -> Hole | None:
        """The ids missing between the highest sent and trade_id (exclusive), if any."""
        p = self.products.get(product)
        if p is None or p.last_id is None or trade_id <= p.last_id + 1:
            return None
        return p.last_id + 1, trade_id - 1

    def mark_sent(self, product: str, trade_id: int) -> bool:
        """Record trade_id as sent. Returns True when it filled a hole (a late trade).
        An id above highest + 1 must have had its gap recorded first (`record_gap`)."""
        p = self.product(product)
        if p.last_id is None or trade_id > p.last_id:
            if p.last_id is not None and trade_id > p.last_id + 1:
                self._add_hole(p, (p.last_id + 1, trade_id - 1))
            p.last_id = trade_id
            return False
        i = p.in_hole(trade_id)
        if i is None:
            return False
        lo, hi = p.holes.pop(i)
        pieces = [h for h in ((lo, trade_id - 1), (trade_id + 1, hi)) if h[0] <= h[1]]
        p.holes[i:i] = pieces
        return True

    def record_gap(self, product: str, hole: Hole) -> None:
        """The ids of `hole` (above the highest sent) are missing: move the highest past them."""
        p = self.product(product)
        lo, hi = hole
        if p.last_id is not None and lo <= p.last_id:
            lo = p.last_id + 1
        if lo > hi:
            return
        self._add_hole(p, (lo, hi))
        p.last_id = hi

    def baseline(self, product: str, trade_id: int) -> None:
        """Start a product's tape at trade_id without a gap (what a heartbeat says before any
        trade was seen: the stream does not fetch history from before it started)."""
        p = self.product(product)
        if p.last_id is None:
            p.last_id = trade_id

    def _add_hole(self, p: ProductTape, hole: Hole) -> None:
        p.holes.append(hole)
        p.holes.sort()
        while len(p.holes) > self.max_holes:
            p.holes.pop(0)
            self.holes_forgotten += 1

    def open_holes(self) -> dict[str, list[Hole]]:
        return {name: list(p.holes) for name, p in self.products.items() if p.holes}

    def missing(self) -> int:
        """Trades still missing over all products (holes not healed)."""
        return sum(p.missing() for p in self.products.values())
