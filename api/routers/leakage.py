"""Leakage: after-sales revenue the installed base implies and the books do not show.

Machines under no contract, warranties ending with nothing to follow, and customers buying
fewer parts than their machines' operating hours imply (docs/api-maintenance.md).

Staff read (service, finance, viewer); it is the machine builder's view, not the portal's.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from analytics import leakage
from api.deps import Session, requires, settings_of
from api.models.leakage import PartsGap, UncoveredMachine, WarrantyEnding
from api.paging import Page
from api.responses import Format, list_response
from core.paging import PageRequest

router = APIRouter(prefix="/leakage", tags=["leakage"])
Reader = Annotated[Session, requires("service", "finance", "viewer")]
OptId = Annotated[int | None, Query(ge=1, le=2**31 - 1)]
Region = Annotated[str | None, Query(pattern=r"^[A-Z]{2}$", description="ISO country code")]
Limit = Annotated[int, Query(ge=1, le=1000)]


def _today() -> date:
    return datetime.now(UTC).date()


@router.get("/uncovered", response_model=Page[UncoveredMachine],
            summary="Machines under no contract")
async def uncovered(request: Request, session: Reader, *,
                    customer_id: OptId = None, region: Region = None,
                    model: Annotated[str | None, Query(max_length=100)] = None,
                    sort: Literal["serial", "-serial", "customer", "-customer"] = "serial",
                    limit: Limit = 50, cursor: str | None = None,
                    format: Format = "json") -> Response:
    """Installed machines no live contract covers today, on the machine or its customer."""
    filters = leakage.LeakageFilters(customer_id=customer_id, region=region, model=model)
    today = _today()

    async def fetch(conn: Any, page: PageRequest) -> Any:
        return await leakage.uncovered_page(conn, page, filters=filters, today=today)

    return await list_response(request, session, fetch=fetch,
                               item=lambda r: UncoveredMachine(**r), model=UncoveredMachine,
                               sort=sort, limit=limit, cursor=cursor, fmt=format,
                               filename="uncovered", key="installed_base_id")


@router.get("/warranty-ending", response_model=Page[WarrantyEnding],
            summary="Warranties ending with no contract")
async def warranty_ending(request: Request, session: Reader, *,
                          days: Annotated[int, Query(ge=0, le=3650)] = 90,
                          customer_id: OptId = None, region: Region = None,
                          sort: Literal["warranty_end", "-warranty_end", "serial",
                                        "-serial"] = "warranty_end",
                          limit: Limit = 50, cursor: str | None = None,
                          format: Format = "json") -> Response:
    """Machines whose warranty ends within ``days`` days and no contract covers the day after."""
    filters = leakage.LeakageFilters(customer_id=customer_id, region=region)
    today = _today()

    async def fetch(conn: Any, page: PageRequest) -> Any:
        return await leakage.warranty_ending_page(conn, page, filters=filters, today=today,
                                                  days=days)

    return await list_response(request, session, fetch=fetch,
                               item=lambda r: WarrantyEnding(**r), model=WarrantyEnding,
                               sort=sort, limit=limit, cursor=cursor, fmt=format,
                               filename="warranty-ending", key="installed_base_id")


@router.get("/parts-gap", response_model=Page[PartsGap],
            summary="Customers buying fewer parts than their hours imply")
async def parts_gap(request: Request, session: Reader, *,
                    days: Annotated[int, Query(ge=30, le=1095)] = leakage.PARTS_WINDOW_DAYS,
                    customer_id: OptId = None, region: Region = None,
                    sort: Literal["gap", "-gap", "customer", "-customer"] = "-gap",
                    limit: Limit = 50, cursor: str | None = None,
                    format: Format = "json") -> Response:
    """Customers buying fewer parts than their hours imply, over ``days`` days.

    Parts its operating hours imply, parts it bought, the gap (reporting currency).
    """
    filters = leakage.LeakageFilters(customer_id=customer_id, region=region)
    today = _today()
    currency = settings_of(request).reporting_currency

    async def fetch(conn: Any, page: PageRequest) -> Any:
        return await leakage.parts_gap_page(conn, page, filters=filters, today=today, days=days,
                                            reporting_currency=currency)

    return await list_response(request, session, fetch=fetch, item=lambda r: PartsGap(**r),
                               model=PartsGap, sort=sort, limit=limit, cursor=cursor,
                               fmt=format, filename="parts-gap", key="customer_id")
