"""The fixed facts of the demo world: industries, countries, machine models, parts, words.

Figures are plausible for a mid-sized European machine-tool builder: list prices, service
intervals and parts wear per 1,000 operating hours of the order such builders publish; they are
not any one company's.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Country:
    """A customer country: its currency, payment terms and plant-holiday habits."""

    code: str
    currency: str
    weight: float
    payment_days: int
    cities: tuple[str, ...]
    legal_forms: tuple[str, ...]
    surnames: tuple[str, ...]
    # ISO weeks with a plant shutdown, and the share of capacity still used in them.
    holiday_weeks: tuple[tuple[int, float], ...]


COUNTRIES: tuple[Country, ...] = (
    Country("DE", "EUR", 30, 30, ("Stuttgart", "München", "Nürnberg", "Bielefeld", "Chemnitz",
                                  "Ulm", "Augsburg", "Kassel"),
            ("GmbH", "GmbH & Co. KG", "AG"),
            ("Müller", "Schmid", "Weber", "Becker", "Hoffmann", "Keller", "Brandt", "Vogel"),
            ((52, 0.05), (1, 0.3), (31, 0.5), (32, 0.5))),
    Country("AT", "EUR", 6, 30, ("Linz", "Graz", "Steyr", "Wels"), ("GmbH",),
            ("Gruber", "Huber", "Wimmer", "Moser"), ((52, 0.05), (1, 0.3), (32, 0.4))),
    Country("CH", "CHF", 6, 30, ("Winterthur", "Biel", "St. Gallen", "Aarau"), ("AG", "SA"),
            ("Meier", "Frei", "Baumann", "Zürcher"), ((52, 0.05), (1, 0.3), (30, 0.5))),
    Country("FR", "EUR", 10, 45, ("Lyon", "Annecy", "Toulouse", "Nantes", "Besançon"),
            ("SAS", "SA"), ("Dupont", "Moreau", "Lefèvre", "Girard", "Roux"),
            ((52, 0.05), (32, 0.15), (33, 0.15), (34, 0.4))),
    Country("IT", "EUR", 10, 60, ("Brescia", "Bergamo", "Torino", "Bologna", "Vicenza"),
            ("S.p.A.", "S.r.l."), ("Rossi", "Bianchi", "Colombo", "Ferrari", "Galli"),
            ((52, 0.05), (32, 0.1), (33, 0.1), (34, 0.5))),
    Country("PL", "PLN", 8, 30, ("Poznań", "Wrocław", "Łódź", "Bielsko-Biała"),
            ("Sp. z o.o.", "S.A."), ("Nowak", "Kowalski", "Wiśniewski", "Zieliński"),
            ((52, 0.1), (1, 0.5))),
    Country("US", "USD", 15, 30, ("Detroit", "Cleveland", "Charlotte", "Wichita", "Rockford",
                                  "Columbus"),
            ("Inc.", "LLC", "Corp."), ("Miller", "Anderson", "Parker", "Hayes", "Walsh"),
            ((52, 0.3), (27, 0.6), (47, 0.7))),
    Country("CN", "CNY", 10, 60, ("Suzhou", "Ningbo", "Dongguan", "Chongqing"),
            ("Co., Ltd.",), ("Zhang", "Wang", "Li", "Chen"), ((5, 0.1), (6, 0.4), (40, 0.5))),
)

# Units of EUR per unit of the currency at the start of the world; rates then walk monthly.
BASE_RATES: dict[str, float] = {"EUR": 1.0, "CHF": 1.04, "USD": 0.92, "PLN": 0.23, "CNY": 0.127}

INDUSTRIES: tuple[tuple[str, float], ...] = (
    ("automotive_supplier", 26), ("general_machining", 24), ("packaging", 12),
    ("food_beverage", 10), ("aerospace", 10), ("medical_devices", 10), ("energy", 8),
)
INDUSTRY_WORDS: dict[str, tuple[str, ...]] = {
    "automotive_supplier": ("Autoteile", "Drivetrain", "Components", "Präzisionsteile"),
    "general_machining": ("Zerspanung", "Machining", "Lohnfertigung", "Metalworks"),
    "packaging": ("Verpackungstechnik", "Packaging", "Pack Systems"),
    "food_beverage": ("Food Equipment", "Getränketechnik", "Process Parts"),
    "aerospace": ("Aerostructures", "Aero Components", "Luftfahrttechnik"),
    "medical_devices": ("Medical", "Medizintechnik", "Implants"),
    "energy": ("Energy Components", "Turbinenteile", "Hydraulics"),
}
# Shifts run per day, by industry: automotive runs around the clock, job shops one shift.
SHIFT_WEIGHTS: dict[str, tuple[float, float, float]] = {
    "automotive_supplier": (0.1, 0.4, 0.5), "general_machining": (0.5, 0.4, 0.1),
    "packaging": (0.3, 0.5, 0.2), "food_beverage": (0.3, 0.5, 0.2), "aerospace": (0.2, 0.5, 0.3),
    "medical_devices": (0.3, 0.5, 0.2), "energy": (0.3, 0.5, 0.2),
}
# Powered hours of a workday per number of shifts; three shifts leave a changeover gap.
SHIFT_SPAN = {1: 8, 2: 16, 3: 22}

SIZE_CLASSES: tuple[tuple[str, float, float], ...] = (
    # class, share of customers, relative number of machines
    ("small", 0.40, 1.5), ("medium", 0.35, 4.0), ("large", 0.18, 10.0), ("enterprise", 0.07, 24.0),
)


@dataclass(frozen=True, slots=True)
class Part:
    """A spare part of a model, its list price in EUR and how often wear consumes it."""

    number: str
    description: str
    price_eur: float
    weight: float


@dataclass(frozen=True, slots=True)
class MachineModel:
    """A model the OEM sells, with its service plan and parts wear."""

    model: str
    name: str
    service_interval_hours: int
    service_interval_days: int
    parts_value_per_1000h: int  # EUR of OEM parts normal wear consumes per 1,000 h
    price_eur: int
    contract_eur: int  # basic-tier service contract per machine and year
    weight: float
    parts: tuple[Part, ...]


def _parts(code: str, scale: float) -> tuple[Part, ...]:
    base = (("Filter kit", 95, 6), ("Way wiper set", 180, 4), ("Drive belt", 75, 3),
            ("Lubrication unit", 420, 2), ("Coolant pump", 650, 1.5), ("Tool clamp unit", 1250, 1),
            ("Spindle bearing set", 2800, 0.6), ("Ball screw", 3400, 0.4))
    return tuple(Part(f"P-{code}-{n:03d}", text, round(price * scale, 2), weight)
                 for n, (text, price, weight) in enumerate(base, start=1))


MODELS: tuple[MachineModel, ...] = (
    MachineModel("VMC-650", "Vertical machining centre 650", 500, 180, 1400, 185_000, 2_400, 30,
                 _parts("VMC650", 1.0)),
    MachineModel("VMC-1000", "Vertical machining centre 1000", 500, 180, 1900, 265_000, 3_200, 20,
                 _parts("VMC1000", 1.2)),
    MachineModel("HMC-630", "Horizontal machining centre 630", 1000, 365, 2600, 480_000, 5_200, 14,
                 _parts("HMC630", 1.6)),
    MachineModel("5AX-400", "5-axis machining centre 400", 500, 180, 3100, 620_000, 6_900, 10,
                 _parts("5AX400", 1.9)),
    MachineModel("TL-300", "CNC turning centre 300", 1000, 365, 1100, 150_000, 2_100, 18,
                 _parts("TL300", 0.8)),
    MachineModel("GR-800", "Cylindrical grinder 800", 2000, 365, 900, 340_000, 3_800, 8,
                 _parts("GR800", 1.1)),
)

TIERS: tuple[tuple[str, float, float], ...] = (
    # tier, share, price factor on the basic contract
    ("basic", 0.45, 1.0), ("plus", 0.35, 1.45), ("premium", 0.20, 2.1),
)
TIER_FACTOR = {tier: factor for tier, _, factor in TIERS}
TIER_ORDER = [tier for tier, _, _ in TIERS]

FIRST_NAMES = ("Anna", "Thomas", "Julia", "Marco", "Sophie", "Piotr", "Laura", "Daniel", "Chen",
               "Claire", "Stefan", "Elena", "Michael", "Katarzyna", "Luca", "Sarah", "Wei",
               "Jean", "Martina", "David")
ROLES = ("Maintenance manager", "Plant manager", "Purchasing", "Production manager",
         "Managing director", "Service coordinator")

FAULT_CODES = ("E101 spindle overload", "E107 axis following error", "E112 coolant low",
               "E118 lubrication pressure", "E123 tool changer timeout", "E131 door interlock",
               "E138 hydraulic pressure", "E140 encoder signal")

COMMENTS_POSITIVE = ("Reliable machines and a very responsive hotline.",
                     "Technician was excellent, fixed it the same day.",
                     "Spare parts always arrive next day.", "Great partner for years.")
COMMENTS_NEUTRAL = ("Machines are fine, service could be faster.",
                    "OK overall, invoices are sometimes hard to read.",
                    "Good machines, prices went up a lot.")
COMMENTS_NEGATIVE = ("Spare parts are far too expensive, we buy elsewhere now.",
                     "Technician came a week late, line stood still.",
                     "Too many faults on the new machine, no one cares.",
                     "We are reconsidering the service contract.",
                     "Hotline does not call back.")
