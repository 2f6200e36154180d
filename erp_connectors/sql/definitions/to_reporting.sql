-- An amount in the reporting currency (erp_connectors/rates.py loads the rates): amount x the
-- rate of its currency on the day, the latest rate valid on or before it. A day before the
-- currency's first rate has none: NULL, never a guess (sums drop it; the sync's data-quality
-- report lists currencies without a rate).
CREATE OR REPLACE FUNCTION to_reporting(amount numeric, from_currency char(3), on_day date,
                                        reporting char(3))
RETURNS numeric
LANGUAGE sql STABLE
AS $$
    SELECT CASE WHEN from_currency = reporting THEN amount
                ELSE amount * (SELECT rate FROM exchange_rates
                               WHERE currency = from_currency AND valid_from <= on_day
                               ORDER BY valid_from DESC LIMIT 1)
           END
$$;
