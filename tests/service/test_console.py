"""What the console's cost line is made of: ``COVE_CONSOLE_PRICES`` parsed (and refused at start-up
when malformed), and a response's usage priced by its model."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from cove.config import Settings, parse_prices
from cove.service.console import cost


def test_prices_parse_by_model() -> None:
    assert parse_prices("") == {}
    assert parse_prices("gpt-4.1=2/8, my=model=0.5/1.25") == {"gpt-4.1": (2.0, 8.0), "my=model": (0.5, 1.25)}


@pytest.mark.parametrize("bad", ["gpt-4.1", "gpt-4.1=2", "=2/8", "gpt-4.1=two/8", "gpt-4.1=-1/8"])
def test_a_malformed_price_is_refused_at_start_up(bad: str) -> None:
    with pytest.raises(ValidationError, match="model=input/output"):
        Settings(console_prices=bad)


def test_cost_is_priced_per_million_tokens_and_absent_without_a_price() -> None:
    prices = parse_prices("gpt-4.1=2/8")
    usage = {"input_tokens": 1_000, "output_tokens": 500, "total_tokens": 1_500}
    assert cost(prices, "gpt-4.1", usage) == pytest.approx((1_000 * 2 + 500 * 8) / 1e6)
    assert cost(prices, "other", usage) is None
    assert cost(prices, "gpt-4.1", None) is None
