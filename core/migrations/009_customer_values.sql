-- Customer lifetime value per customer and valuation day (docs/clv.md, "Applied to our tables"):
-- the parts and field-service side from BG/NBD + Gamma-Gamma (P(alive), expected purchases and
-- spend, discounted value over horizon_months), the contract side from the shifted-beta-geometric
-- (expected remaining contract years, discounted expected residual value), and their total, all
-- in the reporting currency. method names the estimate each side used ('bgnbd+gamma_gamma',
-- 'naive'... / 'sbg', 'constant_retention', 'none'); inputs keeps the customer's own figures
-- (frequency, recency, T, monetary value, renewals...) and parameters the fitted models', so
-- every value can be recomputed by hand. Kept with their day, so the history can be shown; a
-- rerun on the same day replaces that day's rows.
CREATE TABLE customer_values (
    customer_id                      integer          NOT NULL REFERENCES customers,
    valued_on                        date             NOT NULL,
    method                           text             NOT NULL,
    p_alive                          double precision CHECK (p_alive BETWEEN 0 AND 1),
    expected_purchases_12m           double precision CHECK (expected_purchases_12m >= 0),
    expected_spend_per_purchase      numeric(14, 2),
    parts_clv                        numeric(14, 2),
    contract_annual_value            numeric(14, 2),
    contract_renewals                integer          CHECK (contract_renewals >= 0),
    contract_expected_lifetime_years double precision CHECK (contract_expected_lifetime_years >= 0),
    contract_derl_value              numeric(14, 2),
    total_clv                        numeric(14, 2)   NOT NULL,
    currency                         char(3)          NOT NULL,
    discount_rate                    double precision NOT NULL CHECK (discount_rate >= 0),
    horizon_months                   integer          NOT NULL CHECK (horizon_months > 0),
    inputs                           jsonb            NOT NULL,
    parameters                       jsonb            NOT NULL,
    created_at                       timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, valued_on)
);
CREATE INDEX customer_values_valued_on ON customer_values (valued_on);
