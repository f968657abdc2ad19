"""lib/analysis/numbers.py: the one rule numbers are shown by (report, study table, Dagster metadata)."""

from __future__ import annotations

import numpy as np

from actgeo_assets.lib.analysis.numbers import format_number, round_number


def test_round_number_keeps_numbers() -> None:
    assert round_number(0.9161333333333334) == 0.9161
    assert round_number(3.0) == 3 and isinstance(round_number(3.0), int)
    assert round_number(np.int64(7)) == 7 and type(round_number(np.int64(7))) is int
    assert round_number(np.float32(0.123456)) == 0.1235
    assert round_number(12.3456789) == 12.3457
    assert round_number(True) is True and round_number("x") == "x" and round_number(float("nan")) == "nan"


def test_format_number_text() -> None:
    assert format_number(1234567) == "1,234,567" and format_number(np.int64(1234)) == "1,234"
    assert format_number(2.0) == "2" and format_number(0.70) == "0.7" and format_number(0.000012345) == "1.234e-05"
    assert format_number(1234.56789) == "1,234.5679" and format_number(12.5) == "12.5"
    assert format_number(None) == "None" and format_number(False) == "False" and format_number("l2") == "l2"
