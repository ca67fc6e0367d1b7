"""Settings given outside the file (serve --workers, AUTHZ_WORKERS) and how they apply."""

from __future__ import annotations

import pytest

from authz.config import ConfigError, Overrides, parse_config, parse_workers
from tests.support import config_data


@pytest.mark.parametrize(("text", "workers"), [("1", 1), ("4", 4), ("64", 64), ("007", 7)])
def test_a_whole_number_from_1_to_64_is_a_number_of_workers(text: str, workers: int) -> None:
    assert parse_workers(text, "AUTHZ_WORKERS") == workers


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("0", "0 workers is out of range (1 to 64)"),
        ("65", "65 workers is out of range (1 to 64)"),
        ("96", "without one, Kubernetes gives the node's cores"),
        ("", "'' is not a whole number of workers"),
        ("two", "'two' is not a whole number of workers"),
        ("1.5", "'1.5' is not a whole number"),
        ("-2", "'-2' is not a whole number"),
        (" 2", "' 2' is not a whole number"),
        ("2_0", "'2_0' is not a whole number"),  # int() would read 20
        ("1500m", "'1500m' is not a whole number"),  # a CPU quantity without divisor 1
    ],
)
def test_anything_else_is_an_error_naming_where_it_came_from(text: str, says: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_workers(text, "AUTHZ_WORKERS")
    assert str(raised.value).startswith("AUTHZ_WORKERS: ")
    assert says in str(raised.value)


def test_an_override_wins_over_the_file_and_changes_nothing_else() -> None:
    config = parse_config(config_data(workers=2))
    assert Overrides().apply(config) is config
    assert Overrides(workers=2).apply(config) is config
    four = Overrides(workers=4).apply(config)
    assert four.workers == 4
    assert four.model_dump(exclude={"workers"}) == config.model_dump(exclude={"workers"})
