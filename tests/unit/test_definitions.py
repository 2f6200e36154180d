"""Definition files: what a file must hold, and the order they apply in (core/migrate.py)."""

from __future__ import annotations

import re
from importlib import resources

import pytest

from core import migrate
from core.errors import MigrationError
from oem_retention import schema


def definition(name: str, body: str = "SELECT 1", *, depends: str = "",
               kind: str = "VIEW") -> migrate.Definition:
    header = f"-- depends on: {depends}\n" if depends else ""
    return migrate.parse_definition(f"pkg/{name}.sql",
                                    f"{header}CREATE OR REPLACE {kind} {name} AS {body};\n")


def names(definitions: list[migrate.Definition]) -> list[str]:
    return [d.name for d in definitions]


def test_a_file_names_its_object_kind_and_dependencies() -> None:
    text = ("-- Who is active.\n-- depends on: to_reporting, customer_segments\n"
            "CREATE OR REPLACE FUNCTION active_now(on_day date) RETURNS bigint\n"
            "LANGUAGE sql STABLE AS $$ SELECT 1 $$;\n")
    parsed = migrate.parse_definition("analytics/sql/definitions/active_now.sql", text)
    assert (parsed.name, parsed.kind) == ("active_now", "function")
    assert parsed.depends_on == ("to_reporting", "customer_segments")
    assert parsed.sql == text


@pytest.mark.parametrize(("filename", "text", "refusal"), [
    ("a.sql", "CREATE FUNCTION a() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$;",
     "CREATE OR REPLACE FUNCTION a"),
    ("a.sql", "CREATE OR REPLACE VIEW b AS SELECT 1;", r"found: VIEW b"),
    ("a.sql", "CREATE OR REPLACE VIEW a AS SELECT 1; CREATE OR REPLACE VIEW a2 AS SELECT 2;",
     "exactly one object"),
    ("a.sql", "-- CREATE OR REPLACE VIEW a AS SELECT 1;", "found: none"),
    ("Active.sql", "CREATE OR REPLACE VIEW active AS SELECT 1;", "lower case"),
])
def test_a_file_that_does_not_define_its_one_object_is_refused(filename: str, text: str,
                                                                refusal: str) -> None:
    with pytest.raises(MigrationError, match=refusal):
        migrate.parse_definition(f"pkg/{filename}", text)


def test_dependencies_come_first_then_names() -> None:
    defs = [definition("a_total", "SELECT * FROM z_base", depends="z_base"),
            definition("z_base"), definition("m_other"),
            definition("b_top", "SELECT * FROM a_total", depends="a_total")]
    assert names(migrate.ordered(defs)) == ["m_other", "z_base", "a_total", "b_top"]
    assert names(migrate.ordered(reversed(defs))) == ["m_other", "z_base", "a_total", "b_top"]


def test_a_use_without_a_header_is_refused() -> None:
    defs = [definition("base"), definition("top", "SELECT * FROM base")]
    with pytest.raises(MigrationError, match=r"pkg/top\.sql uses base .* '-- depends on: base'"):
        migrate.ordered(defs)


def test_a_name_in_a_comment_or_inside_a_longer_name_is_no_use() -> None:
    defs = [definition("base"),
            definition("top", "SELECT 1 AS database_id -- unlike base, nothing\n")]
    assert names(migrate.ordered(defs)) == ["base", "top"]


def test_unknown_dependency_cycle_and_double_definition_are_refused() -> None:
    with pytest.raises(MigrationError, match="depends on nowhere, which no definition file"):
        migrate.ordered([definition("top", depends="nowhere")])
    cycle = [definition("a", "SELECT * FROM b", depends="b"),
             definition("b", "SELECT * FROM a", depends="a")]
    with pytest.raises(MigrationError, match=r"cycle: (a -> b -> a|b -> a -> b)"):
        migrate.ordered(cycle)
    twice = [definition("a"), migrate.parse_definition("other/a.sql",
                                                       "CREATE OR REPLACE VIEW a AS SELECT 2;")]
    with pytest.raises(MigrationError, match=r"pkg/a\.sql and other/a\.sql both define a"):
        migrate.ordered(twice)


def test_the_shipped_definitions_in_their_order() -> None:
    shipped = migrate.load_definitions(schema.DEFINITIONS)
    order = names(shipped)
    assert order.index("period_segments") > order.index("customer_segments")
    assert order.index("period_segments") > order.index("behavioural_segments")
    assert order.index("after_sales_revenue") > order.index("to_reporting")
    for d in shipped:
        # Every declared dependency is used (the runner refuses a use not declared).
        code = re.sub(r"--[^\n]*", "", d.sql)
        assert all(re.search(rf"\b{n}\b", code) for n in d.depends_on), d.source
        assert d.source.startswith(tuple(p.replace(".", "/") for p in schema.DEFINITIONS))


def test_every_function_and_view_of_the_migrations_has_its_definition_file() -> None:
    created = set()
    for entry in resources.files("core.migrations").iterdir():
        if entry.name.endswith(".sql"):
            text = re.sub(r"--[^\n]*", "", entry.read_text(encoding="utf-8"))
            created |= {m.lower() for m in re.findall(
                r"\bCREATE\s+(?:OR\s+REPLACE\s+)?(?:FUNCTION|VIEW)\s+(\w+)", text, re.I)}
    assert created, "the pattern found nothing: it is wrong"
    shipped = {d.name for d in migrate.load_definitions(schema.DEFINITIONS)}
    # A function or view in a numbered migration would be a second, frozen definition.
    assert created <= shipped
