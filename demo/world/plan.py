"""Who churns, when and why: the hidden plan every other part of the world is drawn from.

A customer's *warning signal* for a cause is a number from 0 (nothing shows) to 1 (fully
shows) on each day. For a churner it ramps linearly from ``warning_start`` to ``churn_date``
and stays at 1 after; for a false alarm it ramps up over a few months to a strength below 1 and
falls back to 0 on ``recovered_on`` (or stays, when the customer is still wavering at the end).
The generators multiply behaviour by these signals, so the data carry them with noise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

CAUSES = ("utilisation_decline", "skipped_maintenance", "parts_elsewhere", "late_payments",
          "detractor_nps", "survey_silence")
CAUSE_WEIGHTS = (1.2, 1.0, 1.1, 0.8, 0.8, 0.7)


@dataclass(slots=True)
class Traits:
    """How a customer behaves when nothing is wrong; customers differ a lot on each."""

    shifts: int
    availability: float  # share of shift capacity the machines are used
    parts_capture: float  # share of wear parts bought from the OEM
    adherence: float  # chance a due service is done on time
    pay_delay_days: float  # days after due date invoices are paid, on average
    response_rate: float  # chance a survey is answered
    satisfaction: float  # mean NPS answer
    coverage: float  # share of machines under a machine contract
    auto_renew: bool
    notice_days: int
    tier: str
    customer_scope: bool
    anniversary: tuple[int, int]  # month, day contracts are co-termed to


@dataclass(slots=True)
class Warning:
    """A period in which causes show, and how strongly."""

    causes: tuple[str, ...]
    start: date
    full: date  # the signal reaches ``strength`` here
    strength: float
    recovered_on: date | None = None  # false alarms only; None: still showing at the end

    def level(self, day: int) -> float:
        """The signal on ``day`` (an ordinal), from 0 to ``strength``."""
        start, full = self.start.toordinal(), self.full.toordinal()
        if day <= start:
            return 0.0
        if self.recovered_on is not None:
            back = self.recovered_on.toordinal()
            if day >= back:
                return 0.0
            fall = back - 45  # recovery takes six weeks
            if day > fall:
                return self.strength * (back - day) / 45
        if day >= full:
            return self.strength
        return self.strength * (day - start) / max(1, full - start)


@dataclass(slots=True)
class CustomerPlan:
    """A customer's hidden fate: the ground truth analytics are scored against."""

    external_id: str
    traits: Traits
    # The first service contract the ERP records (its relationship, as the CLV's renewal
    # cohorts count it); None: no contract before the world's end.
    contract_start: date | None = None
    # Chance of lapsing at each renewal, drawn from the world's beta distribution (None for a
    # customer lost before the window: only its renewal history was drawn).
    churn_probability: float | None = None
    churn_date: date | None = None
    silent_churn: bool = False
    warning: Warning | None = None
    false_alarm: bool = False
    depth: dict[str, float] = field(default_factory=dict)  # per cause, how far it goes

    @property
    def churned(self) -> bool:
        """True when the customer lets every contract lapse inside the world."""
        return self.churn_date is not None

    def signal(self, cause: str, day: int) -> float:
        """How strongly ``cause`` shows on ``day`` (ordinal), 0..1."""
        w = self.warning
        if w is None or cause not in w.causes:
            return 0.0
        return w.level(day)

    def any_signal(self, day: int) -> float:
        """The strongest of the causes on ``day``."""
        w = self.warning
        return 0.0 if w is None else w.level(day)

    def gone(self, day: int) -> bool:
        """True from the day after the last contract ended."""
        return self.churn_date is not None and day > self.churn_date.toordinal()
