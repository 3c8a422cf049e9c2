"""One self-contained HTML page: every picture is embedded as a data URI, so the file can be
mailed, archived or opened from anywhere without the folder it came from."""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, field
from pathlib import Path

from torch import Tensor

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.2rem; margin-top: 2rem; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.5rem 0; } td, th { padding: 0.2rem 0.8rem; border-bottom: 1px solid #eee; text-align: left; }
figure { display: inline-block; margin: 0.4rem; vertical-align: top; } figcaption { font-size: 0.8rem; color: #555; }
img { image-rendering: pixelated; max-width: 100%; } .note { color: #555; font-size: 0.9rem; }
.cards { display: flex; flex-wrap: wrap; gap: 0.6rem; } .card { width: 140px; font-size: 0.75rem; overflow-wrap: anywhere; }
.card img { width: 128px; display: block; } .card .bad { color: #b00; }
"""


def png_bytes(image: Tensor) -> bytes:
    """(3, H, W) uint8 or float [0, 1] tensor -> PNG bytes."""
    from ..image_io import tensor_to_pil

    img = image if image.is_floating_point() else image.float() / 255.0
    buffer = io.BytesIO()
    tensor_to_pil(img).save(buffer, format="PNG")
    return buffer.getvalue()


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


@dataclass
class HtmlPage:
    """Sections of headings, paragraphs, tables and figures, rendered by :meth:`render`."""

    title: str
    parts: list[str] = field(default_factory=list)

    def heading(self, text: str) -> None:
        self.parts.append(f"<h2>{html.escape(text)}</h2>")

    def paragraph(self, text: str, note: bool = False) -> None:
        cls = ' class="note"' if note else ""
        self.parts.append(f"<p{cls}>{html.escape(text)}</p>")

    def table(self, rows: list[tuple[str, str]], header: tuple[str, str] | None = None) -> None:
        head = f"<tr><th>{html.escape(header[0])}</th><th>{html.escape(header[1])}</th></tr>" if header else ""
        body = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in rows)
        self.parts.append(f"<table>{head}{body}</table>")

    def figure(self, png: bytes, caption: str, width: int | None = None) -> None:
        size = f' width="{width}"' if width else ""
        alt = html.escape(caption, quote=True)
        self.parts.append(f'<figure><img src="{data_uri(png)}" alt="{alt}"{size}><figcaption>{html.escape(caption)}</figcaption></figure>')

    def cards(self, items: list[tuple[bytes, list[str]]], flagged: list[bool] | None = None) -> None:
        """Small images in a wrapping row, each with its lines of text below; a flagged card's
        last line is shown in red (e.g. a wrong answer)."""
        flags = flagged or [False] * len(items)
        out = []
        for (png, lines), bad in zip(items, flags):
            text = "".join(
                f'<div class="bad">{html.escape(t)}</div>' if bad and i == len(lines) - 1 else f"<div>{html.escape(t)}</div>"
                for i, t in enumerate(lines)
            )
            out.append(f'<div class="card"><img src="{data_uri(png)}" alt="{html.escape(lines[0] if lines else "", quote=True)}">{text}</div>')
        self.parts.append(f'<div class="cards">{"".join(out)}</div>')

    def render(self) -> str:
        body = "\n".join(self.parts)
        return (
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(self.title)}</title><style>{STYLE}</style></head>\n"
            f"<body><h1>{html.escape(self.title)}</h1>\n{body}\n</body></html>\n"
        )

    def write(self, path: str | Path) -> None:
        Path(path).write_text(self.render(), encoding="utf-8")
