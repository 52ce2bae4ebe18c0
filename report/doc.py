"""A small A4 layout engine on matplotlib: headings, paragraphs, bullets, monospace tables and
images flowing over pages.  Lines are wrapped by measured width (not a character count) and
tables shrink their font to the text width, so nothing runs off the page."""
import functools
import os
import re

import matplotlib
matplotlib.use("Agg")
import matplotlib.image as mpimg  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.backends.backend_pdf import PdfPages  # noqa: E402
from matplotlib.font_manager import FontProperties  # noqa: E402
from matplotlib.backends.backend_agg import RendererAgg  # noqa: E402

SANS, MONO = "DejaVu Sans", "DejaVu Sans Mono"
NUMERIC = re.compile(r"^[-+−]?\d")  # a cell that starts as a number is right-aligned
MONO_ADVANCE = 0.602  # DejaVu Sans Mono: every glyph is 0.602 em wide


_RENDERER = RendererAgg(100, 100, 72)  # 72 dpi: one pixel = one point


@functools.lru_cache(maxsize=None)
def word_width_in(w, size, weight="normal"):
    """Width of a word in inches as Agg renders it (each word measured once)."""
    prop = FontProperties(family=SANS, weight=weight, size=size)
    return _RENDERER.get_text_width_height_descent(w, prop, ismath=False)[0] / 72 if w else 0.0


def wrap(s, width_in, size, weight="normal"):
    """Greedy word wrap by measured width: a line = its words plus one space between each."""
    space = word_width_in("x x", size, weight) - 2 * word_width_in("x", size, weight)
    lines, cur, cur_w = [], [], 0.0
    for w in s.split():
        ww = word_width_in(w, size, weight)
        if cur and cur_w + space + ww > width_in:
            lines.append(" ".join(cur))
            cur, cur_w = [w], ww
        else:
            cur_w += (space if cur else 0.0) + ww
            cur.append(w)
    return lines + ([" ".join(cur)] if cur else [])


class Doc:
    W, H, M = 8.27, 11.69, 0.75  # A4, margin (inches)

    def __init__(self, path, footer):
        self.pdf, self.figs, self.footer, self.fig = PdfPages(path), [], footer, None
        self.n_section = 0
        self.new_page()

    @property
    def text_w(self):
        return self.W - 2 * self.M

    def new_page(self):
        if self.fig is not None:
            self._finish()
        self.fig = plt.figure(figsize=(self.W, self.H))
        self.y = self.M

    def _finish(self):
        self.fig.text(0.5, 0.35 / self.H, f"{self.footer} — page {len(self.figs) + 1}", ha="center", fontsize=7,
                      color="#777777")
        self.pdf.savefig(self.fig)
        self.figs.append(self.fig)

    def _need(self, h):
        if self.y + h > self.H - self.M:
            self.new_page()

    def _text(self, x, s, size, **kw):
        self.fig.text(x / self.W, 1 - self.y / self.H, s, fontsize=size, va="top", ha="left", **kw)

    def section(self, title):
        """A numbered level-1 heading: sections left out (no data) leave no gap in the numbers."""
        self.n_section += 1
        self.heading(f"{self.n_section}. {title}")

    def heading(self, s, level=1):
        size = {0: 16, 1: 12.5, 2: 10.5}[level]
        self._need({0: 1.0, 1: 2.2, 2: 0.8}[level])  # a heading keeps some of its section with it
        self.y += 0.1 if level else 0
        for ln in wrap(s, self.text_w, size, "bold"):
            self._text(self.M, ln, size, weight="bold", color="#1a3c6e" if level < 2 else "black")
            self.y += size / 72 * 1.45
        self.y += 0.04

    def para(self, s, size=9, indent=0.0, bullet=False, color="black", weight="normal"):
        x = self.M + indent + (0.16 if bullet else 0)
        lh = size / 72 * 1.38
        for i, ln in enumerate(wrap(s, self.W - self.M - x, size, weight)):
            self._need(lh)
            if bullet and i == 0:
                self._text(self.M + indent, "•", size)
            self._text(x, ln, size, family=SANS, color=color, weight=weight)
            self.y += lh
        self.y += lh * 0.4

    def bullets(self, items, **kw):
        for it in items:
            if it:
                self.para(it, bullet=True, **kw)

    def table(self, header, rows, size=7.5, right=None):
        """Monospace table; numeric-looking columns right-aligned; the font shrinks to fit the width;
        a page break repeats the header."""
        rows = [[str(c) for c in r] for r in rows]
        cols = [max(len(x) for x in [h] + [r[i] for r in rows]) for i, h in enumerate(header)]
        right = right or [i > 0 and all(NUMERIC.match(r[i]) or r[i] in ("", "–") for r in rows)
                          for i in range(len(header))]
        line = lambda r: "  ".join(c.rjust(w) if right[i] else c.ljust(w) for i, (c, w) in enumerate(zip(r, cols)))  # noqa: E731
        size = min(size, self.text_w * 72 / (MONO_ADVANCE * len(line(header))))
        lh = size / 72 * 1.42
        head = [line(header), line(["-" * w for w in cols])]
        self._need(lh * (len(rows) + 3 if len(rows) <= 16 else 8))  # short tables stay on one page
        for k, ln in enumerate(head):
            self._text(self.M, ln, size, family=MONO, weight="bold" if k == 0 else "normal")
            self.y += lh
        for r in rows:
            if self.y + lh > self.H - self.M:
                self.new_page()
                for k, ln in enumerate(head):
                    self._text(self.M, ln, size, family=MONO, weight="bold" if k == 0 else "normal")
                    self.y += lh
            self._text(self.M, line(r), size, family=MONO)
            self.y += lh
        self.y += lh * 0.8

    def image(self, path, caption=None, width=None):
        img = mpimg.imread(path)
        width = min(width or self.text_w, self.text_w)
        h = width * img.shape[0] / img.shape[1]
        self._need(h + 0.45)
        ax = self.fig.add_axes([self.M / self.W, 1 - (self.y + h) / self.H, width / self.W, h / self.H])
        ax.imshow(img)
        ax.axis("off")
        self.y += h + 0.08
        if caption:
            self.para(caption, size=8, color="#333333")

    def close(self, pages_dir=None):
        self._finish()
        self.pdf.close()
        if pages_dir:
            os.makedirs(pages_dir, exist_ok=True)
            for i, f in enumerate(self.figs, 1):
                f.savefig(os.path.join(pages_dir, f"page-{i}.png"), dpi=90)
        for f in self.figs:
            plt.close(f)
