"""The ``@@glocal`` progress protocol and the rich bar factory (glocal.progress)."""

from __future__ import annotations

from glocal import progress as P


def test_event_lines_round_trip(monkeypatch, capsys):
    P.emit_stage("precision check")
    assert capsys.readouterr().err == ""  # outside a cell: silent
    monkeypatch.setenv("GLOCAL_CELL", "1")
    P.emit_stage("precision check")
    P.emit_stage("evaluate:set5")
    P.emit_iter(17)
    P.emit_progress(3, 40, "gcvit on dist")
    P.emit_progress(2, None, "open-ended")
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["@@glocal stage precision-check", "@@glocal stage evaluate:set5", "@@glocal iter 17",
                     "@@glocal progress 3 40 gcvit_on_dist", "@@glocal progress 2 0 open-ended"]
    assert [P.parse_event(x) for x in lines] == [("stage", ["precision-check"]), ("stage", ["evaluate:set5"]),
                                                  ("iter", ["17"]), ("progress", ["3", "40", "gcvit_on_dist"]),
                                                  ("progress", ["2", "0", "open-ended"])]
    for other in ("WARNING: random weights", "@@glocal", "@@glocalx stage a", ""):
        assert P.parse_event(other) is None


def test_track_in_a_cell_sends_about_a_hundred_events(monkeypatch, capsys):
    monkeypatch.setenv("GLOCAL_CELL", "1")
    assert list(P.track(range(250), description="eval set")) == list(range(250))
    events = [P.parse_event(x) for x in capsys.readouterr().err.splitlines()]
    assert len(events) == 125 and events[0] == ("progress", ["2", "250", "eval_set"])  # every 2nd of 250
    assert events[-1] == ("progress", ["250", "250", "eval_set"])
    assert list(P.track(iter([1, 2]), enabled=False)) == [1, 2] and capsys.readouterr().err == ""


class _Bar:
    def __init__(self) -> None:
        self.calls: list[dict] = []

    def update(self, task, **kw) -> None:
        self.calls.append({"task": task, **kw})


def test_apply_event_updates_the_cell_row():
    bar = _Bar()
    assert P.apply_event(bar, 7, "gcvit cpu", "stage", ["latency"])
    assert P.apply_event(bar, 7, "gcvit cpu", "iter", ["12"])
    assert P.apply_event(bar, 7, "gcvit cpu", "progress", ["3", "0", "imagenet"])
    assert not P.apply_event(bar, 7, "gcvit cpu", "log", ["WARNING: x"])
    assert bar.calls == [
        {"task": 7, "description": "  gcvit cpu: latency", "total": None, "completed": 0},
        {"task": 7, "completed": 12},
        {"task": 7, "completed": 3, "total": None, "description": "  gcvit cpu: imagenet"},
    ]


def test_progress_bar_is_one_style_on_stderr():
    bar = P.progress_bar(disable=True)
    assert [type(c).__name__ for c in bar.columns] == ["TextColumn", "BarColumn", "MofNCompleteColumn",
                                                       "TimeElapsedColumn", "TimeRemainingColumn"]
    assert bar.console.stderr and bar.live.transient
    assert not P.progress_bar(transient=False).live.transient
