-- KPI snapshots (analytics/kpi_snapshot.py, docs/kpis.md "Snapshots"): every KPI of
-- analytics/kpi.py's kpi_table as computed on a day, for the whole base and every cut, so that a
-- KPI per segment can be followed over time (which segment's retention is slipping) without
-- recomputing the past. The daily job takes one a day, for the month, quarter and year containing
-- the day (to date: period_last is the day itself) and the previous complete month, quarter and
-- year (period_last is their last day). value, numerator and denominator are KpiValue's; counts
-- every column of the row the value came from ("42 of 50 customers"); currency is the reporting
-- currency the money amounts among them (and the ratios of money, GRR, NRR, parts capture) are
-- in. A rerun on the same day replaces that day's rows.
CREATE TABLE kpi_snapshots (
    taken_on     date        NOT NULL,
    period_kind  text        NOT NULL CHECK (period_kind IN ('month', 'quarter', 'year')),
    period_start date        NOT NULL,
    period_last  date        NOT NULL,
    dimension    text        NOT NULL,
    segment      text        NOT NULL,
    kpi          text        NOT NULL,
    value        numeric,
    numerator    numeric,
    denominator  numeric,
    unit         text        NOT NULL,
    counts       jsonb       NOT NULL,
    currency     char(3)     NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (taken_on, period_kind, period_start, dimension, segment, kpi),
    CHECK (period_start <= period_last AND period_last <= taken_on)
);
-- One KPI's history for a dimension and segment: its values day after day.
CREATE INDEX kpi_snapshots_history
    ON kpi_snapshots (kpi, dimension, segment, period_kind, taken_on);
