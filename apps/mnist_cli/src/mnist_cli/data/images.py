"""Image files (PNG, JPEG, anything Pillow reads) turned into MNIST-style 28x28 digits.

MNIST's preparation, which :func:`prepare_digit` follows: the digit is bright on a dark
background; it is cropped to its bounding box, scaled (anti-aliased) so that the longer side is
20 pixels with the aspect ratio kept, and pasted into a 28x28 field so that its centre of mass
(intensity-weighted mean pixel position) falls on the field's centre, pixel (14, 14).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import cast

import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from mnist_cli.data.datasets import Dataset
from mnist_cli.data.errors import DataError
from mnist_cli.data.idx import StrPath

FIELD = 28
BOX = 20
CENTRE = 14.0
NOISE_FLOOR = 0.15  # fraction of the digit's peak brightness below which a pixel is background
MIN_CONTRAST = 24.0  # grey levels between background and the brightest ink; less is "blank"


def load_image(path: StrPath) -> torch.Tensor:
    """One image file as a uint8 (28, 28) digit, bright on dark and centred like MNIST."""
    name = os.fspath(path)
    return prepare_digit(_read_gray(name), name)


def load_images(paths: Sequence[StrPath]) -> Dataset:
    """Several image files as a label-less Dataset of uint8 (N, 28, 28) digits, in order."""
    if not paths:
        raise DataError("no image files given")
    digits = torch.stack([load_image(p) for p in paths])
    label = os.fspath(paths[0]) if len(paths) == 1 else f"{len(paths)} image files"
    return Dataset(digits, None, label)


def _read_gray(name: str) -> torch.Tensor:
    """Decode an image file into a uint8 (H, W) grey-level tensor; errors name the file."""
    try:
        with Image.open(name) as opened:
            opened.load()
            img = ImageOps.exif_transpose(opened)
    except FileNotFoundError:
        raise DataError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{name}: is a folder, not an image file") from None
    except UnidentifiedImageError:
        raise DataError(f"{name}: not an image file (expected PNG or JPEG)") from None
    except Image.DecompressionBombError:
        raise DataError(f"{name}: image too large to decode safely") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{name}: damaged or unreadable image ({exc})") from None
    return _to_tensor(_flatten_to_gray(img))


def _flatten_to_gray(img: Image.Image) -> Image.Image:
    """Grey levels; transparent pixels become the background that contrasts with the ink."""
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        lo, hi = cast(tuple[float, float], img.convert("F").getextrema())
        span = hi - lo or 1.0
        return img.convert("F").point(lambda v: (v - lo) * 255.0 / span).convert("L")
    if img.mode == "P" or img.mode.endswith("A") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        alpha = rgba.getchannel("A")
        if cast(tuple[int, int], alpha.getextrema())[0] < 255:
            gray = rgba.convert("L")
            ink = _mean(gray, alpha.point(lambda a: 255 if a >= 128 else 0))
            background = Image.new("L", rgba.size, 0 if ink >= 128 else 255)
            return Image.composite(gray, background, alpha)
        return rgba.convert("L")
    return img.convert("L")


def _mean(img: Image.Image, mask: Image.Image) -> float:
    hist = img.histogram(mask)
    count = sum(hist)
    return sum(i * n for i, n in enumerate(hist)) / count if count else 0.0


def _to_tensor(img: Image.Image) -> torch.Tensor:
    width, height = img.size
    return torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).reshape(height, width)


def _to_image(tensor: torch.Tensor) -> Image.Image:
    height, width = tensor.shape
    data = tensor.contiguous().numpy().tobytes()
    return Image.frombytes("L", (int(width), int(height)), data)


def prepare_digit(gray: torch.Tensor, name: str = "<image>") -> torch.Tensor:
    """Any-size grey image ``uint8 (H, W)`` -> MNIST-style digit ``uint8 (28, 28)``.

    Polarity: the median of the border pixels is the background; a bright background
    (black-on-white) is inverted. The background level is subtracted, the ink stretched to
    0..255, pixels under ``NOISE_FLOOR`` of the peak zeroed; then crop, scale the longer side to
    20 and centre by centre of mass in a 28x28 field.
    """
    if gray.dim() != 2 or gray.dtype != torch.uint8 or min(gray.shape) < 1:
        raise DataError(f"{name}: expected a uint8 (H, W) grey image, got {tuple(gray.shape)}")
    x = gray.to(torch.float32)
    border = torch.cat((x[0], x[-1], x[:, 0], x[:, -1]))
    background = float(border.median())
    if background > 127.5:
        x = 255.0 - x
        background = 255.0 - background
    x = (x - background).clamp_(min=0.0)
    peak = float(x.max())
    if peak < MIN_CONTRAST:
        raise DataError(f"{name}: no digit found (the image is blank)")
    x.mul_(255.0 / peak)
    x[x < NOISE_FLOOR * 255.0] = 0.0
    rows = torch.nonzero(x.sum(dim=1)).flatten()
    cols = torch.nonzero(x.sum(dim=0)).flatten()
    top, bottom = int(rows[0]), int(rows[-1]) + 1
    left, right = int(cols[0]), int(cols[-1]) + 1
    crop = x[top:bottom, left:right].round().to(torch.uint8)

    height, width = crop.shape
    scale = BOX / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    # area averaging when shrinking (anti-aliased, no ringing), bilinear when enlarging
    method = Image.Resampling.BOX if scale < 1.0 else Image.Resampling.BILINEAR
    patch = _to_tensor(_to_image(crop).resize(size, method))

    weights = patch.to(torch.float64)
    total = float(weights.sum())
    if total == 0.0:
        raise DataError(f"{name}: no digit found (the image is blank)")
    com_row = float((weights.sum(dim=1) * torch.arange(patch.shape[0])).sum()) / total
    com_col = float((weights.sum(dim=0) * torch.arange(patch.shape[1])).sum()) / total
    field = Image.new("L", (FIELD, FIELD), 0)
    # centre of mass on the centre, but never push ink off the field
    top = min(max(round(CENTRE - com_row), 0), FIELD - patch.shape[0])
    left = min(max(round(CENTRE - com_col), 0), FIELD - patch.shape[1])
    field.paste(_to_image(patch), (left, top))
    return _to_tensor(field)
