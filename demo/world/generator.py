"""The demo world: a machine builder's customers, installed base and after-sales business.

``World.generate(seed, end_date, ...)`` draws everything from ``random.Random`` streams seeded by
(seed, end date, size, section), so the same arguments give the same world byte for byte, and a
change in one section does not reshuffle the others. The business records are the canonical
records of ``erp_connectors.models`` (one dict per record, keys = the model's fields, absent
values left out); the machine plans carry what the telemetry history needs (weekly operating
hours, service visits, faults), so telemetry, services, parts and invoices tell one story.
"""

from __future__ import annotations

import math
import random
from bisect import bisect_right
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from demo.world import catalogue as cat
from demo.world.plan import CAUSE_WEIGHTS, CAUSES, CustomerPlan, Traits, Warning

GENERATOR_VERSION = 2
# Renewal propensities (docs/demo-world.md, "Renewals"): every contract relationship lapses at
# each renewal with its own probability, drawn from beta(RENEWAL_ALPHA, RENEWAL_BETA), the
# shifted-beta-geometric's assumption (Fader & Hardie 2007): a third of new relationships are
# lost by their third renewal, and retention rises with tenure as the likely leavers leave
# first (83.3% at the first renewal, 91.5% at the fifth).
RENEWAL_ALPHA = 0.7
RENEWAL_BETA = 3.5
# The ERP's service contracts go back this far before the telemetry window.
CONTRACT_HISTORY_DAYS = 3 * 365
SILENT_SHARE = 0.15  # of churners: no warning at all
FALSE_ALARM_SHARE = 0.12  # of staying customers: warnings, but they stay
HOUR = timedelta(hours=1)
CENT = Decimal("0.01")
Record = dict[str, Any]


@dataclass(frozen=True, slots=True)
class WorldSize:
    """How big a world is."""

    customers: int
    machines: int
    years: int


SIZES: dict[str, WorldSize] = {
    "small": WorldSize(120, 500, 2),
    "standard": WorldSize(300, 1500, 3),
    "large": WorldSize(1000, 5000, 3),
}


@dataclass(slots=True)
class MachinePlan:
    """One machine's life in the world, as telemetry will show it."""

    external_id: str
    serial: str
    model: str
    customer_external_id: str
    commissioned_on: date
    shifts: int
    first_week: int  # index of the first week it runs in the world
    weekly_hours: list[float]  # operating hours per full week, from ``first_week`` on
    hours_at_start: float  # counter when its first week starts
    hours_at_end: float = 0.0
    silent_from: date | None = None  # telemetry stops (connectivity went with the contract)
    services: list[tuple[datetime, str, bool]] = field(default_factory=list)  # time, code, on time
    faults: list[tuple[datetime, int, str]] = field(default_factory=list)  # start, hours, code


@dataclass(frozen=True, slots=True)
class _Dip:
    """Weeks ``start`` to ``end`` (excluded) a machine spends on other work, at less load."""

    start: int
    end: int
    depth: float

    def factor(self, week: int) -> float:
        return 1 - self.depth if self.start <= week < self.end else 1.0


@dataclass(slots=True)
class _Upkeep:
    """A machine's service state as its weeks go by."""

    since_hours: float
    since_days: float
    overdue_weeks: int = 0


@dataclass(frozen=True, slots=True)
class _Week:
    """A week a machine ran: its Monday, workdays before the end, hours run, shift span."""

    monday: date
    workdays: int
    effective: float
    span: int


@dataclass(frozen=True, slots=True)
class _Term:
    """One term of a contract: its days, annual value (contract currency) and tier."""

    start: date
    end: date
    value: Decimal
    tier: str


def _rng(seed: int, end_date: date, size: WorldSize, section: str) -> random.Random:
    return random.Random(f"{seed}:{end_date}:{size.customers}:{size.machines}:{size.years}:"
                         f"{section}")


def _weighted(rng: random.Random, items: list[Any], weights: list[float]) -> Any:
    return rng.choices(items, weights=weights, k=1)[0]


def _money(value: float) -> Decimal:
    return Decimal(f"{value:.2f}")


def _at(day: date, hours: float = 0.0) -> datetime:
    return datetime.combine(day, time(0), tzinfo=UTC) + timedelta(hours=hours)


def _poisson(rng: random.Random, lam: float) -> int:
    # Knuth's method: the rates here are small (faults per week).
    limit, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def _anniversary(year: int, month_day: tuple[int, int]) -> date:
    return date(year, month_day[0], month_day[1])


def _on_or_after(month_day: tuple[int, int], day: date) -> date:
    """The first anniversary on or after ``day``."""
    this_year = _anniversary(day.year, month_day)
    return this_year if this_year >= day else _anniversary(day.year + 1, month_day)


def _sbg_losses(n: int) -> tuple[list[float], float]:
    """P(T = t) for t = 1..n, and S(n), of the world's renewal propensities (Fader & Hardie 2007).

    The retention rate of period t is r_t = (beta + t - 1) / (alpha + beta + t - 1), so
    P(T = t) = S(t - 1) (1 - r_t) and S(t) = S(t - 1) r_t.
    """
    lost, survival = [], 1.0
    for t in range(1, n + 1):
        churn = RENEWAL_ALPHA / (RENEWAL_ALPHA + RENEWAL_BETA + t - 1)
        lost.append(survival * churn)
        survival *= 1 - churn
    return lost, survival


@dataclass
class World:
    """A generated world: records per entity, exchange rates, machine plans and the truth."""

    seed: int
    end_date: date
    size: WorldSize
    window_start: date
    records: dict[str, list[Record]]
    exchange_rates: list[tuple[str, date, Decimal]]
    machines: list[MachinePlan]
    plans: dict[str, CustomerPlan]

    @property
    def weeks(self) -> int:
        """Weeks of history, the last one possibly partial."""
        return -(-(self.end_date - self.window_start).days // 7)

    def workdays(self, week: int) -> int:
        """Workdays (Mon-Fri) of ``week`` before ``end_date``."""
        monday = self.window_start + timedelta(weeks=week)
        return max(0, min(5, (self.end_date - monday).days))

    @classmethod
    def generate(cls, seed: int, end_date: date, customers: int = 300, machines: int = 1500,
                 years: int = 3) -> World:
        """Draw a world; the same arguments always give the same world."""
        if customers < 10 or machines < customers or years < 1:
            raise ValueError("a world needs at least 10 customers, a machine per customer and"
                             " a year")
        return _Builder(seed, end_date, WorldSize(customers, machines, years)).build()

    def rate(self, currency: str, day: date) -> float:
        """EUR per unit of ``currency`` on ``day``."""
        return _rate_lookup(self.exchange_rates, currency, day)


def _rate_lookup(rates: list[tuple[str, date, Decimal]], currency: str, day: date) -> float:
    best = None
    for cur, valid_from, rate in rates:
        if cur == currency and valid_from <= day:
            best = rate
    assert best is not None, f"no {currency} rate on {day}"
    return float(best)


class _Builder:
    """Draws one world, section by section."""

    def __init__(self, seed: int, end_date: date, size: WorldSize) -> None:
        self.seed, self.end_date, self.size = seed, end_date, size
        start = end_date - timedelta(days=365 * size.years)
        self.window_start = start + timedelta(days=(7 - start.weekday()) % 7)
        self.contracts_from = self.window_start - timedelta(days=CONTRACT_HISTORY_DAYS)
        self.records: dict[str, list[Record]] = defaultdict(list)
        self.plans: dict[str, CustomerPlan] = {}
        self.customers: list[Record] = []  # on the books when the window opens
        self.formers: list[Record] = []  # lost before it: only their contracts show
        self.names: set[str] = set()
        # Years of warranty of each customer's first machine (its first contract follows).
        self.first_warranty: dict[str, int] = {}
        # A former customer's machines, by model: none of them is in the installed base.
        self.former_fleet: dict[str, list[str]] = {}
        self.sites: dict[str, list[str]] = defaultdict(list)
        self.contacts: dict[str, list[str]] = defaultdict(list)
        self.country: dict[str, cat.Country] = {}
        self.industry: dict[str, str] = {}
        self.size_class: dict[str, str] = {}
        self.machines: list[MachinePlan] = []
        self.by_customer: dict[str, list[MachinePlan]] = defaultdict(list)
        self.models = {m.model: m for m in cat.MODELS}
        self.rates: list[tuple[str, date, Decimal]] = []
        self._rate_index: dict[str, tuple[list[int], list[float]]] = {}
        # EUR of OEM parts the hours imply, per customer and month index.
        self.implied_parts: dict[str, dict[int, float]] = defaultdict(lambda: defaultdict(float))
        # (start, end, tier) of contract cover per machine, for field-service billing.
        self.warranty: dict[str, date] = {}
        self.cover: dict[str, list[tuple[date, date, str]]] = defaultdict(list)
        self.invoice_seq = 0
        self.line_seq = 0
        self.order_seq = 0
        self.order_line_seq = 0

    def rng(self, section: str) -> random.Random:
        return _rng(self.seed, self.end_date, self.size, section)

    def build(self) -> World:
        self._exchange_rates()
        self._customers()
        self._relationships()
        self._churn_plan()
        self._formers()
        self._installed_base()
        self._operation()
        self._contracts()
        self._parts_orders()
        self._field_service()
        self._machine_sales()
        self._surveys()
        self._machine_models()
        order = ("customers", "sites", "contacts", "machine_models", "installed_base",
                 "service_contracts", "contract_renewals", "invoices", "invoice_lines", "orders",
                 "order_lines", "survey_responses")
        return World(self.seed, self.end_date, self.size, self.window_start,
                     {name: [strip_none(r) for r in self.records[name]] for name in order},
                     self.rates, self.machines, self.plans)

    # -- money ---------------------------------------------------------------------------

    def _exchange_rates(self) -> None:
        rng = self.rng("rates")
        # From the earliest contract start on (three years before the window).
        first = (self.window_start - timedelta(days=4 * 365)).replace(day=1)
        for currency, base in cat.BASE_RATES.items():
            days, values = [], []
            rate, month = base, first
            while month <= self.end_date:
                if currency != "EUR":
                    rate *= math.exp(rng.gauss(0, 0.012))
                value = Decimal(f"{rate:.8f}")
                self.rates.append((currency, month, value))
                days.append(month.toordinal())
                values.append(float(value))
                month = (month + timedelta(days=32)).replace(day=1)
            self._rate_index[currency] = (days, values)

    def eur_to(self, currency: str, eur: float, day: date) -> Decimal:
        days, values = self._rate_index[currency]
        rate = values[max(0, bisect_right(days, day.toordinal()) - 1)]
        return _money(eur / rate)

    # -- customers -----------------------------------------------------------------------

    def _customers(self) -> None:
        rng = self.rng("customers")
        for n in range(1, self.size.customers + 1):
            self.customers.append(self._customer(rng, n))

    def _customer(self, rng: random.Random, n: int, *, since: date | None = None) -> Record:
        """A customer with its traits, sites and contacts; ``since`` drawn unless given."""
        ext = f"C-{n:04d}"
        countries = list(cat.COUNTRIES)
        country = _weighted(rng, countries, [c.weight for c in countries])
        industry = _weighted(rng, [i for i, _ in cat.INDUSTRIES], [w for _, w in cat.INDUSTRIES])
        size_class = _weighted(rng, [s for s, _, _ in cat.SIZE_CLASSES],
                               [w for _, w, _ in cat.SIZE_CLASSES])
        if since is None:
            window_days = (self.end_date - self.window_start).days
            if rng.random() < 0.85:
                since = self.window_start - timedelta(days=rng.randint(200, 15 * 365))
            else:
                since = self.window_start + timedelta(days=rng.randint(0, int(window_days * 0.7)))
        key = rng.random() < {"enterprise": 0.7, "large": 0.3, "medium": 0.05}.get(
            size_class, 0.0)
        name = self._name(rng, country, industry, self.names)
        record: Record = {"external_id": ext, "name": name, "industry": industry,
                          "country": country.code, "size_class": size_class,
                          "key_account": key, "customer_since": since,
                          "source_updated_at": _at(max(since, self.window_start), 8)}
        self.records["customers"].append(record)
        self.country[ext], self.industry[ext], self.size_class[ext] = (
            country, industry, size_class)
        self.plans[ext] = CustomerPlan(ext, self._traits(rng, industry, size_class, key))
        for _ in range({"small": 1, "medium": 1, "large": rng.randint(1, 3),
                        "enterprise": rng.randint(2, 4)}[size_class]):
            site_country = country if rng.random() < 0.85 or not self.sites[ext] else (
                _weighted(rng, countries, [c.weight for c in countries]))
            city = rng.choice(site_country.cities)
            site = f"S-{len(self.records['sites']) + 1:05d}"
            self.records["sites"].append({
                "external_id": site, "customer_external_id": ext,
                "name": f"{name.split()[0]} {city}", "country": site_country.code,
                "city": city, "source_updated_at": record["source_updated_at"]})
            self.sites[ext].append(site)
        domain = "".join(ch for ch in name.split()[0].lower() if ch.isascii() and ch.isalpha())
        for k in range({"small": 1, "medium": 2, "large": 3, "enterprise": 4}[size_class]):
            first, last = rng.choice(cat.FIRST_NAMES), rng.choice(country.surnames)
            plain = "".join(ch for ch in last.lower() if ch.isascii() and ch.isalpha())
            contact = f"K-{len(self.records['contacts']) + 1:05d}"
            self.records["contacts"].append({
                "external_id": contact, "customer_external_id": ext,
                "site_external_id": self.sites[ext][k % len(self.sites[ext])],
                "name": f"{first} {last}", "role": cat.ROLES[k % len(cat.ROLES)],
                "email": f"{first.lower()}.{plain or 'x'}@{domain or 'example'}.example",
                "phone": f"+{rng.randint(10, 99)} {rng.randint(100, 999)}"
                         f" {rng.randint(1000, 9999)}",
                "source_updated_at": record["source_updated_at"]})
            self.contacts[ext].append(contact)
        return record

    @staticmethod
    def _name(rng: random.Random, country: cat.Country, industry: str, taken: set[str]) -> str:
        tries = 0
        while True:
            surname = rng.choice(country.surnames)
            if rng.random() < 0.3:
                surname = f"{surname} & {rng.choice(country.surnames)}"
            word = rng.choice(cat.INDUSTRY_WORDS[industry])
            if tries >= 50:
                # The country's plain names of the industry are taken (a world of thousands):
                # a company named after its town, then one numbered, always ends the search.
                word += f" {rng.choice(country.cities)}"
                if tries >= 200:
                    word += f" {tries - 198}"
            tries += 1
            name = f"{surname} {word} {rng.choice(country.legal_forms)}"
            if name not in taken:
                taken.add(name)
                return name

    @staticmethod
    def _traits(rng: random.Random, industry: str, size_class: str, key: bool) -> Traits:
        shifts = _weighted(rng, [1, 2, 3], list(cat.SHIFT_WEIGHTS[industry]))
        habit_elsewhere = rng.random() < 0.2
        chronic_late = rng.random() < 0.18
        grumpy = rng.random() < 0.15
        return Traits(
            shifts=shifts,
            availability=rng.uniform(0.5, 0.88),
            parts_capture=rng.uniform(0.08, 0.35) if habit_elsewhere else rng.uniform(0.6, 0.95),
            adherence=rng.uniform(0.55, 0.8) if rng.random() < 0.2 else rng.uniform(0.82, 0.98),
            pay_delay_days=rng.uniform(15, 45) if chronic_late else rng.gauss(1, 4),
            response_rate=rng.uniform(0.15, 0.9),
            satisfaction=rng.uniform(5.0, 7.0) if grumpy else rng.uniform(7.3, 9.6),
            coverage=rng.uniform(0.4, 1.0),
            auto_renew=rng.random() < 0.6,
            notice_days=rng.choice((30, 60, 90, 90)),
            tier=_weighted(rng, [t for t, _, _ in cat.TIERS], [w for _, w, _ in cat.TIERS]),
            customer_scope=key or (size_class == "enterprise" and rng.random() < 0.3),
            anniversary=(rng.randint(1, 12), rng.randint(1, 28)),
        )

    # -- the hidden plan -----------------------------------------------------------------

    def _term_ends(self, plan: CustomerPlan, after: date, until: date) -> list[date]:
        """Contract term ends (the day before an anniversary) in (after, until]."""
        ends = []
        for year in range(after.year - 1, until.year + 2):
            end = _anniversary(year, plan.traits.anniversary) - timedelta(days=1)
            if after < end <= until:
                ends.append(end)
        return ends

    def _relationships(self) -> None:
        """When each customer's first recorded service contract starts, and its anniversary.

        A customer-scope contract covers the customer from its first day; machine contracts
        begin when the first machine's warranty ends. A relationship older than the ERP's
        contract records shows from its first anniversary in them (the ERP's first term of
        it); a younger one is co-termed to its own start, so every renewal decision falls in
        its own contract year.
        """
        rng = self.rng("relationships")
        for c in self.customers:
            ext = c["external_id"]
            plan = self.plans[ext]
            self.first_warranty[ext] = rng.choice((1, 1, 2))
            since: date = c["customer_since"]
            start = since if plan.traits.customer_scope else since + timedelta(
                days=365 * self.first_warranty[ext])
            if start < self.contracts_from:
                start = _on_or_after(plan.traits.anniversary, self.contracts_from)
            else:
                plan.traits.anniversary = (start.month, min(start.day, 28))
            plan.contract_start = start if start < self.end_date else None

    def _renewals(self, plan: CustomerPlan, until: date) -> list[date]:
        """Renewal decisions (term ends) of the customer's relationship, up to ``until``."""
        if plan.contract_start is None:
            return []
        return self._term_ends(plan, plan.contract_start, until)

    def _churn_plan(self) -> None:
        """Who lets the contracts lapse at which renewal, and who shows warnings beforehand."""
        rng = self.rng("churn")
        last = self.end_date - timedelta(days=1)
        renewals = {c["external_id"]: self._renewals(self.plans[c["external_id"]], last)
                    for c in self.customers}
        self._propensities(rng, renewals)
        for c in self.customers:
            plan = self.plans[c["external_id"]]
            assert plan.churn_probability is not None
            for end in renewals[c["external_id"]]:
                if end >= self.window_start and rng.random() < plan.churn_probability:
                    plan.churn_date = end
                    break
        churners = [self.plans[c["external_id"]] for c in self.customers
                    if self.plans[c["external_id"]].churned]
        silent = set(rng.sample(range(len(churners)), round(SILENT_SHARE * len(churners))))
        for i, plan in enumerate(churners):
            if i in silent:
                plan.silent_churn = True
            else:
                self._warn(rng, plan)
        since = {c["external_id"]: c["customer_since"] for c in self.customers}
        staying = [ext for ext in since if not self.plans[ext].churned]
        for ext in rng.sample(staying, round(FALSE_ALARM_SHARE * len(staying))):
            self._false_alarm(rng, self.plans[ext], since[ext])

    def _propensities(self, rng: random.Random, renewals: dict[str, list[date]]) -> None:
        """Each customer's chance of lapsing at a renewal.

        A customer who renewed n times before the window is a survivor of n renewals: its
        chance is drawn from beta(alpha, beta + n), the world's beta conditioned on that. The
        chances drawn for one n are handed out in the order of weighted random keys
        (Efraimidis-Spirakis), so customers without auto-renew, small ones and non-key accounts
        hold the higher ones more often while the chances keep their distribution.
        """
        groups: dict[int, list[str]] = defaultdict(list)
        key_accounts = {c["external_id"]: bool(c["key_account"]) for c in self.customers}
        for c in self.customers:
            ext = c["external_id"]
            groups[sum(1 for e in renewals[ext] if e < self.window_start)].append(ext)
        for n, members in sorted(groups.items()):
            chances = sorted((rng.betavariate(RENEWAL_ALPHA, RENEWAL_BETA + n)
                              for _ in members), reverse=True)
            keys = {ext: rng.random() ** (1 / self._churn_weight(ext, key_accounts[ext]))
                    for ext in members}
            for ext, chance in zip(sorted(members, key=keys.__getitem__, reverse=True), chances,
                                   strict=True):
                self.plans[ext].churn_probability = chance

    def _churn_weight(self, ext: str, key: bool) -> float:
        t = self.plans[ext].traits
        return ((2.0 if not t.auto_renew else 1.0)
                * {"small": 1.6, "medium": 1.2, "large": 0.7, "enterprise": 0.5}[
                    self.size_class[ext]]
                * (0.35 if key else 1.0))

    def _warn(self, rng: random.Random, plan: CustomerPlan) -> None:
        """A churner's warning: one to three causes ramping up to the churn over its lead."""
        assert plan.churn_date is not None
        room = (plan.churn_date - self.window_start).days - 60
        lead = rng.randint(90, 120) if rng.random() < 0.15 else rng.randint(150, 365)
        lead = max(60, min(lead, room))
        start = plan.churn_date - timedelta(days=lead)
        causes = self._causes(rng, rng.choices((1, 2, 3), weights=(35, 40, 25))[0])
        plan.warning = Warning(causes, start, plan.churn_date, 1.0)
        plan.depth = self._depths(rng)

    def _false_alarm(self, rng: random.Random, plan: CustomerPlan, since: date) -> None:
        """Warnings on a customer who stays: they ramp up, and most of them recover."""
        lo = max(self.window_start + timedelta(days=90), since + timedelta(days=60))
        hi = self.end_date - timedelta(days=60)
        if lo >= hi:
            return
        start = lo + timedelta(days=rng.randint(0, (hi - lo).days))
        recovered = (start + timedelta(days=rng.randint(150, 300))
                     if rng.random() < 0.6 else None)
        plan.false_alarm = True
        plan.warning = Warning(self._causes(rng, rng.choice((1, 2))), start,
                               start + timedelta(days=rng.randint(60, 120)),
                               rng.uniform(0.5, 1.0), recovered)
        plan.depth = self._depths(rng)

    def _formers(self) -> None:
        """Customers lost before the window, whose relationships began with those on the books.

        A customer on the books that renewed n times before the window is the survivor of the
        relationships that began with it: those lost meanwhile number k with probability
        (1 - S(n))^k S(n), S(n) the sBG's survival to n, and each was lost at renewal t <= n
        with probability P(T = t) / (1 - S(n)). With them every cohort of relationships the
        ERP's contracts begin is whole. A former customer keeps its record and its expired
        customer-scope contract; its machines left the installed base with it.
        """
        rng = self.rng("formers")
        number = len(self.customers)
        for c in list(self.customers):
            plan = self.plans[c["external_id"]]
            before = self._renewals(plan, self.window_start - timedelta(days=1))
            if not before:
                continue
            lost, survival = _sbg_losses(len(before))
            while rng.random() >= survival:
                number += 1
                former = self._customer(rng, number, since=c["customer_since"])
                ext = former["external_id"]
                fate = self.plans[ext]
                fate.traits.customer_scope = True
                fate.traits.anniversary = plan.traits.anniversary
                fate.contract_start = plan.contract_start
                fate.churn_date = before[rng.choices(range(len(before)), weights=lost)[0]]
                self.former_fleet[ext] = [
                    _weighted(rng, list(cat.MODELS), [m.weight for m in cat.MODELS]).model
                    for _ in range(rng.randint(1, 4))]
                self.formers.append(former)

    @staticmethod
    def _causes(rng: random.Random, k: int) -> tuple[str, ...]:
        chosen: list[str] = []
        while len(chosen) < k:
            cause = rng.choices(CAUSES, weights=CAUSE_WEIGHTS)[0]
            if cause not in chosen:
                chosen.append(cause)
        return tuple(c for c in CAUSES if c in chosen)

    @staticmethod
    def _depths(rng: random.Random) -> dict[str, float]:
        return {"utilisation_decline": rng.uniform(0.35, 0.7),
                "skipped_maintenance": rng.uniform(0.6, 0.9),
                "parts_elsewhere": rng.uniform(0.6, 0.9),
                "late_payments": rng.uniform(30, 80),
                "detractor_nps": rng.uniform(4.0, 6.0),
                "survey_silence": rng.uniform(0.75, 0.95)}

    # -- installed base ------------------------------------------------------------------

    def _installed_base(self) -> None:
        rng = self.rng("installed_base")
        size_weight = {s: w for s, _, w in cat.SIZE_CLASSES}
        weights = [size_weight[self.size_class[c["external_id"]]] * rng.lognormvariate(0, 0.35)
                   for c in self.customers]
        total = sum(weights)
        raw = [self.size.machines * w / total for w in weights]
        counts = [max(1, int(r)) for r in raw]
        by_remainder = sorted(range(len(raw)), key=lambda i: raw[i] - int(raw[i]), reverse=True)
        i = 0
        while sum(counts) < self.size.machines:
            counts[by_remainder[i % len(raw)]] += 1
            i += 1
        while sum(counts) > self.size.machines:
            counts[max(range(len(counts)), key=counts.__getitem__)] -= 1
        models = list(cat.MODELS)
        n = 0
        last_day = self.end_date - timedelta(days=14)
        for customer, count in zip(self.customers, counts, strict=True):
            ext = customer["external_id"]
            plan = self.plans[ext]
            since: date = customer["customer_since"]
            cap = last_day
            if plan.churned:
                # Churners buy no machine in their last year.
                assert plan.churn_date is not None
                cap = min(cap, plan.churn_date - timedelta(days=400))
            cap = max(cap, since)
            for k in range(count):
                n += 1
                model = _weighted(rng, models, [m.weight for m in models])
                commissioned = since if k == 0 else since + timedelta(
                    days=rng.randint(0, (cap - since).days))
                # The first machine's warranty was drawn with the relationship it begins.
                years = self.first_warranty[ext] if k == 0 else rng.choice((1, 1, 2))
                warranty_end = commissioned + timedelta(days=365 * years - 1)
                self.warranty[f"IB-{n:05d}"] = warranty_end
                serial = f"{model.model.replace('-', '')}-{commissioned.year % 100:02d}{n:05d}"
                record = {"external_id": f"IB-{n:05d}", "serial": serial, "model": model.model,
                          "customer_external_id": ext,
                          "site_external_id": rng.choice(self.sites[ext]),
                          "commissioned_on": commissioned, "warranty_end": warranty_end,
                          "source_updated_at": _at(max(commissioned, self.window_start), 9)}
                self.records["installed_base"].append(record)
                machine = MachinePlan(record["external_id"], serial, model.model, ext,
                                      commissioned, plan.traits.shifts, 0, [], 0.0)
                self.machines.append(machine)
                self.by_customer[ext].append(machine)

    # -- operation: hours, services, faults ------------------------------------------------

    def _operation(self) -> None:
        rng = self.rng("operation")
        weeks = -(-(self.end_date - self.window_start).days // 7)
        # A slow industry cycle hits every customer of an industry alike (a confounder).
        cycle: dict[str, list[float]] = {}
        for industry, _ in cat.INDUSTRIES:
            x, values = 0.0, []
            for w in range(weeks):
                if w % 4 == 0:
                    x = 0.85 * x + rng.gauss(0, 0.05)
                values.append(1 + x)
            cycle[industry] = values
        for m in self.machines:
            self._operate(rng, m, weeks, cycle[self.industry[m.customer_external_id]])

    def _operate(self, rng: random.Random, m: MachinePlan, weeks: int,
                 cycle: list[float]) -> None:
        """A machine's weeks: operating hours, the services done or skipped, its faults."""
        plan = self.plans[m.customer_external_id]
        model = self.models[m.model]
        span = cat.SHIFT_SPAN[m.shifts]
        base = 5 * span * plan.traits.availability * rng.uniform(0.8, 1.15)
        first_monday = m.commissioned_on + timedelta(days=7 - m.commissioned_on.weekday())
        m.first_week = max(0, -(-(first_monday - self.window_start).days // 7))
        years_before = max(0.0, (self.window_start - m.commissioned_on).days / 365.25)
        m.hours_at_start = round(years_before * 52 * base * 0.9, 2)
        # A machine moved to other work for a while: a dip that is no churn signal.
        dip_at = rng.randrange(weeks) if rng.random() < 0.12 else -1
        length, depth = rng.randint(6, 20), rng.uniform(0.3, 0.6)
        dip = _Dip(dip_at, dip_at + length, depth) if dip_at >= 0 else _Dip(0, 0, 0.0)
        upkeep = _Upkeep(rng.uniform(0, model.service_interval_hours),
                         rng.uniform(0, model.service_interval_days))
        if plan.churned and rng.random() < 0.7:
            assert plan.churn_date is not None
            m.silent_from = plan.churn_date + timedelta(days=rng.randint(0, 60))
        total = m.hours_at_start
        for w in range(m.first_week, weeks):
            monday = self.window_start + timedelta(weeks=w)
            hours = self._week_hours(rng, plan, monday, capacity=5 * span,
                                     base=base * cycle[w] * dip.factor(w))
            m.weekly_hours.append(hours)
            workdays = min(5, max(0, (self.end_date - monday).days))
            effective = hours * workdays / 5
            total += effective
            month = (monday.year - self.window_start.year) * 12 + monday.month
            self.implied_parts[m.customer_external_id][month] += (
                effective * model.parts_value_per_1000h / 1000)
            if effective == 0:
                upkeep.since_days += 7
                continue
            week = _Week(monday, workdays, effective, span)
            self._service(rng, m, plan, upkeep, week)
            self._faults(rng, m, upkeep, week)
        m.hours_at_end = round(total, 2)

    def _week_hours(self, rng: random.Random, plan: CustomerPlan, monday: date, *,
                    capacity: float, base: float) -> float:
        """Operating hours of a full week: holidays, season, the customer's decline, noise."""
        day = (monday + timedelta(days=3)).toordinal()
        holidays = dict(self.country[plan.external_id].holiday_weeks)
        factor = holidays.get(monday.isocalendar().week, 1.0)
        factor *= 1 + 0.06 * math.sin(2 * math.pi * (monday.timetuple().tm_yday - 80) / 365)
        factor *= 1 - plan.depth.get("utilisation_decline", 0) * plan.signal(
            "utilisation_decline", day)
        if plan.gone(day):
            factor *= 0.8
        hours = min(capacity, base * factor * rng.lognormvariate(0, 0.1))
        return 0.0 if hours < 1.25 else round(hours, 3)

    def _service(self, rng: random.Random, m: MachinePlan, plan: CustomerPlan,
                 upkeep: _Upkeep, week: _Week) -> None:
        """Maintenance: due by hours or by days, whichever first; done, late, or skipped."""
        model = self.models[m.model]
        day = (week.monday + timedelta(days=3)).toordinal()
        upkeep.since_hours += week.effective
        upkeep.since_days += 7
        if (upkeep.since_hours < model.service_interval_hours
                and upkeep.since_days < model.service_interval_days):
            return
        # Skipped: the OEM never comes for this service (the customer's own staff or a third
        # party does it, or no one); sloppy customers skip some all the time.
        adherence = plan.traits.adherence
        skip = max(0.3 * (1 - adherence), plan.depth.get(
            "skipped_maintenance", 0) * plan.signal("skipped_maintenance", day))
        chance = adherence if upkeep.overdue_weeks < 2 else 0.3
        if plan.gone(day) or (upkeep.overdue_weeks == 0 and rng.random() < skip):
            upkeep.since_hours = upkeep.since_days = 0.0
        elif rng.random() < chance:
            when = _at(week.monday + timedelta(days=rng.randrange(week.workdays)),
                       6 + rng.randint(0, min(week.span, 8) - 1) + 1 / 6)
            m.services.append((when, f"PM-{model.service_interval_hours}h",
                               upkeep.overdue_weeks < 2))
            upkeep.since_hours = upkeep.since_days = 0.0
            upkeep.overdue_weeks = 0
        else:
            upkeep.overdue_weeks += 1

    @staticmethod
    def _faults(rng: random.Random, m: MachinePlan, upkeep: _Upkeep, week: _Week) -> None:
        """Faults of a week: worn machines (service overdue a month) fail more often."""
        rate = 3.0 * (2.5 if upkeep.overdue_weeks > 4 else 1.0)
        for _ in range(_poisson(rng, week.effective / 1000 * rate)):
            duration = rng.randint(1, 5)
            start = rng.randint(0, week.span - duration - 1)
            when = _at(week.monday + timedelta(days=rng.randrange(week.workdays)),
                       6 + start + 17 / 60)
            m.faults.append((when, duration, rng.choice(cat.FAULT_CODES)))

    # -- contracts -----------------------------------------------------------------------

    def _contracts(self) -> None:
        rng = self.rng("contracts")
        n = 0
        invoices: dict[tuple[str, date], list[Record]] = defaultdict(list)
        for customer in (*self.customers, *self.formers):
            plan = self.plans[customer["external_id"]]
            for first, (machine, starts_on) in enumerate(self._scopes(rng, customer, plan)):
                n += 1
                # Only a customer's further contracts lapse on their own (a machine sold): a
                # customer who lets every contract lapse is a churner, and the truth says so.
                self._contract(rng, customer, plan, machine=machine, starts_on=starts_on, n=n,
                               invoices=invoices, may_lapse=first > 0)
        for (ext, day), lines in sorted(invoices.items()):
            self._invoice(rng, ext, day, lines)

    def _scopes(self, rng: random.Random, customer: Record, plan: CustomerPlan,
                ) -> list[tuple[MachinePlan | None, date]]:
        """What each of the customer's contracts covers (None: the customer), and its start.

        The first one starts the relationship (``contract_start``): customer-scope, or the
        first machine's. Further machines join once their warranty ends, each with the
        customer's ``coverage``, never before the first contract.
        """
        start = plan.contract_start
        if start is None:
            return []
        if plan.traits.customer_scope:
            return [(None, start)]
        machines = self.by_customer[customer["external_id"]]
        scopes: list[tuple[MachinePlan | None, date]] = [(machines[0], start)]
        for m in machines[1:]:
            if rng.random() >= plan.traits.coverage:
                continue
            begins = max(self._warranty_end(m) + timedelta(days=1), start)
            if plan.churn_date is not None:
                # A churner's contracts all run until the churn: some started at
                # commissioning, inside the warranty (premium buyers do that).
                begins = max(start, min(begins, max(m.commissioned_on,
                                                    plan.churn_date - timedelta(days=200))))
            if begins < self.end_date:
                scopes.append((m, begins))
        return scopes

    def _warranty_end(self, m: MachinePlan) -> date:
        return self.warranty[m.external_id]

    def _contract_value_eur(self, plan: CustomerPlan, machine: MachinePlan | None,
                            day: date) -> float:
        tier = cat.TIER_FACTOR[plan.traits.tier]
        if machine is not None:
            return self.models[machine.model].contract_eur * tier
        fleet = self.by_customer[plan.external_id]
        covered = [m.model for m in fleet if m.commissioned_on <= day] or [
            m.model for m in fleet[:1]] or self.former_fleet.get(plan.external_id, [])
        return 0.9 * tier * sum(self.models[model].contract_eur for model in covered)

    def _contract(self, rng: random.Random, customer: Record, plan: CustomerPlan, *,
                  machine: MachinePlan | None, starts_on: date, n: int,
                  invoices: dict[tuple[str, date], list[Record]], may_lapse: bool) -> None:
        """A contract, its renewal decisions term by term, and its terms' invoices."""
        ext = customer["external_id"]
        contract_id = f"SC-{n:05d}"
        ends = self._term_ends(plan, starts_on + timedelta(days=60), self.end_date + timedelta(
            days=800))
        value = self.eur_to(self.country[ext].currency,
                            self._contract_value_eur(plan, machine, starts_on), starts_on)
        last = _Term(starts_on, ends[0], value, plan.traits.tier)
        term: _Term | None = last
        renewals: list[Record] = []
        while term is not None:
            last = term
            self._term(ext, contract_id, machine, term, invoices)
            if term.end >= self.end_date:
                break
            renewal, term = self._renewal(rng, plan, contract_id, machine=machine, term=term,
                                          k=len(renewals) + 1, may_lapse=may_lapse)
            renewals.append(renewal)
        t = plan.traits
        last_change = renewals[-1]["decided_on"] if renewals else starts_on
        self.records["service_contracts"].append({
            "external_id": contract_id, "customer_external_id": ext,
            "installed_base_external_id": machine.external_id if machine else None,
            "scope": "machine" if machine else "customer",
            "contract_number": f"SV{starts_on.year}-{n:05d}", "tier": last.tier,
            "starts_on": starts_on, "ends_on": last.end,
            "notice_period_days": t.notice_days, "auto_renew": t.auto_renew,
            "annual_value": last.value, "currency": self.country[ext].currency,
            "status": "expired" if term is None else "active",
            "source_updated_at": _at(min(last_change, self.end_date - timedelta(days=1)), 10)})
        for renewal in renewals:
            renewal["source_updated_at"] = _at(renewal["decided_on"], 11)
        self.records["contract_renewals"].extend(renewals)

    def _term(self, ext: str, contract_id: str, machine: MachinePlan | None, term: _Term,
              invoices: dict[tuple[str, date], list[Record]]) -> None:
        """A term's invoice line, in advance (inside the window only), and the cover it gives."""
        if term.start >= self.window_start:
            share = Decimal((term.end - term.start).days + 1) / Decimal(365)
            invoices[(ext, term.start)].append({
                "kind": "service_contract", "product_code": f"SERVICE-{term.tier.upper()}",
                "description": f"Service contract {contract_id} {term.tier}"
                               f" {term.start:%Y-%m-%d} to {term.end:%Y-%m-%d}",
                "net_amount": (term.value * share).quantize(CENT),
                "installed_base_external_id": machine.external_id if machine else None,
                "contract_external_id": contract_id})
        for m in [machine] if machine is not None else self.by_customer[ext]:
            self.cover[m.external_id].append((term.start, term.end, term.tier))

    def _renewal(self, rng: random.Random, plan: CustomerPlan, contract_id: str, *,
                 machine: MachinePlan | None, term: _Term, k: int, may_lapse: bool,
                 ) -> tuple[Record, _Term | None]:
        """The k-th renewal decision, at ``term``'s end, and the term it begins (None: lapsed)."""
        t = plan.traits
        renewal: Record = {"external_id": f"RN-{contract_id[3:]}-{k:02d}",
                           "contract_external_id": contract_id,
                           "previous_ends_on": term.end, "previous_value": term.value}
        if term.end == plan.churn_date or (may_lapse and not plan.churned
                                           and rng.random() < 0.025):
            notice = t.notice_days + rng.randint(0, 30)
            renewal |= {"outcome": "lapsed", "decided_on": term.end - timedelta(
                days=notice if t.auto_renew else 0)}
            return renewal, None
        worry = plan.any_signal(term.end.toordinal())
        next_end = self._term_ends(plan, term.end, term.end + timedelta(days=400))[0]
        outcome, tier, growth = "renewed", term.tier, rng.uniform(1.015, 1.045)
        draw = rng.random()
        if draw < 0.03 + 0.25 * worry and tier != cat.TIER_ORDER[0]:
            outcome, tier = "downgraded", cat.TIER_ORDER[cat.TIER_ORDER.index(tier) - 1]
        elif draw > 0.95 + 0.05 * worry and tier != cat.TIER_ORDER[-1]:
            outcome, tier = "upgraded", cat.TIER_ORDER[cat.TIER_ORDER.index(tier) + 1]
        currency = self.country[plan.external_id].currency
        base_eur = self._contract_value_eur(plan, machine, term.end)
        value = self.eur_to(currency, base_eur * growth ** k * cat.TIER_FACTOR[tier]
                            / cat.TIER_FACTOR[t.tier], term.end)
        decided = term.end - timedelta(days=t.notice_days if t.auto_renew else
                                       rng.randint(5, 45))
        renewal |= {"outcome": outcome, "decided_on": decided, "new_ends_on": next_end,
                    "new_value": value}
        return renewal, _Term(term.end + timedelta(days=1), next_end, value, tier)

    # -- invoices ------------------------------------------------------------------------

    def _invoice(self, rng: random.Random, ext: str, issued: date, lines: list[Record],
                 status: str | None = None) -> str:
        """Write an invoice and its lines; payment follows the customer's habits."""
        self.invoice_seq += 1
        invoice_id = f"I-{self.invoice_seq:06d}"
        plan = self.plans[ext]
        country = self.country[ext]
        due = issued + timedelta(days=country.payment_days)
        delay = (plan.traits.pay_delay_days
                 + plan.depth.get("late_payments", 0) * plan.signal("late_payments",
                                                                    due.toordinal())
                 * rng.uniform(0.6, 1.2) + rng.gauss(0, 4))
        paid = max(issued + timedelta(days=1), due + timedelta(days=round(delay)))
        total = Decimal(0)
        for line in lines:
            self.line_seq += 1
            record = {"external_id": f"IL-{self.line_seq:07d}", "invoice_external_id": invoice_id,
                      **{k: v for k, v in line.items() if v is not None}}
            record["source_updated_at"] = _at(issued, 12)
            total += record["net_amount"]
            self.records["invoice_lines"].append(record)
        if status is None:
            status = "cancelled" if rng.random() < 0.004 else (
                "paid" if paid < self.end_date else "open")
        invoice: Record = {"external_id": invoice_id, "customer_external_id": ext,
                           "number": f"INV{issued.year}-{self.invoice_seq:06d}",
                           "issued_on": issued, "due_on": due,
                           "currency": country.currency, "net_amount": total, "status": status,
                           "source_updated_at": _at(paid if status == "paid" else issued, 16)}
        if status == "paid":
            invoice["paid_on"] = paid
        self.records["invoices"].append(invoice)
        return invoice_id

    # -- spare parts ---------------------------------------------------------------------

    def _parts_orders(self) -> None:
        rng = self.rng("parts")
        for customer in self.customers:
            ext = customer["external_id"]
            plan = self.plans[ext]
            currency = self.country[ext].currency
            machines = self.by_customer[ext]
            budget = 0.0
            for month, implied in sorted(self.implied_parts[ext].items()):
                year = self.window_start.year + (month - 1) // 12
                first = date(year, (month - 1) % 12 + 1, 1)
                mid = (first + timedelta(days=14)).toordinal()
                capture = plan.traits.parts_capture * (1 - plan.depth.get(
                    "parts_elsewhere", 0) * plan.signal("parts_elsewhere", mid))
                if plan.gone(mid):
                    capture *= 0.05
                budget += implied * capture * rng.lognormvariate(0, 0.25)
                orders = 0 if budget < 150 else 1 + (budget > 3000) + (budget > 8000)
                target = budget / max(1, orders)
                for _ in range(orders):
                    day = first + timedelta(days=rng.randint(0, 27))
                    if day >= self.end_date or day < self.window_start:
                        continue
                    budget -= self._parts_order(rng, ext, currency=currency, machines=machines,
                                                day=day, target=target)

    def _parts_order(self, rng: random.Random, ext: str, *, currency: str,
                     machines: list[MachinePlan], day: date, target: float) -> float:
        """One spare-parts order of about ``target`` EUR and its invoice; EUR spent."""
        self.order_seq += 1
        order_id = f"O-{self.order_seq:06d}"
        running = [m for m in machines if m.commissioned_on <= day] or machines[:1]
        lines: list[Record] = []
        spent = 0.0
        for _ in range(6):
            if spent >= 0.85 * target:
                break
            machine = rng.choice(running)
            parts = self.models[machine.model].parts
            affordable = [p for p in parts if p.price_eur <= max(target - spent, 95)] or [
                parts[0]]
            part = rng.choices(affordable, weights=[p.weight for p in affordable])[0]
            quantity = max(1, min(10, int((target - spent) / part.price_eur * rng.uniform(
                0.3, 0.8))))
            unit = self.eur_to(currency, part.price_eur, day)
            lines.append({"part_number": part.number, "description": part.description,
                          "quantity": Decimal(quantity), "unit_price": unit,
                          "net_amount": unit * quantity,
                          "installed_base_external_id": machine.external_id})
            spent += part.price_eur * quantity
        cancelled = rng.random() < 0.015
        recent = (self.end_date - day).days < 10
        status = "cancelled" if cancelled else ("confirmed" if recent else "delivered")
        total = sum((line["net_amount"] for line in lines), Decimal(0))
        self.records["orders"].append({
            "external_id": order_id, "customer_external_id": ext, "kind": "spare_parts",
            "number": f"SO{day.year}-{self.order_seq:06d}", "ordered_on": day, "status": status,
            "currency": currency, "net_amount": total, "source_updated_at": _at(day, 13)})
        for line in lines:
            self.order_line_seq += 1
            self.records["order_lines"].append({
                "external_id": f"OL-{self.order_line_seq:07d}", "order_external_id": order_id,
                **line, "source_updated_at": _at(day, 13)})
        if cancelled:
            return 0.0
        if not recent:
            issued = day + timedelta(days=rng.randint(2, 8))
            if issued < self.end_date:
                self._invoice(rng, ext, issued, [{
                    "kind": "spare_parts", "product_code": line["part_number"],
                    "description": line["description"], "quantity": line["quantity"],
                    "unit_price": line["unit_price"], "net_amount": line["net_amount"],
                    "installed_base_external_id": line["installed_base_external_id"]}
                    for line in lines])
        return spent

    # -- field service, machine sales, retrofits -----------------------------------------

    def _tier_on(self, machine: MachinePlan, day: date) -> str | None:
        for start, end, tier in self.cover.get(machine.external_id, ()):
            if start <= day <= end:
                return tier
        return None

    def _field_service(self) -> None:
        rng = self.rng("field_service")
        visits: list[tuple[date, MachinePlan, str, float]] = []
        for m in self.machines:
            visits.extend((when.date(), m, "maintenance", rng.uniform(4, 8))
                          for when, _, _ in m.services)
            visits.extend((when.date(), m, "repair", rng.uniform(2, 10))
                          for when, _, _ in m.faults if rng.random() < 0.25
                          and not self.plans[m.customer_external_id].gone(when.toordinal()))
        visits.sort(key=lambda v: (v[0], v[1].external_id, v[2]))
        for day, m, what, hours in visits:
            tier = self._tier_on(m, day)
            share = {None: 1.0, "basic": 0.5, "plus": 0.5 if what == "repair" else 0.0,
                     "premium": 0.0}[tier]
            if share == 0 or day >= self.end_date - timedelta(days=3):
                continue
            ext = m.customer_external_id
            currency = self.country[ext].currency
            rate = self.eur_to(currency, 95 * share, day)
            travel = self.eur_to(currency, 180, day)
            labour = (rate * Decimal(f"{hours:.1f}")).quantize(CENT)
            self.order_seq += 1
            order_id = f"O-{self.order_seq:06d}"
            self.records["orders"].append({
                "external_id": order_id, "customer_external_id": ext, "kind": "service",
                "number": f"SO{day.year}-{self.order_seq:06d}", "ordered_on": day,
                "status": "delivered", "currency": currency, "net_amount": labour + travel,
                "source_updated_at": _at(day, 14)})
            for code, text, qty, unit, amount in (
                    ("LABOUR", f"{what.capitalize()} labour", Decimal(f"{hours:.1f}"), rate,
                     labour),
                    ("TRAVEL", "Travel flat rate", Decimal(1), travel, travel)):
                self.order_line_seq += 1
                self.records["order_lines"].append({
                    "external_id": f"OL-{self.order_line_seq:07d}", "order_external_id": order_id,
                    "part_number": code, "description": text, "quantity": qty,
                    "unit_price": unit, "net_amount": amount,
                    "installed_base_external_id": m.external_id,
                    "source_updated_at": _at(day, 14)})
            self._invoice(rng, ext, day + timedelta(days=2), [
                {"kind": "field_service", "product_code": "LABOUR",
                 "description": f"{what.capitalize()} {m.serial}",
                 "quantity": Decimal(f"{hours:.1f}"), "unit_price": rate, "net_amount": labour,
                 "installed_base_external_id": m.external_id},
                {"kind": "field_service", "product_code": "TRAVEL", "description": "Travel",
                 "net_amount": travel, "installed_base_external_id": m.external_id}])

    def _machine_sales(self) -> None:
        rng = self.rng("sales")
        for m in self.machines:
            sold = m.commissioned_on - timedelta(days=rng.randint(0, 45))
            if sold < self.window_start:
                continue
            ext = m.customer_external_id
            model = self.models[m.model]
            price = self.eur_to(self.country[ext].currency,
                                model.price_eur * rng.uniform(0.85, 1.0), sold)
            self._invoice(rng, ext, sold, [{
                "kind": "new_machine", "product_code": model.model,
                "description": f"{model.name}, serial {m.serial}", "net_amount": price,
                "installed_base_external_id": m.external_id}])
        # Retrofits: loyal customers invest in the machines they keep.
        for customer in self.customers:
            ext = customer["external_id"]
            plan = self.plans[ext]
            for year in range(self.size.years):
                day = self.window_start + timedelta(days=365 * year + rng.randint(0, 364))
                if day >= self.end_date - timedelta(days=10) or plan.gone(day.toordinal()):
                    continue
                chance = 0.12 * math.sqrt(len(self.by_customer[ext])) * (
                    1 - plan.any_signal(day.toordinal()))
                if rng.random() < chance:
                    m = rng.choice(self.by_customer[ext])
                    amount = self.eur_to(self.country[ext].currency, rng.uniform(8e3, 60e3), day)
                    self._invoice(rng, ext, day, [{
                        "kind": "retrofit", "product_code": "RETROFIT",
                        "description": f"Control retrofit {m.serial}", "net_amount": amount,
                        "installed_base_external_id": m.external_id}])

    # -- voice of the customer -----------------------------------------------------------

    def _surveys(self) -> None:
        rng = self.rng("surveys")
        n = 0
        sends = sorted(date(y, mo, 15) for y in range(self.window_start.year,
                                                     self.end_date.year + 1)
                       for mo in (3, 6, 9, 12))
        for customer in self.customers:
            ext = customer["external_id"]
            plan = self.plans[ext]
            for send in sends:
                if not self.window_start <= send < self.end_date - timedelta(days=21):
                    continue
                day = send.toordinal()
                if send < customer["customer_since"] or plan.gone(day):
                    continue
                asked = self.contacts[ext][:2 if self.size_class[ext] in ("large",
                                                                         "enterprise") else 1]
                for contact in asked:
                    silence = plan.depth.get("survey_silence", 0) * plan.signal(
                        "survey_silence", day)
                    if rng.random() >= plan.traits.response_rate * (1 - silence):
                        continue
                    mean = plan.traits.satisfaction - plan.depth.get(
                        "detractor_nps", 0) * plan.signal("detractor_nps", day)
                    score = max(0, min(10, round(rng.gauss(mean, 1.2))))
                    n += 1
                    answered = _at(send + timedelta(days=rng.randint(1, 20)),
                                   rng.uniform(7, 17))
                    record: Record = {"external_id": f"NPS-{n:06d}", "customer_external_id": ext,
                                      "contact_external_id": contact, "answered_at": answered,
                                      "score": score, "source_updated_at": answered}
                    if rng.random() < (0.6 if score <= 6 else 0.3):
                        pool = (cat.COMMENTS_NEGATIVE if score <= 6 else cat.COMMENTS_NEUTRAL
                                if score <= 8 else cat.COMMENTS_POSITIVE)
                        record["comment"] = rng.choice(pool)
                    self.records["survey_responses"].append(record)

    def _machine_models(self) -> None:
        for model in cat.MODELS:
            self.records["machine_models"].append({
                "external_id": f"MM-{model.model}", "model": model.model,
                "service_interval_hours": model.service_interval_hours,
                "service_interval_days": model.service_interval_days,
                "parts_value_per_1000h": Decimal(model.parts_value_per_1000h),
                "currency": "EUR", "source_updated_at": _at(self.window_start, 7)})


def strip_none(record: Record) -> Record:
    """The record without absent values, as connectors yield it."""
    return {k: v for k, v in record.items() if v is not None}
