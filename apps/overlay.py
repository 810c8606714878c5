"""Grid drawings: the sub-image grid over a large image, the tile grid over a scene thumbnail,
with the cells an answer names highlighted. Row/column labels are the ones the answers use."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

from PIL import Image, ImageDraw, ImageFont

Box = tuple[float, float, float, float]  # (x0, y0, x1, y1) in the drawn image's pixels
Cell = tuple[int, int]  # (row, col)

GRID_COLOUR = (0, 220, 255)
HIGHLIGHT_COLOUR = (255, 210, 0)


def mosaic(tiles: Sequence[Image.Image], rows: int, cols: int, max_side: int = 1024) -> tuple[Image.Image, dict[Cell, Box]]:
    """The tiles (raster order, equal sizes) put back together, scaled to ``max_side``, and each
    cell's box: the picture of exactly what the model receives, padding included."""
    width, height = tiles[0].size
    canvas = Image.new("RGB", (cols * width, rows * height))
    for index, tile in enumerate(tiles):
        canvas.paste(tile, ((index % cols) * width, (index // cols) * height))
    scale = min(1.0, max_side / max(canvas.size))
    if scale < 1.0:
        size = (max(1, round(canvas.width * scale)), max(1, round(canvas.height * scale)))
        canvas = canvas.resize(size, Image.Resampling.LANCZOS)
    boxes = {
        (r, c): (c * width * scale, r * height * scale, (c + 1) * width * scale, (r + 1) * height * scale)
        for r in range(rows)
        for c in range(cols)
    }
    return canvas, boxes


def window_boxes(
    windows: Mapping[Cell, tuple[int, int, int, int]], full_size: tuple[int, int], shown_size: tuple[int, int]
) -> dict[Cell, Box]:
    """Cells' full-resolution pixel windows ``(col_off, row_off, width, height)`` -> boxes on a
    preview of ``shown_size`` of a scene of ``full_size`` (both (width, height))."""
    sx, sy = shown_size[0] / full_size[0], shown_size[1] / full_size[1]
    return {cell: (x * sx, y * sy, (x + w) * sx, (y + h) * sy) for cell, (x, y, w, h) in windows.items()}


def draw_grid(image: Image.Image, boxes: Mapping[Cell, Box], highlight: Collection[Cell] = ()) -> Image.Image:
    """A copy of ``image`` with every cell outlined and labelled ``r{row}c{col}`` at its centre;
    highlighted cells get a translucent fill and a thicker outline."""
    base = image.convert("RGBA")
    shade = Image.new("RGBA", base.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(shade)
    side = min((x1 - x0) for x0, _, x1, _ in boxes.values()) if boxes else base.width
    font = ImageFont.load_default(size=max(9, min(18, int(side / 5))))
    for (row, col), (x0, y0, x1, y1) in boxes.items():
        box = [round(x0), round(y0), round(x1) - 1, round(y1) - 1]
        if (row, col) in highlight:
            draw.rectangle(box, fill=(*HIGHLIGHT_COLOUR, 90), outline=(*HIGHLIGHT_COLOUR, 255), width=4)
        else:
            draw.rectangle(box, outline=(*GRID_COLOUR, 255), width=1)
        label, centre = f"r{row}c{col}", ((x0 + x1) / 2, (y0 + y1) / 2)
        left, top, right, bottom = draw.textbbox(centre, label, font=font, anchor="mm")
        draw.rectangle([left - 3, top - 2, right + 3, bottom + 2], fill=(0, 0, 0, 150))
        draw.text(centre, label, font=font, fill=(255, 255, 255, 255), anchor="mm")
    return Image.alpha_composite(base, shade).convert("RGB")
