"""The fake ERPs as the demo uses them: a world served by each, read by our own connectors into
the real database, and by third-party clients (Odoo's XML-RPC documentation example, pyodata).

A world round trip is checked field by field against the world's files, read with the files
connector's own models: the fields a vendor's API carries come back equal, through the ids the
loader says the connector stores; what it cannot carry is stated here, entity by entity, as the
fakes' docstrings and docs/erp-*.md say it.
"""

from __future__ import annotations

import xmlrpc.client
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from demo.erp import business_central as bc
from demo.erp import sap
from demo.erp.odoo import FakeOdoo, WorldLoader
from demo.erp.records import read_records
from demo.world import World, write_world
from erp_connectors.business_central import BusinessCentralConnector
from erp_connectors.files import ENTITY_MODELS
from erp_connectors.sap import SapConnector, SapMappings
from erp_connectors.sources import sync_sources
from erp_connectors.sync import Connector
from tests.integration.test_erp_odoo import world as hand_world
from tests.integration.test_erp_odoo import write_world as write_hand_world

END = date(2026, 5, 1)
Row = dict[str, Any]
Ids = dict[tuple[str, str], str]
REFS = {"customer_external_id": "customers", "site_external_id": "sites",
        "installed_base_external_id": "installed_base", "contract_external_id":
        "service_contracts", "invoice_external_id": "invoices", "order_external_id": "orders"}

# Every synced table read back with its parents' external ids, under the models' field names.
STORED = {
    "customers": "SELECT external_id, name, industry, country, size_class, key_account,"
                 " customer_since, source_updated_at FROM customers WHERE source = %(s)s",
    "sites": "SELECT s.external_id, c.external_id AS customer_external_id, s.name, s.country,"
             " s.city FROM sites s JOIN customers c ON c.id = s.customer_id"
             " WHERE s.source = %(s)s",
    "contacts": "SELECT external_id FROM contacts WHERE source = %(s)s",
    "machine_models": "SELECT external_id, model, service_interval_hours,"
                      " parts_value_per_1000h FROM machine_models WHERE source = %(s)s",
    "installed_base": "SELECT ib.external_id, ib.serial, ib.model, c.external_id AS"
                      " customer_external_id, s.external_id AS site_external_id,"
                      " ib.commissioned_on, ib.warranty_end, ib.source_updated_at"
                      " FROM installed_base ib JOIN customers c ON c.id = ib.customer_id"
                      " LEFT JOIN sites s ON s.id = ib.site_id WHERE ib.source = %(s)s",
    "service_contracts": "SELECT k.external_id, c.external_id AS customer_external_id,"
                         " ib.external_id AS installed_base_external_id, k.scope,"
                         " k.contract_number, k.tier, k.starts_on, k.ends_on, k.annual_value,"
                         " k.currency, k.status, k.source_updated_at FROM service_contracts k"
                         " JOIN customers c ON c.id = k.customer_id LEFT JOIN installed_base ib"
                         " ON ib.id = k.installed_base_id WHERE k.source = %(s)s",
    "contract_renewals": "SELECT external_id FROM contract_renewals WHERE source = %(s)s",
    "invoices": "SELECT i.external_id, c.external_id AS customer_external_id, i.number,"
                " i.issued_on, i.due_on, i.paid_on, i.currency, i.net_amount, i.status,"
                " i.source_updated_at FROM invoices i JOIN customers c ON c.id = i.customer_id"
                " WHERE i.source = %(s)s",
    "invoice_lines": "SELECT l.external_id, i.external_id AS invoice_external_id, l.kind,"
                     " l.product_code, l.description, l.quantity, l.unit_price, l.net_amount"
                     " FROM invoice_lines l JOIN invoices i ON i.id = l.invoice_id"
                     " WHERE l.source = %(s)s",
    "orders": "SELECT o.external_id, c.external_id AS customer_external_id, o.kind, o.number,"
              " o.ordered_on, o.status, o.currency, o.net_amount, o.source_updated_at"
              " FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.source = %(s)s",
    "order_lines": "SELECT l.external_id, o.external_id AS order_external_id, l.part_number,"
                   " l.description, l.quantity, l.unit_price, l.net_amount FROM order_lines l"
                   " JOIN orders o ON o.id = l.order_id WHERE l.source = %(s)s",
    "survey_responses": "SELECT external_id FROM survey_responses WHERE source = %(s)s",
}


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("world")
    write_world(World.generate(11, END, customers=20, machines=60, years=1), directory)
    return directory


@pytest.fixture(scope="module", params=["generated", "by hand"])
def any_world(request: pytest.FixtureRequest, world_dir: Path,
              tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The generated world, and the Odoo tests' world by hand: it has what the generator does
    not draw (a credit note, a service order, a customer without sites, records never stamped).
    """
    if request.param == "generated":
        return world_dir
    return write_hand_world(tmp_path_factory.mktemp("hand"), hand_world())


def world_records(directory: Path, entity: str) -> list[Row]:
    """The world's records of an entity as the files connector's models read them."""
    return [ENTITY_MODELS[entity].model_validate(row).model_dump()
            for row in read_records(directory).get(entity, [])]


def expected(directory: Path, ids: Ids, entity: str, fields: tuple[str, ...], *,
             keep: Callable[[Row], bool] = lambda _r: True,
             change: Callable[[Row], Row] = lambda _r: {}) -> dict[str, Row]:
    """What the vendor should hand over of an entity, keyed and referenced by stored ids."""
    out = {}
    for record in world_records(directory, entity):
        if not keep(record):
            continue
        changed = {**record, **change(record)}
        out[ids[(entity, changed["external_id"])]] = {
            f: ids[(REFS[f], changed[f])] if f in REFS and changed[f] is not None
            else changed[f] for f in fields}
    return out


def unstamped(want: dict[str, Row], got: dict[str, Row]) -> dict[str, Row]:
    """``got``, where the world has no ``source_updated_at``, without the one the ERP set.

    An ERP stamps every record it keeps (a record loaded without a stamp is stamped on loading,
    or for a business partner on its creation date).
    """
    return {key: {**row, "source_updated_at": None}
            if want.get(key, {}).get("source_updated_at", 0) is None else row
            for key, row in got.items()}


async def stored(url: str, source: str, entity: str, fields: tuple[str, ...]) -> dict[str, Row]:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cur = await conn.execute(STORED[entity], {"s": source})
        names = [c.name for c in cur.description or []]
        found = [dict(zip(names, row, strict=True)) for row in await cur.fetchall()]
    return {row["external_id"]: {f: row[f] for f in fields} for row in found}


async def sync(url: str, connector: Connector) -> None:
    try:
        async with AsyncConnectionPool(url, min_size=1, max_size=2, open=False) as pool:
            done = await sync_sources(pool, [connector], reporting_currency="EUR")
    finally:
        await connector.aclose()
    assert {(o.entity, o.status, o.rows_rejected, o.error) for o in done.outcomes} == {
        (entity, "succeeded", 0, None) for entity in connector.page_sources()}


# -- SAP ------------------------------------------------------------------------------------

SAP_CARRIES: dict[str, tuple[tuple[str, ...], Callable[[Row], bool], Callable[[Row], Row]]] = {
    "customers": (("name", "industry", "country", "customer_since", "source_updated_at"),
                  lambda _r: True, lambda _r: {}),
    "sites": (("customer_external_id", "country", "city"), lambda _r: True, lambda _r: {}),
    "installed_base": (("serial", "model", "customer_external_id", "commissioned_on",
                        "warranty_end", "source_updated_at"), lambda _r: True, lambda _r: {}),
    # SAP's contract number is its key; its scope and machine are in items the connector does
    # not read; a released contract past its end is read as active.
    "service_contracts": (("customer_external_id", "scope", "contract_number", "tier",
                           "starts_on", "ends_on", "annual_value", "currency", "status",
                           "source_updated_at"), lambda _r: True,
                          lambda r: {"scope": "customer", "contract_number": r["external_id"],
                                     "status": {"expired": "active"}.get(r["status"],
                                                                         r["status"])}),
    # No draft billing documents; payment is not in the billing document.
    "invoices": (("customer_external_id", "number", "issued_on", "currency", "net_amount",
                  "status", "source_updated_at"), lambda r: r["status"] != "draft",
                 lambda r: {"number": r["external_id"],
                            "status": {"paid": "open"}.get(r["status"], r["status"])}),
    "invoice_lines": (("invoice_external_id", "kind", "product_code", "description",
                       "quantity", "net_amount"), lambda _r: True, lambda _r: {}),
    # Service orders are not sales orders in S/4HANA.
    "orders": (("customer_external_id", "kind", "number", "ordered_on", "status", "currency",
                "net_amount", "source_updated_at"), lambda r: r["kind"] == "spare_parts",
               lambda r: {"number": r["external_id"]}),
    "order_lines": (("order_external_id", "part_number", "description", "quantity",
                     "net_amount"), lambda _r: True, lambda _r: {}),
}


async def test_a_world_served_by_the_fake_sap_syncs_back_as_the_world(
        database_url: str, any_world: Path) -> None:
    world_dir = any_world
    fake = sap.FakeS4(page_size=40).start()
    try:
        loader = sap.WorldLoader(fake).load(read_records(world_dir))
        # Material groups tell machines and retrofits apart once mapped (docs/erp-sap.md).
        mappings = SapMappings(line_kinds_by_material_group={
            group: kind for kind, group in sap.MATERIAL_GROUPS.items()})
        await sync(database_url, SapConnector(fake.url, fake.user, fake.password,
                                              page_size=25, mappings=mappings))
    finally:
        fake.stop()
    ids = loader.ids
    kept_invoices = {i for i in ids if i[0] == "invoices"}
    kept_orders = {o for o in ids if o[0] == "orders"}
    # A customer's country is that of its first address (site), none without one.
    first_site: dict[str, str | None] = {}
    for site in world_records(world_dir, "sites"):
        first_site.setdefault(site["customer_external_id"], site["country"])
    keeps = {"invoice_lines": lambda r: ("invoices", r["invoice_external_id"]) in kept_invoices,
             "order_lines": lambda r: ("orders", r["order_external_id"]) in kept_orders}
    changes = {"customers": lambda r: {"country": first_site.get(r["external_id"])}}
    for entity, (fields, keep, change) in SAP_CARRIES.items():
        want = expected(world_dir, ids, entity, fields, keep=keeps.get(entity, keep),
                        change=changes.get(entity, change))
        assert want, entity
        got = await stored(database_url, "sap", entity, fields)
        assert unstamped(want, got) == want, entity
    for entity in ("contacts", "machine_models", "contract_renewals", "survey_responses"):
        assert await stored(database_url, "sap", entity, ()) == {}
        assert loader.left_out[entity] == len(world_records(world_dir, entity))


def test_pyodata_counts_and_reads_entities_of_the_fake_sap(world_dir: Path) -> None:
    pyodata = pytest.importorskip("pyodata")  # the dev extra has it
    requests = pytest.importorskip("requests")
    customers = world_records(world_dir, "customers")
    machines = world_records(world_dir, "installed_base")
    industry = customers[0]["industry"]
    fake = sap.FakeS4().start()
    try:
        sap.WorldLoader(fake).load(read_records(world_dir))
        session = requests.Session()
        session.auth = (fake.user, fake.password)
        partners = pyodata.Client(f"{fake.url}/sap/opu/odata/sap/API_BUSINESS_PARTNER",
                                  session).entity_sets.A_BusinessPartner
        assert partners.get_entities().count().execute() == len(customers)
        assert partners.get_entities().filter(f"Industry eq '{industry}'").count().execute() \
            == sum(1 for c in customers if c["industry"] == industry)
        one = partners.get_entity(customers[3]["external_id"]).execute()
        assert (one.BusinessPartner, one.BusinessPartnerFullName) == (
            customers[3]["external_id"], customers[3]["name"])
        with pytest.raises(pyodata.exceptions.HttpError) as missing:
            partners.get_entity("NO-SUCH-ONE").execute()
        assert missing.value.response.status_code == 404
        assert missing.value.response.json()["error"]["message"]["value"] == (
            "Resource not found for segment 'A_BusinessPartnerType'")
        # A two-part key, one part an Edm.DateTime.
        equipment = pyodata.Client(f"{fake.url}/sap/opu/odata/sap/API_EQUIPMENT",
                                   session).entity_sets.Equipment
        forever = sap.FOREVER
        machine = equipment.get_entity(
            Equipment=machines[5]["external_id"],
            ValidityEndDate=datetime.combine(forever, time(), tzinfo=UTC),
        ).execute()
        assert machine.SerialNumber == machines[5]["serial"]
    finally:
        fake.stop()


@pytest.mark.parametrize(("path", "status"), [
    ("A_BusinessPartner(BusinessPartner='C-0001',Customer='C-0001')", 400),  # not its key
    ("A_BusinessPartner(1)", 400),  # a number for a text key
    ("A_BusinessPartnerAddress('C-0001')", 400),  # half of a two-part key
    ("A_BusinessPartner('C-0001')/$count", 405),
])
def test_malformed_key_predicates_are_refused_as_sap_does(world_dir: Path, path: str,
                                                          status: int) -> None:
    fake = sap.FakeS4().start()
    try:
        sap.WorldLoader(fake).load(read_records(world_dir))
        answer = httpx.get(f"{fake.url}/sap/opu/odata/sap/API_BUSINESS_PARTNER/{path}",
                           auth=(fake.user, fake.password))
    finally:
        fake.stop()
    assert answer.status_code == status
    assert "error" in answer.json()


# -- Business Central -----------------------------------------------------------------------

BC_CARRIES: dict[str, tuple[tuple[str, ...], Callable[[Row], bool]]] = {
    "customers": (("name", "country", "source_updated_at"), lambda r: not r["deleted"]),
    "machine_models": (("model",), lambda _r: True),
    "invoices": (("customer_external_id", "number", "issued_on", "due_on", "paid_on",
                  "currency", "net_amount", "status", "source_updated_at"), lambda _r: True),
    "invoice_lines": (("invoice_external_id", "kind", "product_code", "description",
                       "quantity", "unit_price", "net_amount"), lambda _r: True),
    # BC deletes a cancelled order.
    "orders": (("customer_external_id", "kind", "number", "ordered_on", "status", "currency",
                "net_amount", "source_updated_at"), lambda r: r["status"] != "cancelled"),
    "order_lines": (("order_external_id", "part_number", "description", "quantity",
                     "unit_price", "net_amount"), lambda _r: True),
}


async def test_a_world_served_by_the_fake_business_central_syncs_back_as_the_world(
        database_url: str, any_world: Path) -> None:
    world_dir = any_world
    with bc.FakeBusinessCentral(page_size=30) as fake:
        loader = bc.WorldLoader(fake).load(read_records(world_dir))
        await sync(database_url, BusinessCentralConnector(
            fake.url, fake.tenant, fake.environment, fake.company_id, fake.client_id,
            fake.client_secret, token_url=fake.token_url, page_size=30))
    ids = loader.ids
    kept_orders = {key for key in ids if key[0] == "orders"}
    keeps = {"order_lines": lambda r: ("orders", r["order_external_id"]) in kept_orders}
    for entity, (fields, keep) in BC_CARRIES.items():
        want = expected(world_dir, ids, entity, fields, keep=keeps.get(entity, keep))
        assert want, entity
        got = await stored(database_url, "business_central", entity, fields)
        assert unstamped(want, got) == want, entity
    for entity in ("sites", "contacts", "installed_base", "service_contracts",
                   "contract_renewals", "survey_responses"):
        assert await stored(database_url, "business_central", entity, ()) == {}
        assert loader.left_out[entity] == len(world_records(world_dir, entity))


# -- Odoo over XML-RPC ------------------------------------------------------------------------


@pytest.fixture
def odoo(world_dir: Path) -> Iterator[tuple[FakeOdoo, WorldLoader]]:
    with FakeOdoo(db="demo", login="admin", api_key="k-123") as fake:
        yield fake, WorldLoader(fake).load(read_records(world_dir))


def test_odoos_documentation_example_over_xmlrpc(odoo: tuple[FakeOdoo, WorldLoader],
                                                 world_dir: Path) -> None:
    fake, _loader = odoo
    customers = world_records(world_dir, "customers")
    companies = [["is_company", "=", True]]
    with xmlrpc.client.ServerProxy(f"{fake.url}/xmlrpc/2/common") as common:
        assert common.version()["server_version"] == "17.0"
        uid = common.authenticate("demo", "admin", "k-123", {})
        assert common.authenticate("demo", "admin", "wrong", {}) is False
    assert uid == 2
    with xmlrpc.client.ServerProxy(f"{fake.url}/xmlrpc/2/object") as models:
        found = models.execute_kw("demo", uid, "k-123", "res.partner", "search_read",
                                  [companies], {"fields": ["name", "country_id", "ref"],
                                                "limit": 5})
        count = models.execute_kw("demo", uid, "k-123", "res.partner", "search_count",
                                  [companies])
    assert [(p["ref"], p["name"]) for p in found] == [
        (c["external_id"], c["name"]) for c in customers[:5]]
    assert all(set(p) == {"id", "name", "country_id", "ref"} for p in found)
    assert count == len(customers)
    # The same call over JSON-RPC answers the same.
    over_json = httpx.post(f"{fake.url}/jsonrpc", json={
        "jsonrpc": "2.0", "method": "call", "id": 1, "params": {
            "service": "object", "method": "execute_kw", "args": [
                "demo", uid, "k-123", "res.partner", "search_read", [companies],
                {"fields": ["name", "country_id", "ref"], "limit": 5}]}}).json()["result"]
    assert over_json == found
    assert fake.requests["res.partner.search_read"] == 2
    # The documentation example's reads, call by call (its writes are not served).
    with xmlrpc.client.ServerProxy(f"{fake.url}/xmlrpc/2/object") as models:
        def call(method: str, *args: Any, **kwargs: Any) -> Any:
            return models.execute_kw("demo", uid, "k-123", "res.partner", method, list(args),
                                     kwargs)

        assert call("check_access_rights", "read", raise_exception=False) is True
        ids = call("search", companies)
        assert len(ids) == len(customers)
        assert call("search", companies, offset=10, limit=5) == ids[10:15]
        [record] = call("read", ids[:1])
        assert record["ref"] == customers[0]["external_id"]
        [shown] = call("read", ids[:1], fields=["name", "country_id", "comment"])
        assert shown == {"id": ids[0], "name": customers[0]["name"],
                         "country_id": record["country_id"], "comment": False}
        described = call("fields_get", attributes=["string", "help", "type"])
        assert described["comment"]["type"] == "char"
        assert [p["name"] for p in call("search_read", companies,
                                        fields=["name", "country_id", "comment"], limit=5)
                ] == [c["name"] for c in customers[:5]]
        fake.deny("res.partner")
        assert call("check_access_rights", "read", raise_exception=False) is False


def fault(fake: FakeOdoo, service: str, method: str, *args: Any) -> xmlrpc.client.Fault:
    with (xmlrpc.client.ServerProxy(f"{fake.url}/xmlrpc/2/{service}") as proxy,
          pytest.raises(xmlrpc.client.Fault) as raised):
        getattr(proxy, method)(*args)
    return raised.value


def test_xmlrpc_faults_are_odoos(odoo: tuple[FakeOdoo, WorldLoader]) -> None:
    fake, _loader = odoo
    denied = fault(fake, "object", "execute_kw", "demo", 2, "wrong", "res.partner",
                   "search_count", [[]])
    assert (denied.faultCode, denied.faultString) == (3, "Access Denied")
    fake.deny("account.move")
    refused = fault(fake, "object", "execute_kw", "demo", 2, "k-123", "account.move",
                    "search_read", [[]])
    assert refused.faultCode == 4
    assert refused.faultString.startswith(
        "You are not allowed to access 'Journal Entry' (account.move) records.")
    invalid = fault(fake, "object", "execute_kw", "demo", 2, "k-123", "res.partner",
                    "search_read", [[]], {"fields": ["no_such_field"]})
    assert invalid.faultCode == 1
    assert invalid.faultString.startswith("Traceback (most recent call last):")
    assert invalid.faultString.rstrip().endswith(
        "ValueError: Invalid field 'no_such_field' on model 'res.partner'")
    wrong_db = fault(fake, "common", "authenticate", "nodb", "admin", "k-123", {})
    assert wrong_db.faultCode == 1
    assert 'psycopg2.OperationalError: connection to server failed: FATAL:  database "nodb"' \
        in wrong_db.faultString


def test_amounts_survive_xmlrpc(odoo: tuple[FakeOdoo, WorldLoader], world_dir: Path) -> None:
    """Money crosses XML-RPC as doubles; the world's amounts come back to the cent."""
    fake, loader = odoo
    invoices = world_records(world_dir, "invoices")[:10]
    ids = [loader.ids[("invoices", i["external_id"])][1] for i in invoices]
    with xmlrpc.client.ServerProxy(f"{fake.url}/xmlrpc/2/object") as models:
        read = models.execute_kw("demo", 2, "k-123", "account.move", "read", [ids],
                                 {"fields": ["amount_untaxed", "invoice_date"]})
    assert [(Decimal(str(r["amount_untaxed"])), r["invoice_date"]) for r in read] == [
        (abs(i["net_amount"]), i["issued_on"].isoformat()) for i in invoices]
