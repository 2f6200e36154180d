"""Which connectors the settings turn on, and the errors of a half-done configuration."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from core.settings import Settings
from oem_retention.wiring import SourceConfigError, configured_sources, connectors

ALL = {
    "erp_files_dir": Path("/srv/erp-export"),
    "erp_odoo_url": "https://odoo.example.com", "erp_odoo_db": "prod",
    "erp_odoo_login": "sync@example.com", "erp_odoo_api_key": "k",
    "erp_bc_api_url": "https://api.businesscentral.dynamics.com", "erp_bc_tenant": "t",
    "erp_bc_company_id": "c", "erp_bc_client_id": "id", "erp_bc_client_secret": "s",
    "erp_sap_url": "https://my000000-api.s4hana.cloud.sap", "erp_sap_user": "COMM_USER",
    "erp_sap_password": "p",
}


def settings(**values: object) -> Settings:
    return Settings.model_validate(values)


def test_every_configured_source_gets_its_connector_in_sync_order() -> None:
    built = connectors(settings(**ALL))
    assert [(c.source, type(c).__name__) for c in built] == [
        ("files", "FilesConnector"), ("odoo", "OdooConnector"),
        ("business_central", "BusinessCentralConnector"), ("sap", "SapConnector")]
    for connector in built:
        asyncio.run(connector.aclose())


def test_only_the_asked_sources() -> None:
    built = connectors(settings(**ALL), ["sap", "files"])
    assert [c.source for c in built] == ["files", "sap"]
    for connector in built:
        asyncio.run(connector.aclose())


def test_nothing_configured_is_nothing() -> None:
    assert configured_sources(settings()) == []
    assert connectors(settings()) == []


@pytest.mark.parametrize(("values", "only", "message"), [
    ({"erp_odoo_url": "https://odoo.example.com", "erp_odoo_db": "prod"}, None,
     "odoo is configured but OEMR_ERP_ODOO_LOGIN, OEMR_ERP_ODOO_API_KEY not set"),
    ({}, ["sap"], "source(s) sap not configured (docs/erp-*.md)"),
    ({}, ["navision"], "unknown source(s) navision; known: files, odoo, business_central, sap"),
])
def test_a_half_done_configuration_is_named(values: dict[str, object], only: list[str] | None,
                                            message: str) -> None:
    with pytest.raises(SourceConfigError) as info:
        connectors(settings(**values), only)
    assert str(info.value) == message
