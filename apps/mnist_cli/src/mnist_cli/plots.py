"""Pictures drawn with Pillow alone: training curves and a confusion matrix (PNG)."""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from mnist_cli.files import write_bytes_atomic

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont
Color = tuple[int, int, int]

BACKGROUND: Color = (255, 255, 255)
INK: Color = (40, 40, 40)
GRID: Color = (225, 225, 225)
TRAIN: Color = (31, 119, 180)
VALIDATION: Color = (255, 127, 14)


def _font(size: int) -> Font:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values covering [low, high]."""
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        return [low]
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step) * step
    return [first + i * step for i in range(int((high - first) / step + 1e-9) + 1)]


def _panel(
    draw: ImageDraw.ImageDraw,
    box: tuple[int, int, int, int],
    title: str,
    epochs: Sequence[int],
    series: Mapping[str, tuple[Sequence[float | None], Color]],
    percent: bool,
) -> None:
    """One line chart inside ``box`` (left, top, right, bottom).

    The legend goes where the curves usually are not: top right for a loss (it falls), bottom
    right for an accuracy (it rises).
    """
    font, small = _font(15), _font(12)
    left, top, right, bottom = box
    plot_left, plot_top, plot_right, plot_bottom = left + 60, top + 30, right - 15, bottom - 40
    draw.text(((left + right) // 2, top + 5), title, fill=INK, font=font, anchor="mt")
    values = [v for data, _ in series.values() for v in data if v is not None and math.isfinite(v)]
    if not values or not epochs:
        draw.text((left + 60, top + 60), "no data", fill=INK, font=small)
        return
    low, high = min(values), max(values)
    if percent:
        low, high = max(0.0, low - 0.02), min(1.0, high + 0.02)
    pad = (high - low) * 0.05 or max(abs(high) * 0.05, 1e-3)
    low, high = low - pad, high + pad
    first, last = min(epochs), max(epochs)
    span = max(last - first, 1)

    def x_of(epoch: float) -> float:
        return plot_left + (epoch - first) / span * (plot_right - plot_left)

    def y_of(value: float) -> float:
        return plot_bottom - (value - low) / (high - low) * (plot_bottom - plot_top)

    for tick in _nice_ticks(low, high):
        y = y_of(tick)
        draw.line([(plot_left, y), (plot_right, y)], fill=GRID)
        label = f"{tick:.0%}" if percent else f"{tick:.3g}"
        draw.text((plot_left - 6, y), label, fill=INK, font=small, anchor="rm")
    step = max(1, math.ceil(span / 10))
    for epoch in range(first, last + 1, step):
        x = x_of(epoch)
        draw.line([(x, plot_bottom), (x, plot_bottom + 4)], fill=INK)
        draw.text((x, plot_bottom + 6), str(epoch), fill=INK, font=small, anchor="mt")
    draw.text(
        ((plot_left + plot_right) // 2, bottom - 14), "epoch", fill=INK, font=small, anchor="mm"
    )
    draw.rectangle([plot_left, plot_top, plot_right, plot_bottom], outline=INK)
    legend_y = plot_bottom - 8 - 18 * (len(series) - 1) if percent else plot_top + 8
    for name, (data, color) in series.items():
        points = [
            (x_of(e), y_of(v))
            for e, v in zip(epochs, data, strict=True)
            if v is not None and math.isfinite(v)
        ]
        if not points:
            continue
        if len(points) > 1:
            draw.line(points, fill=color, width=2)
        for x, y in points:
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=color)
        draw.line([(plot_right - 110, legend_y), (plot_right - 90, legend_y)], fill=color, width=3)
        draw.text((plot_right - 84, legend_y), name, fill=INK, font=small, anchor="lm")
        legend_y += 18


def history_png(history: Sequence[Mapping[str, Any]], title: str) -> bytes:
    """Loss and accuracy per epoch (training and, when present, validation) as a PNG."""
    width, height = 1000, 420
    image = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    draw.text((width // 2, 8), title, fill=INK, font=_font(16), anchor="mt")
    epochs = [int(row["epoch"]) for row in history]

    def column(key: str) -> list[float | None]:
        return [row.get(key) for row in history]

    has_val = any(row.get("val_loss") is not None for row in history)
    loss: dict[str, tuple[Sequence[float | None], Color]] = {"train": (column("loss"), TRAIN)}
    accuracy: dict[str, tuple[Sequence[float | None], Color]] = {
        "train": (column("accuracy"), TRAIN)
    }
    if has_val:
        loss["validation"] = (column("val_loss"), VALIDATION)
        accuracy["validation"] = (column("val_accuracy"), VALIDATION)
    _panel(draw, (0, 30, width // 2, height), "loss", epochs, loss, percent=False)
    _panel(draw, (width // 2, 30, width, height), "accuracy", epochs, accuracy, percent=True)
    return _png(image)


def write_history_png(path: Path, history: Sequence[Mapping[str, Any]], title: str) -> None:
    """``history_png`` written atomically to ``path``."""
    write_bytes_atomic(path, history_png(history, title), "plot")


def confusion_png(confusion: Tensor, title: str) -> bytes:
    """The confusion matrix (rows: true class, columns: predicted) as a shaded grid with counts."""
    classes = int(confusion.shape[0])
    cell, margin_left, margin_top = 48, 80, 80
    width = margin_left + classes * cell + 30
    height = margin_top + classes * cell + 30
    image = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    font, small = _font(15), _font(12)
    draw.text((width // 2, 8), title, fill=INK, font=font, anchor="mt")
    draw.text(
        (margin_left + classes * cell // 2, margin_top - 42),
        "predicted",
        fill=INK,
        font=small,
        anchor="mm",
    )
    draw.text((14, margin_top + classes * cell // 2), "true", fill=INK, font=small, anchor="lm")
    totals = confusion.sum(1).clamp(min=1).tolist()
    for i in range(classes):
        draw.text(
            (margin_left + i * cell + cell // 2, margin_top - 8),
            str(i),
            fill=INK,
            font=small,
            anchor="mb",
        )
        draw.text(
            (margin_left - 8, margin_top + i * cell + cell // 2),
            str(i),
            fill=INK,
            font=small,
            anchor="rm",
        )
        for j in range(classes):
            count = int(confusion[i, j])
            share = count / totals[i]
            # white -> blue for the diagonal, white -> red for the mistakes
            target = (31, 119, 180) if i == j else (214, 39, 40)
            shade = min(1.0, share if i == j else share * 4)
            color = tuple(round(255 + (t - 255) * shade) for t in target)
            x0, y0 = margin_left + j * cell, margin_top + i * cell
            draw.rectangle([x0, y0, x0 + cell, y0 + cell], fill=color, outline=GRID)
            if count:
                text_color = BACKGROUND if shade > 0.6 else INK
                draw.text(
                    (x0 + cell // 2, y0 + cell // 2),
                    str(count),
                    fill=text_color,
                    font=small,
                    anchor="mm",
                )
    return _png(image)


def write_confusion_png(path: Path, confusion: Tensor, title: str) -> None:
    """``confusion_png`` written atomically to ``path``."""
    write_bytes_atomic(path, confusion_png(confusion, title), "confusion matrix picture")
