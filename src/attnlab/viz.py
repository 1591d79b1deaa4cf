"""Plots and widgets shared by the chapters (needs matplotlib; widgets need ipywidgets).

Kept out of the attention code so that ``import attnlab`` needs only torch.
"""

import base64
import hashlib
import html
import io
import itertools
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib.pyplot as plt
import torch
from torch import Tensor


def plot_weights(weights: Tensor, queries=None, keys=None, ax=None, title=None, annotate=True):
    """Heatmap of one attention-weight matrix: row = query, column = key.

    Masked entries (weight exactly 0) are drawn hatched-grey so a mask is visible.

    Shapes:
        weights: (T, S)
        queries: T labels or None; keys: S labels or None
    """
    if weights.dim() != 2:
        raise ValueError(f"plot_weights needs a (T, S) matrix, got shape {tuple(weights.shape)}")
    w = weights.detach().float().cpu()
    T, S = w.shape
    ax = ax or plt.gca()
    shown = torch.where(w == 0, torch.full_like(w, float("nan")), w)
    image = ax.imshow(shown.numpy(), cmap="viridis", vmin=0.0, vmax=1.0)
    ax.set_facecolor("#dddddd")
    ax.set_xticks(range(S), labels=keys if keys is not None else range(S))
    ax.set_yticks(range(T), labels=queries if queries is not None else range(T))
    ax.set_xlabel("key")
    ax.set_ylabel("query")
    if title:
        ax.set_title(title)
    if annotate and T * S <= 100:
        for i in range(T):
            for j in range(S):
                value = w[i, j].item()
                color = "white" if value < 0.6 else "black"
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", color=color, fontsize=8)
    return image


# ------------------------------------------------------------------ explorers
# A figure that follows a few controls. With a live kernel it is an ipywidgets
# control panel that redraws the figure; on a static page (the built book, GitHub,
# nbviewer) it is plain HTML: the figure precomputed for every combination of the
# controls' values, switched by ordinary HTML inputs and ten lines of JavaScript.
# One object carries both renderings in its MIME bundle; the front end picks.

MAX_STATES = 64  # precomputed figures per explorer: about 3-6 KiB each on the page


@dataclass(frozen=True)
class Choice:
    """The values one control of an explorer steps through.

    options: every value the live widget offers, in order;
    value:   the starting value (default: the first option);
    label:   shown next to the control (default: the parameter's name);
    static:  the values precomputed for pages without a kernel (default: all options).
    """

    options: tuple
    value: Any = None
    label: str | None = None
    static: tuple | None = None

    @property
    def start(self) -> Any:
        return self.options[0] if self.value is None else self.value

    @property
    def page_options(self) -> tuple:
        return self.options if self.static is None else self.static


def choice(options: Sequence, value: Any = None, label: str | None = None, static: Sequence | None = None) -> Choice:
    """One control of :func:`explore`; see :class:`Choice`."""
    options = tuple(options)
    static = None if static is None else tuple(static)
    if not options:
        raise ValueError("choice() needs at least one option")
    if value is not None and value not in options:
        raise ValueError(f"choice(): value {value!r} is not one of the options {options}")
    if static is not None:
        missing = [v for v in static if v not in options]
        if missing:
            raise ValueError(f"choice(): static values {missing} are not among the options {options}")
        start = options[0] if value is None else value
        if start not in static:
            raise ValueError(f"choice(): the starting value {start!r} must be one of the static values {static}")
    return Choice(options, value, label, static)


def _kind(values: tuple) -> str:
    if all(isinstance(v, bool) for v in values):
        return "toggle"
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return "slider"
    return "buttons"


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _png_data_uri(fig, dpi: int, colors: int = 64) -> tuple[str, int, int]:
    """The figure as a palette PNG (a few KiB) in a data: URI, with its pixel size."""
    from PIL import Image

    raw = io.BytesIO()
    fig.savefig(raw, format="png", dpi=dpi)
    raw.seek(0)
    image = Image.open(raw).convert("RGB").quantize(colors=colors, method=Image.Quantize.MEDIANCUT)
    packed = io.BytesIO()
    image.save(packed, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(packed.getvalue()).decode(), image.width, image.height


_EXPLORER_SCRIPT = """(function () {
  var root = document.getElementById("%(id)s");
  if (!root || root.dataset.ready) return;
  root.dataset.ready = "1";
  var data = JSON.parse(root.querySelector("script.attnlab-explorer-states").textContent);
  var image = root.querySelector("img");
  var controls = root.querySelectorAll("[data-control]");
  function index(control) {
    if (control.type === "checkbox") return control.checked ? control.dataset.on : control.dataset.off;
    if (control.tagName === "FIELDSET") return control.querySelector("input:checked").value;
    return control.value;
  }
  function update() {
    var key = Array.prototype.map.call(controls, index).join(",");
    controls.forEach(function (control) {
      var shown = control.parentNode.querySelector("output");
      if (shown) shown.textContent = data.labels[control.dataset.control][control.value];
    });
    image.src = data.states[key].src;
    image.alt = data.states[key].alt;
  }
  root.addEventListener("input", update);
  root.addEventListener("change", update);
})();"""


class Explorer:
    """A figure that follows a few controls; see :func:`explore`."""

    def __init__(self, draw: Callable[..., Any], controls: dict[str, Choice], caption: str, alt: str, dpi: int = 100):
        if not controls:
            raise ValueError("explore() needs at least one control, e.g. D=choice([4, 16, 64])")
        if not caption.strip() or not alt.strip():
            raise ValueError("explore() needs a caption and an alt text (what the picture shows, in words)")
        n_states = math.prod(len(c.page_options) for c in controls.values())
        if n_states > MAX_STATES:
            sizes = " x ".join(f"{len(c.page_options)} {name}" for name, c in controls.items())
            raise ValueError(
                f"explore(): {sizes} = {n_states} precomputed figures, more than {MAX_STATES}; "
                "pass fewer values in choice(..., static=[...])"
            )
        for name, control in controls.items():
            if _kind(control.page_options) == "toggle" and set(control.page_options) != {False, True}:
                raise ValueError(f"explore(): the on/off control {name!r} needs both True and False among its static values")
        self.draw, self.controls, self.caption, self.alt, self.dpi = draw, controls, caption, alt, dpi

    # ------------------------------------------------------------ live widget
    def widget(self):
        """The live ipywidgets panel, or None where ipywidgets is not installed."""
        try:
            import ipywidgets as widgets
            from IPython.display import display
        except ImportError:
            return None

        def show(**settings):
            fig = self.draw(**settings)
            display(fig)
            plt.close(fig)

        style = {"description_width": "initial"}  # labels in full, never cut to "temperat..."
        inputs = {}
        for name, control in self.controls.items():
            label = control.label or name
            kind = _kind(control.options)
            if kind == "toggle":
                inputs[name] = widgets.Checkbox(value=control.start, description=label, indent=False)
            elif kind == "slider":
                inputs[name] = widgets.SelectionSlider(
                    options=[(_text(v), v) for v in control.options], value=control.start,
                    description=label, style=style, layout=widgets.Layout(width="min(100%, 28em)"))
            else:
                inputs[name] = widgets.ToggleButtons(
                    options=[(_text(v), v) for v in control.options], value=control.start,
                    description=label, style=style)
        output = widgets.interactive_output(show, inputs)
        return widgets.VBox([*inputs.values(), output])

    # ------------------------------------------------------------ static page
    def static_html(self) -> str:
        """Self-contained HTML: every precomputed figure and the inputs that switch them."""
        names = list(self.controls)
        states, labels = {}, {}
        for name in names:
            labels[name] = [_text(v) for v in self.controls[name].page_options]
        first = None
        grids = [range(len(self.controls[n].page_options)) for n in names]
        for indices in itertools.product(*grids):
            settings = {n: self.controls[n].page_options[i] for n, i in zip(names, indices)}
            fig = self.draw(**settings)
            src, width, height = _png_data_uri(fig, self.dpi)
            plt.close(fig)
            said = ", ".join(f"{self.controls[n].label or n} = {_text(v)}" for n, v in settings.items())
            states[",".join(map(str, indices))] = {"src": src, "alt": f"{self.alt} Shown for {said}."}
            if all(settings[n] == self.controls[n].start for n in names):
                first = (",".join(map(str, indices)), width, height)
        key, width, height = first
        payload = json.dumps({"states": states, "labels": labels}).replace("</", "<\\/")
        uid = "attnlab-explorer-" + hashlib.sha1(payload.encode()).hexdigest()[:12]  # stable across builds
        rows = []
        for name in names:
            control = self.controls[name]
            options, label = control.page_options, html.escape(control.label or name)
            at = options.index(control.start)
            kind = _kind(options)
            if kind == "toggle":
                checked = " checked" if control.start else ""
                rows.append(
                    f'<label><input type="checkbox" data-control="{name}" data-on="{options.index(True)}" '
                    f'data-off="{options.index(False)}"{checked}> {label}</label>')
            elif kind == "slider":
                rows.append(
                    f'<label><span class="attnlab-explorer-label">{label}</span> '
                    f'<input type="range" data-control="{name}" min="0" max="{len(options) - 1}" step="1" '
                    f'value="{at}" aria-label="{label}"> <output>{html.escape(_text(options[at]))}</output></label>')
            else:
                buttons = "".join(
                    f'<label><input type="radio" name="{uid}-{name}" value="{i}"{" checked" if i == at else ""}> '
                    f"{html.escape(_text(v))}</label>" for i, v in enumerate(options))
                rows.append(f'<fieldset data-control="{name}"><legend>{label}</legend>{buttons}</fieldset>')
        return (
            f'<figure class="attnlab-explorer" id="{uid}">'
            f'<form class="attnlab-explorer-controls" onsubmit="return false">{"".join(rows)}</form>'
            f'<img src="{states[key]["src"]}" alt="{html.escape(states[key]["alt"])}" width="{width}" height="{height}">'
            f"<figcaption>{html.escape(self.caption)} <small>(Precomputed for the values above; run the "
            "notebook for the live version.)</small></figcaption>"
            f'<script type="application/json" class="attnlab-explorer-states">{payload}</script>'
            f"<script>{_EXPLORER_SCRIPT % {'id': uid}}</script></figure>"
        )

    def _repr_mimebundle_(self, include=None, exclude=None):
        bundle = {"text/plain": f"<explorer: {self.caption}>", "text/html": self.static_html()}
        widget = self.widget()
        if widget is not None:
            bundle.update(widget._repr_mimebundle_(include=include, exclude=exclude) or {})
        return bundle


def explore(draw: Callable[..., Any], *, caption: str, alt: str, dpi: int = 100, **controls: Choice) -> Explorer:
    """A figure a reader can explore, with or without a running kernel.

    ``draw(**settings)`` returns a matplotlib Figure for one value of every control.
    In Jupyter (or Colab) the explorer is a live ipywidgets panel that calls ``draw``
    on every move; on a static page it switches between figures precomputed for every
    combination of the controls' ``static`` values (at most 64), with no kernel.

        explore(show, caption="...", alt="...",
                D=choice([4, 16, 64, 256], value=64),
                scaled=choice([True, False], label="divide by sqrt(D)"))
    """
    for name, control in controls.items():
        if not isinstance(control, Choice):
            raise ValueError(f"explore(): control {name!r} must be made with choice(...), got {control!r}")
    return Explorer(draw, controls, caption, alt, dpi)
