"""The live view's Bokeh document: one per browser tab, fed from a :class:`LiveSnapshot`.

Mass spectrum (log scale) with the run's ranges as shaded, labelled bands; detector hit map
with a colour bar; V / setpoint, detection rate and laser energy against time; state,
counters, suspender and fault status; Pause / Resume / Abort when the view is served by the
run itself (a view of a file is read-only). Everything drawn is Bokeh models: no JavaScript
here. A periodic callback on the server's thread pulls from the snapshot; the engine never
waits for a browser.
"""

from __future__ import annotations

import html
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from bokeh.document import Document
from bokeh.layouts import column, row
from bokeh.models import (
    Button,
    ColorBar,
    ColumnDataSource,
    DataRange1d,
    Div,
    HoverTool,
    LabelSet,
    LinearColorMapper,
    Range1d,
    Span,
)
from bokeh.palettes import Category20_20, Viridis256
from bokeh.plotting import figure

from apt_daq.web.snapshot import BIN_DA, HITMAP_BINS, TRACE_FIELDS, LiveSnapshot, Status

REFRESH_MS = 500  # counters and traces
HIST_REFRESH_S = 1.0  # spectrum and hit map (bigger messages)
ABORT_CONFIRM_S = 10.0  # a first Abort click arms the button for this long
ENDED = ("done", "failed", "aborted", "interrupted")
SPECTRUM_FLOOR = 0.5  # empty bins are drawn here, below the axis start
TOOLS = "pan,box_zoom,wheel_zoom,reset,save"


@dataclass
class Controls:
    """What the buttons call: the Session's thread-safe pause/resume/abort."""

    pause: Callable[[], None]
    resume: Callable[[], None]
    abort: Callable[[], None]


def build(doc: Document, snap: LiveSnapshot, controls: Controls | None,
          poll: Callable[[], None] | None = None, time_label: str = "time (s)") -> None:
    """Fill ``doc`` with the live view of ``snap``; ``controls`` None makes it read-only.
    ``poll``, if given, runs on the server's thread before each refresh (to copy a run's state
    into the snapshot)."""
    view = _View(snap, controls, poll, time_label)
    doc.title = f"apt-daq live: {snap.title}"
    doc.add_root(view.layout)
    doc.add_periodic_callback(view.tick, REFRESH_MS)
    view.tick()


class _View:
    def __init__(self, snap: LiveSnapshot, controls: Controls | None,
                 poll: Callable[[], None] | None, time_label: str):
        self.snap, self.controls, self.poll = snap, controls, poll
        self.hist_version, self.hist_at = -1, 0.0
        self.trace_gen, self.trace_have = -1, 0
        self.abort_armed_at: float | None = None
        self._spectrum()
        self._hitmap()
        self._traces(time_label)
        self._panel()

    # -- figures
    def _spectrum(self) -> None:
        snap = self.snap
        x = snap.mass_centres_da()
        self.spec_src = ColumnDataSource({"x": x, "y": np.full(len(x), SPECTRUM_FLOOR)})
        y_range = DataRange1d(start=0.8, range_padding=0.3)
        p = figure(height=360, width=980, y_axis_type="log", y_range=y_range,
                   x_range=Range1d(0, snap.mass_max_da), tools=TOOLS,
                   title="mass spectrum (log scale); shaded: ranges",
                   x_axis_label="m/n (Da)", y_axis_label=f"counts per {BIN_DA:g} Da")
        b = snap.bands
        names = sorted(set(b.names), key=b.names.index)
        colour = {n: Category20_20[i % 20] for i, n in enumerate(names)}
        self.band_src = ColumnDataSource({
            "lo": b.lo_da, "hi": b.hi_da, "name": b.names,
            "colour": [colour[n] for n in b.names], "counts": np.zeros(len(b.names), np.int64),
            "bottom": np.full(len(b.names), 0.8), "top": np.full(len(b.names), 1e15)})
        bands = p.quad(left="lo", right="hi", bottom="bottom", top="top", source=self.band_src,
                       fill_color="colour", fill_alpha=0.25, line_alpha=0)
        line = p.step("x", "y", source=self.spec_src, mode="center", color="black",
                      line_width=1)
        y_range.renderers = [line]  # the bands reach to 1e15: autoscale on the counts only
        p.add_tools(HoverTool(renderers=[bands], tooltips=[
            ("ion", "@name"), ("range", "@lo{0.000} - @hi{0.000} Da"), ("counts", "@counts")]))
        self.label_src = ColumnDataSource({"x": [], "y": [], "text": [], "colour": []})
        p.add_layout(LabelSet(x="x", y="y", text="text", source=self.label_src,
                              text_font_size="9pt", text_color="colour", text_align="center",
                              y_offset=3))
        self.spectrum = p

    def _hitmap(self) -> None:
        r = self.snap.hitmap_extent_mm()
        self.hit_src = ColumnDataSource({"img": [np.zeros((HITMAP_BINS, HITMAP_BINS))]})
        self.mapper = LinearColorMapper(palette=Viridis256, low=0)
        p = figure(height=380, width=440, x_range=Range1d(-r, r), y_range=Range1d(-r, r),
                   tools=TOOLS, title="detector hit map", x_axis_label="x (mm)",
                   y_axis_label="y (mm)", match_aspect=True)
        p.image(image="img", x=-r, y=-r, dw=2 * r, dh=2 * r, source=self.hit_src,
                color_mapper=self.mapper)
        p.add_layout(ColorBar(color_mapper=self.mapper, title="hits per bin", width=12), "right")
        self.hitmap = p

    def _traces(self, time_label: str) -> None:
        self.trace_src = ColumnDataSource({k: [] for k in (*TRACE_FIELDS, "rate_pct")})
        common = {"width": 980, "height": 170, "tools": TOOLS, "x_axis_label": time_label}
        v = figure(title="specimen voltage", y_axis_label="V", **common)
        if self.snap.has_v_dc:
            v.line("time_s", "v_dc", source=self.trace_src, legend_label="measured",
                   color="navy")
        v.line("time_s", "v_setpoint", source=self.trace_src, legend_label="setpoint",
               color="orange", line_dash="dashed")
        v.legend.location = "top_left"
        rate = figure(title="detection rate", y_axis_label="ions/pulse (%)",
                      x_range=v.x_range, **common)
        rate.line("time_s", "rate_pct", source=self.trace_src, color="darkgreen")
        if math.isfinite(self.snap.target_rate):
            rate.add_layout(Span(location=100 * self.snap.target_rate, dimension="width",
                                 line_dash="dashed", line_color="black"))
        laser = figure(title="laser pulse energy", y_axis_label="pJ", x_range=v.x_range,
                       **common)
        laser.step("time_s", "laser_pj", source=self.trace_src, mode="after", color="purple")
        self.trace_figs = [v, rate, laser]

    def _panel(self) -> None:
        read_only = self.controls is None
        self.title = Div(text=(f"<h2 style='margin:4px 0'>{html.escape(self.snap.title)}</h2>"
                               + ("<i>read-only view of the run file</i>" if read_only
                                  else "<i>served by the run: the buttons act on it</i>")),
                         width=440)
        self.state_div = Div(text="", css_classes=["apt-state"], width=440)
        self.counters_div = Div(text="", css_classes=["apt-counters"], width=440)
        self.status_div = Div(text="", css_classes=["apt-status"], width=440)
        self.transitions_div = Div(text="", css_classes=["apt-transitions"], width=440)
        widgets: list[Any] = [self.title, self.state_div, self.counters_div, self.status_div]
        if not read_only:
            self.pause_btn = Button(label="Pause", button_type="warning", width=110,
                                    css_classes=["apt-pause"])
            self.resume_btn = Button(label="Resume", button_type="success", width=110,
                                     css_classes=["apt-resume"])
            self.abort_btn = Button(label="Abort (HV off)", button_type="danger", width=190,
                                    css_classes=["apt-abort"])
            self.pause_btn.on_click(self._on_pause)
            self.resume_btn.on_click(self._on_resume)
            self.abort_btn.on_click(self._on_abort)
            widgets.append(row(self.pause_btn, self.resume_btn, self.abort_btn))
        widgets.append(self.transitions_div)
        self.layout = column(
            row(column(*widgets, width=460), column(self.hitmap)),
            self.spectrum, *self.trace_figs)

    # -- buttons (server thread; the Session's calls are thread-safe)
    def _on_pause(self) -> None:
        self.controls.pause()
        self.tick()

    def _on_resume(self) -> None:
        self.controls.resume()
        self.tick()

    def _on_abort(self) -> None:
        now = time.monotonic()
        if self.abort_armed_at is None or now - self.abort_armed_at > ABORT_CONFIRM_S:
            self.abort_armed_at = now  # first click: arm, a second one within 10 s aborts
            self.abort_btn.label = "Click again: abort, HV off"
            return
        self.abort_armed_at = None
        self.abort_btn.label = "Aborting..."
        self.controls.abort()
        self.tick()

    # -- refresh
    def tick(self) -> None:
        if self.poll is not None:
            self.poll()
        st = self.snap.status_copy()
        self._status(st)
        self._push_traces()
        now = time.monotonic()
        if now - self.hist_at >= HIST_REFRESH_S:
            self._push_histograms()
            self.hist_at = now
        if self.controls is not None:
            ended = st.state in ENDED or st.state in ("stopping", "safe")
            self.pause_btn.disabled = ended or st.state == "paused"
            self.resume_btn.disabled = ended or st.state != "paused"
            self.abort_btn.disabled = ended
            if (self.abort_armed_at is not None
                    and now - self.abort_armed_at > ABORT_CONFIRM_S):
                self.abort_armed_at = None
                self.abort_btn.label = "Abort (HV off)"

    def _push_histograms(self) -> None:
        version, spectrum, hitmap = self.snap.histograms()
        if version == self.hist_version:
            return
        self.hist_version = version
        self.spec_src.data["y"] = np.where(spectrum > 0, spectrum, SPECTRUM_FLOOR)
        self.spec_src.data = dict(self.spec_src.data)
        self.hit_src.data = {"img": [hitmap.astype(np.float64)]}
        b = self.snap.bands
        if len(b.names):
            lo = np.clip((b.lo_da / BIN_DA).astype(int), 0, len(spectrum))
            hi = np.clip((b.hi_da / BIN_DA).astype(int) + 1, 0, len(spectrum))
            cum = np.concatenate([[0], np.cumsum(spectrum)])
            counts = cum[hi] - cum[lo]
            peaks = np.array([spectrum[a:z].max() if z > a else 0 for a, z in zip(lo, hi,
                                                                                   strict=True)])
            self.band_src.patch({"counts": [(slice(0, len(counts)), counts)]})
            # one label per ion, at its strongest range's peak
            best: dict[str, int] = {}
            for i, name in enumerate(b.names):
                if peaks[i] > 0 and (name not in best or peaks[i] > peaks[best[name]]):
                    best[name] = i
            idx = sorted(best.values())
            colours = self.band_src.data["colour"]
            self.label_src.data = {
                "x": [float(0.5 * (b.lo_da[i] + b.hi_da[i])) for i in idx],
                "y": [float(peaks[i]) for i in idx],
                "text": [b.names[i] for i in idx],
                "colour": [colours[i] for i in idx]}

    def _push_traces(self) -> None:
        gen, total, rows, replace = self.snap.traces(self.trace_gen, self.trace_have)
        if not replace and not len(rows["time_s"]):
            return
        rows["rate_pct"] = 100 * rows["rate"]
        if replace:
            self.trace_src.data = rows
        else:
            self.trace_src.stream(rows)
        self.trace_gen, self.trace_have = gen, total

    def _status(self, st: Status) -> None:
        self.state_div.text = _state_html(st)
        self.counters_div.text = _counters_html(st)
        self.status_div.text = _status_html(st, self.snap.suspenders)
        self.transitions_div.text = _transitions_html(st.transitions)


_STATE_COLOUR = {"acquiring": "#1a7f37", "paused": "#b35900", "failed": "#c00000",
                 "aborted": "#c00000", "interrupted": "#c00000", "done": "#1f4e9c"}


def _state_html(st: Status) -> str:
    colour = _STATE_COLOUR.get(st.state, "#444")
    return (f"<div style='font-size:20px'>state: <b class='apt-state-text' style='color:{colour}'>"
            f"{html.escape(st.state)}</b></div>")


def _counters_html(st: Status) -> str:
    rows = [("ions", f"<span class='apt-ions'>{st.ions:,}</span>"),
            ("pulses", f"{st.pulses:,}"),
            ("detection rate", f"{100 * st.rate:.3f} %"),
            ("V setpoint", f"{st.v_setpoint:,.0f} V"),
            ("laser", f"{st.laser_pj:g} pJ, step {st.step}" if math.isfinite(st.laser_pj)
             else f"step {st.step}")]
    if math.isfinite(st.v_dc):
        rows.insert(4, ("V measured", f"{st.v_dc:,.0f} V"))
    if st.hv_on is not None:
        rows.append(("HV output", "on" if st.hv_on == 1 else "off" if st.hv_on == 0
                     else "unknown"))
    if st.laser_on is not None:
        rows.append(("laser emission", "on" if st.laser_on == 1 else "off"
                     if st.laser_on == 0 else "unknown"))
    cells = "".join(f"<tr><td>{k}</td><td style='text-align:right;padding-left:12px'>{v}</td>"
                    "</tr>" for k, v in rows)
    return f"<table style='font-size:14px'>{cells}</table>"


def _status_html(st: Status, suspenders: list[str]) -> str:
    parts = []
    why = st.transitions[-1][2] if st.transitions else ""
    if st.state in ("failed", "interrupted") or st.safe_off_error:
        text = st.end_reason or why or st.state
        parts.append(f"<b style='color:#c00000'>fault:</b> {html.escape(text)}")
        if st.safe_off_error:
            parts.append(f"<b style='color:#c00000'>safe off failed:</b> "
                         f"{html.escape(st.safe_off_error)}")
    else:
        parts.append("fault: none")
    watched = html.escape(", ".join(suspenders))
    if st.state == "paused":
        by = "the operator" if why == "pause requested" else why
        parts.append(f"<b style='color:#b35900'>paused by:</b> {html.escape(by)}"
                     + (f" (suspenders watched: {watched})" if watched else ""))
    elif watched:  # a file does not record which suspenders its run watched
        parts.append(f"suspenders: {watched}" + (": clear" if st.state not in ENDED else ""))
    if st.end_reason and st.state in ENDED:
        parts.append(f"ended: {html.escape(st.end_reason)}")
    return "<div style='font-size:13px'>" + "<br>".join(parts) + "</div>"


def _transitions_html(transitions: list[tuple[float, str, str]]) -> str:
    rows = "".join(f"<tr><td style='text-align:right'>{t:.1f}</td><td>{html.escape(s)}</td>"
                   f"<td>{html.escape(w)}</td></tr>" for t, s, w in transitions[-8:])
    return ("<div style='font-size:12px'><b>transitions</b> (instrument time, s)"
            f"<table>{rows}</table></div>")
