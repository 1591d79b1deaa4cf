"""attnlab.viz.explore: one object, a live ipywidgets panel and a static HTML page.

The static page is checked in a browser by tests/test_book.py (the chapters use it);
here: what the object offers each front end, and the errors it raises.
"""

import base64
import io
import json
import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from attnlab.viz import MAX_STATES, choice, explore  # noqa: E402

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def bars(height, color="tab:blue"):
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.bar([0, 1], [height, 1 - height], color=color)
    ax.set_ylim(0, 1)
    return fig


def states(html):
    payload = re.search(r'<script type="application/json" class="attnlab-explorer-states">(.*?)</script>', html, re.S)
    return json.loads(payload[1].replace("<\\/", "</"))["states"]


def test_every_combination_is_drawn_once_with_its_own_alt_text():
    calls = []

    def draw(height, red):
        calls.append((height, red))
        return bars(height, "tab:red" if red else "tab:blue")

    explorer = explore(draw, caption="Two bars.", alt="Two bars that sum to 1.",
                       height=choice([0.1, 0.5, 0.9], value=0.5), red=choice([False, True], label="red"))
    found = states(explorer.static_html())
    assert sorted(calls) == sorted((h, r) for h in (0.1, 0.5, 0.9) for r in (False, True))
    assert len(found) == 6 and len({s["src"] for s in found.values()}) == 6
    assert found["2,1"]["alt"] == "Two bars that sum to 1. Shown for height = 0.9, red = on."
    for state in found.values():
        png = base64.b64decode(state["src"].removeprefix("data:image/png;base64,"))
        assert Image.open(io.BytesIO(png)).size == (300, 200)
    assert not plt.get_fignums(), "the precomputed figures were left open (Jupyter would show them all)"


def test_page_starts_at_the_starting_values_and_offers_only_static_ones():
    explorer = explore(lambda D: bars(D / 1024), caption="c", alt="a",
                       D=choice([4, 16, 64, 256, 1024], value=64, static=[4, 64, 1024]))
    html = explorer.static_html()
    assert len(states(html)) == 3
    assert re.search(r'type="range"[^>]*max="2"[^>]*value="1"', html)
    assert states(html)["1"]["src"] in html.split("<script")[0]  # the <img> shows D = 64


def test_live_kernels_get_a_widget_and_pages_get_html_from_the_same_object():
    explorer = explore(lambda temperature: bars(0.5), caption="c", alt="a",
                       temperature=choice([0.1, 1, 10], value=1))
    bundle = explorer._repr_mimebundle_()
    assert WIDGET_VIEW in bundle and "attnlab-explorer" in bundle["text/html"]
    slider = explorer.widget().children[0]
    assert slider.description == "temperature"
    assert slider.style.description_width == "initial", "a long label would be cut to 'temperat...'"
    plt.close("all")


@pytest.mark.parametrize("make, message", [
    (lambda: choice([]), "at least one option"),
    (lambda: choice([1, 2], value=3), "value 3 is not one of the options"),
    (lambda: choice([1, 2, 3], static=[4]), "static values [4] are not among"),
    (lambda: choice([1, 2, 3], value=2, static=[1, 3]), "starting value 2 must be one of the static"),
    (lambda: explore(bars, caption="c", alt="a"), "at least one control"),
    (lambda: explore(bars, caption="", alt="a", height=choice([0.5])), "caption and an alt text"),
    (lambda: explore(bars, caption="c", alt="a", height=[0.5]), "must be made with choice"),
    (lambda: explore(bars, caption="c", alt="a", height=choice(range(MAX_STATES + 1))), "65 precomputed figures"),
    (lambda: explore(bars, caption="c", alt="a", height=choice([True, False], static=[True])),
     "needs both True and False"),
])
def test_bad_explorers_are_refused_with_a_clear_message(make, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        make()
