"""Draw the MCP Bundle's icon (mcpb/icon.png): a play button over three rising bars, on a rounded square.

Pure standard library (zlib + struct), so regenerating it needs nothing installed:
`python3 mcpb/make_icon.py`. The output is deterministic; the committed PNG is this script's output.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

SIZE = 512
RADIUS = 96
BACKGROUND = (17, 24, 39)  # slate
BARS = (45, 212, 191)  # teal: analytics
PLAY = (255, 0, 80)  # TikTok-ish red: video
BAR_BOXES = ((120, 300, 180, 400), (226, 240, 286, 400), (332, 180, 392, 400))
PLAY_TRIANGLE = ((200, 96), (200, 224), (312, 160))


def _inside_rounded_square(x: float, y: float) -> bool:
    cx = min(max(x, RADIUS), SIZE - RADIUS)
    cy = min(max(y, RADIUS), SIZE - RADIUS)
    return (x - cx) ** 2 + (y - cy) ** 2 <= RADIUS**2


def _inside_triangle(x: float, y: float) -> bool:
    (ax, ay), (bx, by), (cx, cy) = PLAY_TRIANGLE

    def side(px: float, py: float, qx: float, qy: float) -> float:
        return (x - qx) * (py - qy) - (px - qx) * (y - qy)

    d1, d2, d3 = side(ax, ay, bx, by), side(bx, by, cx, cy), side(cx, cy, ax, ay)
    return not ((d1 < 0 or d2 < 0 or d3 < 0) and (d1 > 0 or d2 > 0 or d3 > 0))


def pixel(x: int, y: int) -> tuple[int, int, int, int]:
    px, py = x + 0.5, y + 0.5
    if not _inside_rounded_square(px, py):
        return (0, 0, 0, 0)
    if _inside_triangle(px, py):
        return (*PLAY, 255)
    if any(x0 <= px < x1 and y0 <= py < y1 for x0, y0, x1, y1 in BAR_BOXES):
        return (*BARS, 255)
    return (*BACKGROUND, 255)


def png_bytes() -> bytes:
    rows = b"".join(b"\x00" + bytes(c for x in range(SIZE) for c in pixel(x, y)) for y in range(SIZE))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", SIZE, SIZE, 8, 6, 0, 0, 0)  # 8-bit RGBA
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b"")


if __name__ == "__main__":
    target = Path(__file__).resolve().parent / "icon.png"
    target.write_bytes(png_bytes())
    print(f"wrote {target}")
