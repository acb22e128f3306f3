"""Image files turned into MNIST-style digits: polarity, crop, 20-pixel box, centre of mass."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw

from mnist_cli.data import DataError, load_embedded, load_image, load_images, prepare_digit

Colour = int | tuple[int, ...]


def draw_seven(size: tuple[int, int], ink: Colour, paper: Colour, mode: str = "L") -> Image.Image:
    """A '7' drawn off-centre with thick strokes on a canvas of ``size`` (width, height)."""
    w, h = size
    img = Image.new(mode, size, paper)
    draw = ImageDraw.Draw(img)
    stroke = max(2, w // 25)
    draw.line([(0.15 * w, 0.2 * h), (0.55 * w, 0.2 * h)], fill=ink, width=stroke)
    draw.line([(0.55 * w, 0.2 * h), (0.3 * w, 0.85 * h)], fill=ink, width=stroke)
    return img


def centre_of_mass(digit: torch.Tensor) -> tuple[float, float]:
    w = digit.double()
    idx = torch.arange(28, dtype=torch.float64)
    return float((w.sum(1) * idx).sum() / w.sum()), float((w.sum(0) * idx).sum() / w.sum())


def bbox(digit: torch.Tensor) -> tuple[int, int]:
    rows = torch.nonzero(digit.sum(1)).flatten()
    cols = torch.nonzero(digit.sum(0)).flatten()
    return int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)


def assert_mnist_like(digit: torch.Tensor) -> None:
    assert digit.shape == (28, 28) and digit.dtype == torch.uint8
    row, col = centre_of_mass(digit)
    assert abs(row - 14.0) <= 0.75 and abs(col - 14.0) <= 0.75
    assert max(bbox(digit)) in (20, 21)  # longer side scaled to 20 (+1 for resampling fringe)
    # polarity: bright digit on a dark field
    assert int(digit.max()) >= 200
    border = torch.cat((digit[0], digit[-1], digit[:, 0], digit[:, -1]))
    assert float((border == 0).float().mean()) > 0.8
    for corner in (digit[:4, :4], digit[:4, -4:], digit[-4:, -4:]):
        assert int(corner.max()) == 0
    assert float(digit.float().mean()) < 80


@pytest.mark.parametrize("size", [(300, 200), (64, 90), (1600, 1200), (12, 14)])
def test_black_on_white_and_white_on_black_give_the_same_digit(
    tmp_path: Path, size: tuple[int, int]
) -> None:
    dark_on_light = tmp_path / "a.png"
    light_on_dark = tmp_path / "b.png"
    draw_seven(size, ink=0, paper=255).save(dark_on_light)
    draw_seven(size, ink=255, paper=0).save(light_on_dark)
    a, b = load_image(dark_on_light), load_image(light_on_dark)
    assert torch.equal(a, b)
    assert_mnist_like(a)


def test_jpeg_grey_paper_and_colour(tmp_path: Path) -> None:
    ref = load_image_from(draw_seven((240, 240), ink=255, paper=0), tmp_path / "ref.png")
    photo = draw_seven((240, 240), ink=(40, 40, 90), paper=(205, 200, 190), mode="RGB")
    path = tmp_path / "photo.jpg"
    photo.save(path, quality=90)
    digit = load_image(path)
    assert_mnist_like(digit)
    assert float((digit.float() - ref.float()).abs().mean()) < 12


def load_image_from(img: Image.Image, path: Path) -> torch.Tensor:
    img.save(path)
    return load_image(path)


def test_transparent_background(tmp_path: Path) -> None:
    ref = load_image_from(draw_seven((200, 200), ink=255, paper=0), tmp_path / "ref.png")
    for ink in ((0, 0, 0, 255), (255, 255, 255, 255)):
        rgba = draw_seven((200, 200), ink=ink, paper=(0, 0, 0, 0), mode="RGBA")
        assert torch.equal(load_image_from(rgba, tmp_path / "t.png"), ref)


@pytest.mark.parametrize("mode", ["1", "P", "LA", "RGB", "I;16"])
def test_other_pixel_modes(tmp_path: Path, mode: str) -> None:
    ref = load_image_from(draw_seven((90, 90), ink=255, paper=0), tmp_path / "ref.png")
    img = draw_seven((90, 90), ink=0, paper=255)
    converted = img.point(lambda v: v * 257, "I") if mode.startswith("I") else img.convert(mode)
    if mode == "I;16":
        converted = converted.convert("I;16")
    assert torch.equal(load_image_from(converted, tmp_path / "m.png"), ref)


def test_ink_is_never_pushed_off_the_field() -> None:
    canvas = torch.zeros(400, 400, dtype=torch.uint8)
    canvas[0:120, 0:120] = 255  # a heavy blob in one corner ...
    canvas[115:400, 115:121] = 255  # ... and a long thin stroke down from it
    digit = prepare_digit(canvas)
    assert max(bbox(digit)) == 20
    assert int(digit[-1].max()) > 0 and int(digit[0].max()) == 0  # stroke kept to the bottom row


def test_aspect_ratio_kept() -> None:
    canvas = torch.zeros(300, 300, dtype=torch.uint8)
    canvas[50:250, 140:160] = 255  # a '1': 200 tall, 20 wide
    digit = prepare_digit(canvas)
    height, width = bbox(digit)
    assert height == 20 and width in (2, 3, 4)
    assert_mnist_like(digit)


def test_real_mnist_digits_are_left_almost_unchanged() -> None:
    """MNIST digits are already prepared this way: preparing them again changes little."""
    digits = load_embedded("test").images[::25]
    again = torch.stack([prepare_digit(d) for d in digits])
    assert float((again.float() - digits.float()).abs().mean()) < 3.0


def test_load_images_dataset(tmp_path: Path) -> None:
    paths = []
    for i, size in enumerate([(50, 60), (120, 80)]):
        paths.append(tmp_path / f"{i}.png")
        draw_seven(size, ink=0, paper=255).save(paths[-1])
    ds = load_images(paths)
    assert ds.images.shape == (2, 28, 28) and ds.labels is None and len(ds) == 2


def test_not_an_image_names_the_file(tmp_path: Path) -> None:
    fake = tmp_path / "digit.png"
    fake.write_text("this is not a PNG\n")
    with pytest.raises(DataError) as exc:
        load_image(fake)
    assert str(fake) in str(exc.value) and "not an image" in str(exc.value)
    with pytest.raises(DataError) as exc2:
        load_images([tmp_path / "missing.png"])
    assert "missing.png" in str(exc2.value) and "no such file" in str(exc2.value)
    broken = tmp_path / "cut.png"
    draw_seven((100, 100), 0, 255).save(broken)
    broken.write_bytes(broken.read_bytes()[:60])
    with pytest.raises(DataError) as exc3:
        load_image(broken)
    assert str(broken) in str(exc3.value)
    for exc_info in (exc, exc2, exc3):
        assert "\n" not in str(exc_info.value)


def test_blank_image_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "blank.png"
    Image.new("L", (40, 40), 255).save(path)
    with pytest.raises(DataError, match=r"blank\.png: no digit found"):
        load_image(path)
