"""The uncertainty section: its table shows the jackknife's numbers as recorded (checked cell by cell against the
dict), the bridge sentence is escaped, and one shard says that no interval is possible."""

from __future__ import annotations

import re
from html.parser import HTMLParser

from actgeo_assets.lib.outputs.report_uncertainty import format_value, uncertainty_section


class _Table(HTMLParser):
    """Rows of cells (text) of the table with a given id, and the ids seen."""

    def __init__(self, table_id: str) -> None:
        super().__init__()
        self.table_id, self.inside, self.rows, self.ids, self.cell = table_id, False, [], [], None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.append(a["id"])
        if tag == "table":
            self.inside = a.get("id") == self.table_id
        elif self.inside and tag == "tr":
            self.rows.append([])
        elif self.inside and tag in ("td", "th"):
            self.cell = []

    def handle_endtag(self, tag):
        if tag == "table":
            self.inside = False
        elif self.inside and tag in ("td", "th") and self.cell is not None:
            self.rows[-1].append("".join(self.cell))
            self.cell = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell.append(data)


def _doc() -> dict:
    reps = [{"left_out": [f"shard-00{i}"], "n": 75, "t_c": 0.78 + 0.01 * i, "second_largest_at_t_c": 40 + i,
             "bridge_kept": i % 2 == 0, "bridge_count": 1 + i % 2,
             "bridge_weights": [0.7735] if i % 2 == 0 else [0.79, 0.77]} for i in range(4)]
    q = [{"key": "components_per_1000", "label": "components per 1,000 activations", "estimate": 193.83, "se": 10.1,
          "low": 161.56, "high": 226.1, "replicates": [208.18, 209.87, 220.84, 220.49], "note": ""},
         {"key": "largest_fraction", "label": "the giant's fraction", "estimate": 0.75517, "se": 0.0079, "low": 0.72999,
          "high": 0.78034, "replicates": [0.7316, 0.7304, 0.7218, 0.7221], "note": "<b>raw</b>"},
         {"key": "t_c", "label": "transition threshold t_c", "estimate": 0.8, "se": 0.0, "low": 0.8, "high": 0.8,
          "replicates": [0.8] * 4, "note": "grid"}]
    return {"possible": True, "method": "Delete-one-shard jackknife over 4 shards <&>", "replicates": reps,
            "quantities": q, "delete_two": None, "estimate": {"bridge_count": 1}}


def test_intervals_table_shows_the_recorded_numbers() -> None:
    doc = _doc()
    html_text = uncertainty_section(doc, "cosine 0.7977 between ' I' <script> and ' I'")
    p = _Table("intervals")
    p.feed(html_text)
    assert {"uncertainty", "uncertainty-method", "intervals", "bridges"} <= set(p.ids)
    assert p.rows[0] == ["quantity", "estimate", "95% interval", "replicates (left out: value)"]
    body = p.rows[1:]
    assert [r[0] for r in body] == [q["label"] for q in doc["quantities"]]
    assert body[0][1:3] == ["193.8", "161.6 to 226.1"]
    assert body[0][3] == "shard-000: 208.2; shard-001: 209.9; shard-002: 220.8; shard-003: 220.5"
    assert body[1][1:3] == ["75.5%", "73.0% to 78.0%"] and body[1][3].endswith("<b>raw</b>")  # text, escaped
    assert body[2][2] == "no spread: every replicate gives the same value"
    assert "<script>" not in html_text and "&lt;script&gt;" in html_text and "&lt;&amp;&gt;" in html_text
    bridges = re.search(r'<p id="bridges">(.*?)</p>', html_text).group(1)
    assert bridges.startswith("cosine 0.7977 between")
    assert ("2 keep both endpoints of the bridge edge (second-largest component&#x27;s peak there: 0.78 (40 "
            "activations), 0.80 (42 activations)) and 2 lose one") in bridges
    assert ("In each replicate, the forest edges joining its peak&#x27;s second-largest component to the giant: "
            "shard-000 out: 1 edge (0.7735); shard-001 out: 2 edges (0.7700, 0.7900); shard-002 out: 1 edge "
            "(0.7735); shard-003 out: 2 edges (0.7700, 0.7900).") in bridges
    assert format_value("n_components", 4846.9) == "4,847" and format_value("t_c", None) == "n/a"


def test_one_shard_and_no_record() -> None:
    one = {"possible": False, "method": "One shard: no resampling interval is possible.", "replicates": [],
           "quantities": [{"key": "n_components", "label": "components", "estimate": 5815, "se": None, "low": None,
                           "high": None, "replicates": [], "note": ""}], "delete_two": None}
    html_text = uncertainty_section(one, None)
    assert 'class="warn" id="uncertainty-method">One shard: no resampling interval is possible.' in html_text
    p = _Table("intervals")
    p.feed(html_text)
    assert p.rows[1][:3] == ["components", "5,815", "none"] and "bridges" not in p.ids
    assert 'id="uncertainty"' in uncertainty_section({}, None) and "No resampling" in uncertainty_section({}, None)
