"""The report server's live lookup (``actgeo_assets/report_server.py``: ``GET /api/lookup``, ``/api/status``) on a
copy of the shared tiny run with its lookup index (``support/live_lookup.py``): the answers are `actgeo lookup
--json`'s through the CLI's own code path, token for token, and the verdicts a dense float64 brute force's; the
errors name the problem (empty, too long, unknown run, no index: the command that builds it); one run is kept
loaded at a time (the replaced one is freed), concurrent requests are answered one after another, and a run
whose files change is loaded again. The static side is tested in ``defs/test_ui_support.py``."""

from __future__ import annotations

import gc
import shutil
import threading
import time
import urllib.parse
import weakref
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from actgeo_tests.support.live_lookup import get_json, run_with_index, serving
from actgeo_tests.support.oracle import query_links
from actgeo_tests.support.tiny_run import QUERY_TEXT as TEXT
from actgeo_tests.support.tiny_run import FinishedRun, run_rows


@pytest.fixture(scope="module")
def indexed(tiny_runs: Callable[..., FinishedRun], tmp_path_factory: pytest.TempPathFactory):
    """(the shared tiny run, the data directory of its copy with a lookup index, a settings file of its values)."""
    run = tiny_runs()
    data_dir, config = run_with_index(run, tmp_path_factory.mktemp("live-lookup"))
    return run, data_dir, config


def _lookup_url(base: str, run: str = "demo", **params: str) -> str:
    return f"{base}/api/lookup?" + urllib.parse.urlencode({"run": run, **params})


def test_the_api_answers_as_actgeo_lookup(indexed, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from actgeo_assets.cli import main
    from actgeo_assets.lib.store.layout import RunLayout

    run, data_dir, config = indexed
    # the CLI's code path: `actgeo which TEXT --json` with the run's settings
    assert main(["which", TEXT, "--json", "--k", "3", "--data-dir", str(data_dir), "--config", str(config)]) == 0
    cli = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    with serving(data_dir) as base:
        status, before = get_json(f"{base}/api/status")
        assert status == 200 and before["loaded"] is None and before["max_text_chars"] == 2000
        status, first = get_json(_lookup_url(base, text=TEXT, k="3"))
        assert status == 200, first
        status, again = get_json(_lookup_url(base, text=TEXT, k="3"))
        assert get_json(f"{base}/api/status")[1]["loaded"] == "demo"
    assert first["loaded_now"] and not again["loaded_now"]
    assert {"model", "index", "forward", "search", "total"} <= set(first["seconds"])
    assert set(again["seconds"]) == {"forward", "search", "total"}  # kept loaded: only the text's own work
    assert first["tokens"] == again["tokens"] == cli  # every field of every token, nearest contexts included
    assert first["run_id"] == run.settings.run_id() and first["threshold"] == run.settings.threshold
    assert first["truncated"] and first["context_len"] == run.settings.context_len
    # and the verdicts are a float64 brute force's over the run's normalized rows
    from actgeo_assets.lib.stages.lookup import lookup_text

    layout = RunLayout(data_dir, run.settings.profile)
    queries = lookup_text(run.settings, layout, TEXT, k=0, build=False).queries
    x, labels, _ = run_rows(run.settings, layout)
    assert len(queries) == len(first["tokens"]) > 20
    verdicts = set()
    for tok, q in zip(first["tokens"], queries, strict=True):
        comps, n_linked, sims = query_links(x, labels, q, run.settings.threshold)
        assert [c["label_id"] for c in tok["components"]] == comps.tolist()
        assert tok["n_linked"] == n_linked
        assert tok["verdict"] == ("new singleton" if len(comps) == 0 else "joins" if len(comps) == 1 else "bridges")
        assert [c["row"] for c in tok["nearest"]] == np.lexsort((np.arange(len(sims)), -sims))[:3].tolist()
        verdicts.add(tok["verdict"])
    assert "joins" in verdicts


def test_the_api_names_what_it_cannot_take(indexed, tmp_path: Path) -> None:
    from actgeo_assets.report_server import MAX_K, MAX_TEXT_CHARS

    run, data_dir, _ = indexed
    bare = tmp_path / "bare"  # the run without its lookup index
    shutil.copytree(data_dir, bare)
    shutil.rmtree(bare / "demo" / "lookup")
    with serving(data_dir) as base:
        cases = {
            _lookup_url(base, text=""): (400, "the text is empty"),
            _lookup_url(base, text="   "): (400, "the text is empty"),
            _lookup_url(base, text="a" * (MAX_TEXT_CHARS + 1)): (400, f"at most {MAX_TEXT_CHARS:,}"),
            _lookup_url(base, text="x", k="many"): (400, f"from 0 to {MAX_K}"),
            _lookup_url(base, text="x", k=str(MAX_K + 1)): (400, f"from 0 to {MAX_K}"),
            f"{base}/api/lookup?text=x": (400, "name the run"),
            _lookup_url(base, run="../demo", text="x"): (400, "not a run's folder name"),
            _lookup_url(base, run="other", text="x"): (404, "runs here: demo"),
            f"{base}/api/nothing": (404, "/api/lookup"),
        }
        for url, (status, words) in cases.items():
            got, body = get_json(url)
            assert (got, words in body.get("error", "")) == (status, True), (url, body)
        assert get_json(f"{base}/api/status")[1]["loaded"] is None  # nothing above loaded a model
        # only requests to 127.0.0.1 or localhost: a page of another site reaching it (DNS rebinding) is refused
        got, body = get_json(_lookup_url(base, text="x"), headers={"Host": "evil.example:80"})
        assert got == 403 and "127.0.0.1 only" in body["error"]
    with serving(bare) as base:
        got, body = get_json(_lookup_url(base, text="x"))
        assert got == 409 and "no current lookup index" in body["error"]
        assert "actgeo lookup --build-index" in body["error"] and "lookup" in body["error"]
    with serving(data_dir, lookup=None) as base:  # a static server (no lookup service): 404, as anywhere else
        assert get_json(_lookup_url(base, text="x"))[0] == 404


class _Session:
    """A stand-in of ``LookupSession``: counts loads and how many answers run at once."""

    live = 0
    most = 0
    loads: list[str] = []

    def __init__(self, root: Path, run: str, release: Callable[[], None]) -> None:
        from actgeo_assets.lib.config.settings import RunSettings

        if run == "missing":
            from actgeo_assets.report_server import ApiError

            raise ApiError(404, "no finished run 'missing'")
        release()

        self.settings = RunSettings()
        self.index = type("I", (), {"index": type("F", (), {"ntotal": 7})(), "device": "cpu"})()
        self.timings = {"model": 0.0}
        self.changed = False
        _Session.loads.append(run)

    def stale(self) -> bool:
        return self.changed

    def answer(self, text: str, k: int = 3):  # noqa: ANN201 - a LookupResult's stand-in
        _Session.live += 1
        _Session.most = max(_Session.most, _Session.live)
        time.sleep(0.05)
        _Session.live -= 1
        return type("R", (), {"timings": {"forward": 0.05}, "tokens": [], "truncated": False})()


def test_one_run_at_a_time_and_requests_in_turn(tmp_path: Path) -> None:
    from actgeo_assets.report_server import ApiError, LookupService

    _Session.loads, _Session.most = [], 0
    service = LookupService(tmp_path, loader=_Session)
    query = {"run": ["a"], "text": ["hello"]}
    threads = [threading.Thread(target=service.lookup, args=(query,)) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert _Session.loads == ["a"] and _Session.most == 1  # loaded once; answered one at a time
    first = weakref.ref(service.session)
    assert service.lookup({"run": ["b"], "text": ["hi"]})["loaded_now"]
    gc.collect()
    assert first() is None and service.run == "b"  # the replaced run's session is freed, not kept beside
    assert not service.lookup({"run": ["b"], "text": ["hi"]})["loaded_now"]
    with pytest.raises(ApiError):  # a run that is not there keeps the loaded one
        service.lookup({"run": ["missing"], "text": ["hi"]})
    assert service.run == "b" and not service.lookup({"run": ["b"], "text": ["hi"]})["loaded_now"]
    service.session.changed = True  # its files changed on disk (e.g. the run was made again)
    assert service.lookup({"run": ["b"], "text": ["hi"]})["loaded_now"] and _Session.loads == ["a", "b", "b"]
    warm = service.lookup({"run": ["a"], "warm": ["1"]})  # loading without a text: what the page asks on focus
    assert warm["loaded_now"] and "tokens" not in warm and service.run == "a"


def test_a_real_session_is_freed_when_another_run_is_asked(indexed, tmp_path: Path) -> None:
    """Two runs of one data directory (the tiny run under a second name): the first one's session, with its
    model, index and components, is gone once the second is loaded."""
    from actgeo_assets.report_server import ApiError, LookupService

    _, data_dir, _ = indexed
    root = tmp_path / "data"
    shutil.copytree(data_dir, root)
    shutil.copytree(root / "demo", root / "again")
    service = LookupService(root)
    one = service.lookup({"run": ["demo"], "text": ["shall mean the union"]})
    first = weakref.ref(service.session)
    (root / "bare").mkdir()
    with pytest.raises(ApiError, match="runs here: again, demo"):  # not a run: the loaded one stays
        service.lookup({"run": ["bare"], "text": ["x"]})
    assert first() is service.session and service.run == "demo"
    two = service.lookup({"run": ["again"], "text": ["shall mean the union"]})
    gc.collect()
    assert first() is None and service.run == "again" and two["loaded_now"]
    assert two["tokens"] == one["tokens"] and two["run_id"] == one["run_id"]
