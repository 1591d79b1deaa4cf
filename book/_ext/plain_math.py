"""Math where MathJax does not run: browser-tab titles, the navigation, search.

MathJax typesets a page's body, but a heading's text also lands in places no
MathJax ever sees: the browser tab (`<title>`), the table of contents on the search
page, the search index and the snippets under each search result. There, TeX shows
raw (`why we divide by \\sqrt{D}`).

* `PlainMathTitles` turns math in section titles into plain Unicode text (`√D`)
  while the document is read, so every title derived from it is readable.
* On the search page, `_static/plain-math-search.js` swaps each `.math` element of
  a result snippet for its plain text, from a table this extension writes after the
  build with the same `tex_to_text`, for every formula of the book.
"""

import json
import re
from pathlib import Path

from docutils import nodes
from sphinx.transforms import SphinxTransform

GREEK = {
    "alpha": "α", "beta": "β", "gamma": "γ", "delta": "δ", "epsilon": "ε", "varepsilon": "ε",
    "zeta": "ζ", "eta": "η", "theta": "θ", "iota": "ι", "kappa": "κ", "lambda": "λ",
    "mu": "μ", "nu": "ν", "xi": "ξ", "pi": "π", "rho": "ρ", "sigma": "σ", "tau": "τ",
    "upsilon": "υ", "phi": "φ", "varphi": "φ", "chi": "χ", "psi": "ψ", "omega": "ω",
    "Gamma": "Γ", "Delta": "Δ", "Theta": "Θ", "Lambda": "Λ", "Xi": "Ξ", "Pi": "Π",
    "Sigma": "Σ", "Phi": "Φ", "Psi": "Ψ", "Omega": "Ω",
}
SYMBOLS = {
    **GREEK,
    "cdot": "·", "times": "×", "div": "÷", "pm": "±", "le": "≤", "leq": "≤", "ge": "≥",
    "geq": "≥", "ne": "≠", "neq": "≠", "approx": "≈", "sim": "∼", "equiv": "≡", "propto": "∝",
    "infty": "∞", "to": "→", "rightarrow": "→", "leftarrow": "←", "Rightarrow": "⇒",
    "iff": "⇔", "mapsto": "↦", "in": "∈", "notin": "∉", "subset": "⊂", "cup": "∪",
    "cap": "∩", "emptyset": "∅", "forall": "∀", "exists": "∃", "neg": "¬", "wedge": "∧",
    "vee": "∨", "sum": "Σ", "prod": "∏", "partial": "∂", "nabla": "∇", "odot": "⊙",
    "otimes": "⊗", "oplus": "⊕", "circ": "∘", "star": "⋆", "ell": "ℓ", "prime": "′",
    "ldots": "…", "dots": "…", "cdots": "⋯", "langle": "⟨", "rangle": "⟩", "lceil": "⌈",
    "rceil": "⌉", "lfloor": "⌊", "rfloor": "⌋", "mid": "|", "vert": "|", "lvert": "|",
    "rvert": "|", "Vert": "‖", "|": "‖", "top": "ᵀ", "intercal": "ᵀ", "colon": ":",
    "quad": " ", "qquad": " ", ",": " ", ";": " ", ":": " ", "!": "", " ": " ",
    "left": "", "right": "", "big": "", "Big": "", "bigg": "", "Bigg": "",
    "{": "\x01", "}": "\x02", "_": "_", "%": "%", "#": "#", "&": "&", "$": "$", "\\": " ",
}
DOUBLE_STRUCK = {"R": "ℝ", "N": "ℕ", "Z": "ℤ", "Q": "ℚ", "C": "ℂ", "E": "𝔼", "P": "ℙ"}
SUPERSCRIPT = dict(zip("0123456789+-=()nijkT", "⁰¹²³⁴⁵⁶⁷⁸⁹⁺⁻⁼⁽⁾ⁿⁱʲᵏᵀ"))
SUBSCRIPT = dict(zip("0123456789+-=()ijklmnstvx", "₀₁₂₃₄₅₆₇₈₉₊₋₌₍₎ᵢⱼₖₗₘₙₛₜᵥₓ"))
GROUP = r"\{((?:[^{}]|\{(?:[^{}]|\{[^{}]*\})*\})*)\}"  # a {...} group, nested up to 3 deep


def _script(body, table, mark):
    body = body.strip()
    if body and all(ch in table for ch in body):
        return "".join(table[ch] for ch in body)
    return mark + (body if len(body) == 1 else f"({body})")


def tex_to_text(tex):
    """Plain Unicode for a TeX formula: `\\frac{q \\cdot k}{\\sqrt{D}}` -> `q · k/√D`."""
    text = re.sub(r"\\(begin|end)\s*\{[^}]*\}", " ", tex)  # environments: keep their content
    for command in ("operatorname", "text", "textrm", "textbf", "textit", "mathrm", "mathbf",
                    "mathit", "mathsf", "mathtt", "boldsymbol", "bm", "mathcal", "mbox"):
        text = re.sub(rf"\\{command}\*?\s*{GROUP}", r"\1", text)
    text = re.sub(rf"\\mathbb\s*{GROUP}", lambda m: "".join(DOUBLE_STRUCK.get(c, c) for c in m[1]), text)
    text = re.sub(r"\\mathbb\s*([A-Z])", lambda m: DOUBLE_STRUCK.get(m[1], m[1]), text)
    for _ in range(3):  # nested fractions and roots, innermost first
        text = re.sub(rf"\\[dt]?frac\s*{GROUP}\s*{GROUP}", lambda m: f"{_wrap(m[1])}/{_wrap(m[2])}", text)
        text = re.sub(rf"\\sqrt\s*{GROUP}", lambda m: "√" + _wrap(m[1]), text)
    text = re.sub(r"\\sqrt\s*(\w)", r"√\1", text)
    text = re.sub(r"\^\s*\\(top|intercal|prime)\b", lambda m: SYMBOLS[m[1]], text)
    text = re.sub(r"\\([A-Za-z]+|.)", lambda m: SYMBOLS.get(m[1], m[1]), text)
    text = re.sub(rf"\^\s*(?:{GROUP}|([^\s{{}}]))", lambda m: _script(m[1] or m[2], SUPERSCRIPT, "^"), text)
    text = re.sub(rf"_\s*(?:{GROUP}|([^\s{{}}]))", lambda m: _script(m[1] or m[2], SUBSCRIPT, "_"), text)
    text = text.replace("{", "").replace("}", "").replace("&", " ").replace("~", " ")
    text = text.replace("\x01", "{").replace("\x02", "}")  # braces the formula shows: \{0, 1\}
    return re.sub(r"\s+", " ", text).strip()


def _wrap(part):
    part = part.strip()
    return part if re.fullmatch(r"[\w\\]+|\\[A-Za-z]+\{[^{}]*\}", part) else f"({part})"


class PlainMathTitles(SphinxTransform):
    """Section titles hold plain text where they held math, before anyone copies them."""

    default_priority = 200  # before the title collectors and the search indexer read them

    def apply(self):
        for title in self.document.findall(nodes.title):
            for math in list(title.findall(nodes.math)):
                math.replace_self(nodes.Text(tex_to_text(math.astext())))


def collect_formulas(app, doctree):
    """Every formula of a page and its plain text, kept in the environment per page."""
    formulas = app.env.__dict__.setdefault("plain_math_formulas", {})
    formulas[app.env.docname] = {
        node.astext().strip(): tex_to_text(node.astext().strip())
        for node in doctree.findall(lambda n: isinstance(n, (nodes.math, nodes.math_block)))
    }


def forget_formulas(app, env, docname):
    env.__dict__.setdefault("plain_math_formulas", {}).pop(docname, None)


def merge_formulas(app, env, docnames, other):
    env.__dict__.setdefault("plain_math_formulas", {}).update(
        {d: f for d, f in getattr(other, "plain_math_formulas", {}).items() if d in docnames})


SEARCH_SCRIPT = r"""// Search result snippets: formulas as plain text (written by book/_ext/plain_math.py).
(function () {
  var plain = %(table)s;
  function patch() {  // Search is a global const of searchtools.js, which loads after this file
    if (typeof Search === "undefined" || !Search.htmlToText) return;
    var htmlToText = Search.htmlToText;
    Search.htmlToText = function (htmlString, anchor) {
      var page = new DOMParser().parseFromString(htmlString, "text/html");
      page.querySelectorAll(".math").forEach(function (math) {
        var tex = math.textContent.trim().replace(/^\\[([]|\\[)\]]$/g, "").trim();
        math.textContent = plain[tex] || tex.replace(/\\([A-Za-z]+)/g, "$1").replace(/[{}]/g, "");
      });
      return htmlToText.call(this, page.documentElement.outerHTML, anchor);
    };
  }
  // Registered before searchtools.js registers Search.init, so it runs first.
  document.addEventListener("DOMContentLoaded", patch);
})();
"""


def write_search_script(app, exception):
    if exception or app.builder.format != "html":
        return
    formulas = {}
    for page in getattr(app.env, "plain_math_formulas", {}).values():
        formulas.update(page)
    table = json.dumps(formulas, ensure_ascii=False, sort_keys=True)
    target = Path(app.outdir) / "_static" / "plain-math-search.js"
    target.write_text(SEARCH_SCRIPT % {"table": table}, encoding="utf-8")


def search_page_script(app, pagename, templatename, context, doctree):
    if pagename == "search":
        app.add_js_file("plain-math-search.js", priority=900)  # after searchtools.js


def setup(app):
    app.add_transform(PlainMathTitles)
    app.connect("doctree-read", collect_formulas)
    app.connect("env-purge-doc", forget_formulas)
    app.connect("env-merge-info", merge_formulas)
    app.connect("html-page-context", search_page_script)
    app.connect("build-finished", write_search_script)
    # env_version: a new version makes Sphinx read every page again (the table above)
    return {"env_version": 1, "parallel_read_safe": True, "parallel_write_safe": True}
