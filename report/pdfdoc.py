"""A small A4 layout on matplotlib: headings, paragraphs, bullets, monospace tables and images
flowing down pages, lines wrapped by their measured width, tables shrunk to the text width.
Every block's text is kept in `blocks`: a test checks what the PDF says without a PDF reader."""
import functools
import os
import re
import textwrap

import matplotlib
matplotlib.use("Agg")
import matplotlib.image as mpimg  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.backends.backend_agg import RendererAgg  # noqa: E402
from matplotlib.backends.backend_pdf import PdfPages  # noqa: E402
from matplotlib.font_manager import FontProperties  # noqa: E402

SANS, MONO = "DejaVu Sans", "DejaVu Sans Mono"
NUMBER = re.compile(r"^([-+]?\d[^A-Za-z]*|–)?$")  # numbers (no words), dashes, blanks: right-aligned
RENDERER = RendererAgg(72, 72, 72)  # 72 dpi: one pixel is one point


@functools.lru_cache(maxsize=None)
def width_in(text, size, family=SANS, weight="normal"):
    """Width of a text in inches as Agg draws it."""
    prop = FontProperties(family=family, weight=weight, size=size)
    return RENDERER.get_text_width_height_descent(text, prop, ismath=False)[0] / 72 if text else 0.0


def wrap(text, width, size, weight="normal"):
    """Greedy word wrap by measured width (inches)."""
    lines, cur = [], ""
    for word in text.split():
        trial = f"{cur} {word}" if cur else word
        if cur and width_in(trial, size, SANS, weight) > width:
            lines.append(cur)
            trial = word
        cur = trial
    return lines + ([cur] if cur else [])


def table_lines(header, rows, wrap_at):
    """(header lines, [lines of each row]) of a monospace table: columns as wide as their body
    (headers wrap to fit), cells of numbers right-aligned."""
    cols = range(len(header))
    cells = [[textwrap.wrap(str(c), wrap_at[i]) or [""] if i in wrap_at else [str(c)] for i, c in enumerate(r)]
             for r in rows]
    body = [max([len(ln) for r in cells for ln in r[i]] + [8]) for i in cols]
    head = [textwrap.wrap(h, body[i], break_long_words=False) for i, h in enumerate(header)]
    widths = [max(len(ln) for r in [head] + cells for ln in r[i]) for i in cols]
    right = [i > 0 and all(NUMBER.match(r[i][0]) for r in cells) for i in cols]

    def lines(r):
        depth = max(len(c) for c in r)
        padded = [c + [""] * (depth - len(c)) for c in r]
        return ["  ".join(c[k].rjust(w) if right[i] else c[k].ljust(w)
                          for i, (c, w) in enumerate(zip(padded, widths))).rstrip() for k in range(depth)]
    return lines(head), [lines(r) for r in cells]


class Doc:
    W, H, M = 8.27, 11.69, 0.75  # A4 and its margin, inches
    SIZES = {0: 17, 1: 13, 2: 10.5}

    def __init__(self, footer):
        self.footer, self.figs, self.blocks = footer, [], []
        self.fig, self.y = None, 0.0
        self.new_page()

    @property
    def text_w(self):
        return self.W - 2 * self.M

    def new_page(self):
        self.fig = plt.figure(figsize=(self.W, self.H))
        self.figs.append(self.fig)
        self.fig.text(0.5, 0.4 / self.H, f"{self.footer} — page {len(self.figs)}", ha="center", fontsize=7,
                      color="#666666")
        self.y = self.M

    def room(self, h):
        """Start a new page unless h inches still fit on this one."""
        if self.y + h > self.H - self.M:
            self.new_page()

    def put(self, x, text, size, **kw):
        self.fig.text(x / self.W, 1 - self.y / self.H, text, fontsize=size, va="top", ha="left", parse_math=False,
                      **kw)  # a '$' in a label is text, not mathtext

    def heading(self, text, level=1):
        size = self.SIZES[level]
        self.room({0: 0.8, 1: 2.6, 2: 2.2}[level])  # a heading keeps some of its text with it
        self.y += 0.12 if level else 0
        for ln in wrap(text, self.text_w, size, "bold"):
            self.put(self.M, ln, size, weight="bold", color="#1b3a66" if level < 2 else "black")
            self.y += size / 72 * 1.4
        self.y += 0.05
        self.blocks.append((f"h{level}", text))

    def para(self, text, size=9, bullet=False, color="black"):
        x = self.M + (0.18 if bullet else 0)
        lh = size / 72 * 1.4
        for i, ln in enumerate(wrap(text, self.W - self.M - x, size)):
            self.room(lh)
            if bullet and i == 0:
                self.put(self.M + 0.03, "•", size)
            self.put(x, ln, size, color=color)
            self.y += lh
        self.y += lh * 0.45
        self.blocks.append(("p", text))

    def bullets(self, items, size=9):
        for it in items:
            self.para(it, size=size, bullet=True)

    def table(self, header, rows, wrap_at=None, size=8.0, note=None, intro=None):
        """A monospace table, after its intro paragraph and before its note; wrap_at = {column:
        characters} wraps long cells over lines."""
        head, body = table_lines(header, rows, wrap_at or {})
        longest = max([*head, *(ln for block in body for ln in block)], key=len)
        head.append("-" * len(longest))
        size = min(size, size * self.text_w / max(width_in(longest, size, MONO), 1e-6))
        lh = size / 72 * 1.35
        self.room(lh * min(len(body) * 2 + 3, 14) + (0.6 if intro else 0))  # short tables stay on one page
        if intro:
            self.para(intro)
        self.put_lines(head, size, lh, bold=len(head) - 1)
        for block in body:
            if self.y + lh * len(block) > self.H - self.M:
                self.new_page()
                self.put_lines(head, size, lh, bold=len(head) - 1)  # the header again on the new page
            self.put_lines(block, size, lh)
        self.y += lh * 0.7
        self.blocks.append(("table", " | ".join(header)))
        if note:
            self.para(note, size=7.5, color="#333333")

    def put_lines(self, lines, size, lh, bold=0):
        """Monospace lines, the first `bold` of them bold."""
        for k, ln in enumerate(lines):
            self.put(self.M, ln, size, family=MONO, weight="bold" if k < bold else "normal")
            self.y += lh

    def image(self, path, caption, width=None):
        img = mpimg.imread(path)
        width = min(width or self.text_w, self.text_w)
        h = width * img.shape[0] / img.shape[1]
        self.room(h + 0.5)
        ax = self.fig.add_axes([(self.W - width) / 2 / self.W, 1 - (self.y + h) / self.H, width / self.W, h / self.H])
        ax.imshow(img)
        ax.axis("off")
        self.y += h + 0.1
        self.blocks.append(("image", os.path.basename(path)))
        self.para(caption, size=8, color="#333333")

    def save(self, path, pages_dir=None):
        """Write the PDF (and, with pages_dir, every page as page-NN.png); returns the page count."""
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with PdfPages(path) as pdf:
            for fig in self.figs:
                pdf.savefig(fig)
        if pages_dir:
            os.makedirs(pages_dir, exist_ok=True)
            for i, fig in enumerate(self.figs, 1):
                fig.savefig(os.path.join(pages_dir, f"page-{i:02d}.png"), dpi=100)
        for fig in self.figs:
            plt.close(fig)
        return len(self.figs)
