"""The API's pure parts: cursors, keyset SQL, keys, passwords, tokens, settings' refusals."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from psycopg import sql
from pydantic import ValidationError

from api.errors import BadRequest
from api.paging import decode_cursor, encode_cursor, page_request
from api.security import (
    CredentialsError,
    Principal,
    hash_password,
    issue_token,
    key_matches,
    new_api_key,
    read_token,
    split_api_key,
    verify_password,
)
from core.paging import PageRequest, cut, keyset, keyset_params
from core.settings import DEVELOPMENT_SECRET, Settings

BIGINT = st.integers(-(2**63), 2**63 - 1)


@given(st.one_of(st.text(), BIGINT, st.floats(allow_nan=False, allow_infinity=False)), BIGINT)
def test_a_cursor_gives_back_what_it_holds(value: object, row_id: int) -> None:
    assert decode_cursor(encode_cursor("-name", value, row_id), "-name") == (value, row_id)


def test_dates_and_decimals_travel_as_text() -> None:
    from decimal import Decimal
    assert decode_cursor(encode_cursor("d", date(2026, 1, 2), 3), "d") == ("2026-01-02", 3)
    assert decode_cursor(encode_cursor("v", Decimal("1.50"), 3), "v") == ("1.50", 3)


@pytest.mark.parametrize("cursor", ["", "%%%", "bm90IGpzb24", encode_cursor("other", 1, 2)[:-3],
                                    "WzEsMiwzLDRd"])
def test_a_cursor_that_is_not_ours_is_a_bad_request(cursor: str) -> None:
    with pytest.raises(BadRequest):
        decode_cursor(cursor or "x", "serial")


def test_a_cursor_of_another_sort_is_refused() -> None:
    with pytest.raises(BadRequest, match="belongs to sort 'serial'"):
        page_request("-serial", limit=10, cursor=encode_cursor("serial", "A", 1))
    page = page_request("-serial", limit=10, cursor=encode_cursor("-serial", "A", 1))
    assert page == PageRequest(limit=10, sort="serial", descending=True, after=("A", 1))


def test_keyset_sql() -> None:
    columns = {"serial": sql.Identifier("serial")}
    first = PageRequest(limit=5, sort="serial")
    where, order = keyset(columns, sql.Identifier("id"), first)
    assert where.as_string(None) == "true"
    assert order.as_string(None) == '"serial" ASC, "id" ASC'
    later = PageRequest(limit=5, sort="serial", descending=True, after=("M", 7))
    where, order = keyset(columns, sql.Identifier("id"), later)
    assert where.as_string(None) == \
        '("serial", "id") < (%(keyset_after_value)s, %(keyset_after_id)s)'
    assert order.as_string(None) == '"serial" DESC, "id" DESC'
    assert keyset_params(later) == {"keyset_after_value": "M", "keyset_after_id": 7,
                                    "keyset_limit": 6}
    with pytest.raises(ValueError, match="cannot sort by 'x'"):
        keyset(columns, sql.Identifier("id"), PageRequest(sort="x"))
    assert cut([1, 2, 3], PageRequest(limit=2)).more
    assert not cut([1, 2], PageRequest(limit=2)).more


def test_api_keys_name_their_tenant_and_keep_only_a_hash() -> None:
    made = new_api_key("acme")
    tenant, prefix, secret = split_api_key(made.token) or ("", "", "")
    assert (tenant, prefix) == ("acme", made.prefix)
    assert key_matches(made.secret_hash, secret)
    assert not key_matches(made.secret_hash, secret + "x")
    assert secret not in made.secret_hash.hex()
    for bad in ("oemr_acme_only", "bearer_x_y_z", "oemr__p_s", "plain"):
        assert split_api_key(bad) is None


def test_passwords() -> None:
    stored = hash_password("a long enough password")
    assert stored.startswith("$argon2id$")
    assert verify_password(stored, "a long enough password") == (True, None)
    assert verify_password(stored, "a long enough passwore") == (False, None)
    assert verify_password(None, "anything") == (False, None)
    assert verify_password("not a hash", "anything") == (False, None)


def test_tokens_carry_role_and_tenant_and_expire() -> None:
    settings = Settings()
    who = Principal(subject="ana", role="finance", tenant="acme", user_id=4)
    claims = read_token(settings, issue_token(settings, who))
    assert (claims["sub"], claims["role"], claims["tenant"]) == ("4", "finance", "acme")
    old = issue_token(settings, who, now=datetime.now(UTC) - timedelta(days=1))
    with pytest.raises(CredentialsError, match="expired"):
        read_token(settings, old)
    other = Settings(api_secret_key="x" * 40)
    with pytest.raises(CredentialsError, match="not valid"):
        read_token(other, issue_token(settings, who))


def test_production_refuses_the_development_secret() -> None:
    with pytest.raises(ValidationError, match="OEMR_API_SECRET_KEY"):
        Settings(environment="production")
    with pytest.raises(ValidationError, match="OEMR_API_SECRET_KEY"):
        Settings(environment="production", api_secret_key="short")
    assert Settings(environment="production", api_secret_key="k" * 40).environment == \
        "production"
    assert Settings().api_secret_key.get_secret_value() == DEVELOPMENT_SECRET
    assert "k" * 40 not in repr(Settings(api_secret_key="k" * 40))


def test_tenant_names_are_checked() -> None:
    assert Settings(tenant_databases={"acme-2": "dbname=a"}).tenant_urls() == \
        {"acme-2": "dbname=a"}
    assert Settings(database_url="dbname=x").tenant_urls() == {"default": "dbname=x"}
    with pytest.raises(ValidationError, match="tenant name"):
        Settings(tenant_databases={"Acme_1": "dbname=a"})


def test_a_forged_cursor_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    import base64
    import secrets

    import api.paging
    # Well-formed JSON of the right sort, but not signed: the value's type would fail in SQL.
    unsigned = base64.urlsafe_b64encode(b'["last_seen",5,1]').decode().rstrip("=")
    with pytest.raises(BadRequest, match="not one this API gave out"):
        decode_cursor(unsigned, "last_seen")
    ours = encode_cursor("last_seen", "2026-01-01T00:00:00+00:00", 1)
    monkeypatch.setattr(api.paging, "_key", secrets.token_bytes(32))
    with pytest.raises(BadRequest, match="not one this API gave out"):
        decode_cursor(ours, "last_seen")


def test_workers_sharing_the_secret_accept_each_others_cursors() -> None:
    import api.paging
    before = api.paging._key
    try:
        api.paging.set_cursor_key("s" * 40)
        cursor = encode_cursor("serial", "A", 1)
        api.paging.set_cursor_key("s" * 40)
        assert decode_cursor(cursor, "serial") == ("A", 1)
        api.paging.set_cursor_key("t" * 40)
        with pytest.raises(BadRequest):
            decode_cursor(cursor, "serial")
    finally:
        api.paging._key = before


@pytest.mark.parametrize(("kind", "value"), [
    ("Day", date(1969, 12, 31)), ("Day", date(1, 1, 1)), ("Day", date(2101, 1, 1)),
    ("Moment", datetime(1, 1, 1)), ("Moment", datetime(9999, 12, 31, tzinfo=UTC)),
    ("AwareMoment", datetime(2101, 1, 1, tzinfo=UTC))])
def test_days_and_moments_out_of_range_are_refused(kind: str, value: date) -> None:
    from pydantic import TypeAdapter

    import api.params
    with pytest.raises(ValidationError, match="must be within 1970-01-01 and 2100-12-31"):
        TypeAdapter(getattr(api.params, kind)).validate_python(value)


def test_days_and_moments_in_range_pass() -> None:
    from pydantic import TypeAdapter

    from api.params import AwareMoment, Day, Moment
    assert TypeAdapter(Day).validate_python("1970-01-01") == date(1970, 1, 1)
    assert TypeAdapter(Day).validate_python("2100-12-31") == date(2100, 12, 31)
    assert TypeAdapter(Moment).validate_python("2026-05-01T10:00") == datetime(2026, 5, 1, 10)
    assert TypeAdapter(AwareMoment).validate_python("2026-05-01T10:00Z") == \
        datetime(2026, 5, 1, 10, tzinfo=UTC)


@pytest.mark.parametrize(("value", "text"), [
    ("=HYPERLINK(\"http://x\")", "'=HYPERLINK(\"http://x\")"), ("+1", "'+1"), ("-2+3", "'-2+3"),
    ("@SUM(A1)", "'@SUM(A1)"), ("\tx", "'\tx"), ("\rx", "'\rx"), ("plain", "plain"),
    ("bell\x07 and \x1bescape", "bell and escape"), ("\x07=1", "'=1"), ("a\tb\nc", "a\tb\nc")])
def test_export_text_cells_are_neither_formulas_nor_control_characters(value: str,
                                                                       text: str) -> None:
    from api.responses import _cell, _csv_cell
    assert _cell(value) == text
    assert _csv_cell(value) == text


def test_export_numbers_are_left_as_numbers() -> None:
    from decimal import Decimal

    from api.responses import _cell, _csv_cell
    assert _cell(-5) == -5
    assert _cell(Decimal("-1.50")) == Decimal("-1.50")
    assert _csv_cell(Decimal("-1.50")) == "-1.50"
    assert _cell(-0.5) == -0.5


def test_a_refused_setting_does_not_print_its_value() -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(environment="production", api_secret_key="tiny-secret-abc")
    assert "OEMR_API_SECRET_KEY" in str(refused.value)
    assert "tiny-secret-abc" not in str(refused.value)
    with pytest.raises(ValidationError) as refused:
        Settings(tenant_databases={"Bad_Name": "postgresql://u:hunter2pw@h/db"})
    assert "hunter2pw" not in str(refused.value)


def test_an_unexpected_error_names_its_request() -> None:
    import asyncio

    import httpx

    from api.app import create_app

    app = create_app(Settings())

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("unexpected")

    async def ask() -> httpx.Response:
        # Without the lifespan: no pool is opened, the route needs none.
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            return await client.get("/boom", headers={"X-Request-ID": "req-123"})

    answer = asyncio.run(ask())
    assert answer.status_code == 500
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.headers["x-request-id"] == "req-123"
    assert "req-123" in answer.json()["detail"]
