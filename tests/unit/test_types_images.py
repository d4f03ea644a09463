"""Item / ImagePart value semantics and safe image decoding (omniret.types, omniret.images)."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from omniret.errors import DataError, OmniretError
from omniret.images import ImageError, is_image_path, load_image, to_rgb
from omniret.types import Hit, ImagePart, Item, as_items


def _png_bytes(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", **kw)
    return buf.getvalue()


# ----------------------------------------------------------------------------------------- Item
def test_item_text_image_and_interleaved_modalities(tmp_path):
    p = tmp_path / "a.png"
    Image.new("RGB", (4, 4), "red").save(p)
    assert Item("a red apple").modality == "text"
    assert Item(image=p).modality == "image"
    both = Item("make it blue", image=p)
    assert both.modality == "image,text"
    assert isinstance(both.parts[0], ImagePart) and both.parts[1] == "make it blue"  # image first
    inter = Item(parts=["look at", ImagePart(p), "and", "describe"])
    assert inter.texts == ["look at", "and", "describe"] and inter.text == "look at and describe"
    assert len(inter.images) == 1 and inter.images[0].path == str(p)


def test_item_rejects_empty_and_mixed_construction(tmp_path):
    with pytest.raises(ValueError, match="empty"):
        Item("")
    with pytest.raises(ValueError, match="either parts"):
        Item("x", parts=["y"])
    with pytest.raises(TypeError, match="part must be"):
        Item(parts=[3])
    with pytest.raises(TypeError, match="text must be str"):
        Item(text=b"bytes")  # type: ignore[arg-type]


def test_item_fingerprint_tracks_content_and_instruction():
    a, b = Item("a red apple"), Item("a red apple")
    assert a.fingerprint() == b.fingerprint() and a == b
    assert a.fingerprint() != Item("a green apple").fingerprint()
    inst = a.with_instruction("find images")
    assert inst.instruction == "find images" and inst.fingerprint() != a.fingerprint()
    assert inst.with_instruction(None).fingerprint() == a.fingerprint()
    # the same pixels as bytes or PIL give stable, content-based keys
    img = Image.new("RGB", (3, 2), (10, 20, 30))
    assert ImagePart(img).fingerprint() == ImagePart(img.copy()).fingerprint()
    data = _png_bytes(img)
    assert ImagePart(data) == ImagePart(bytes(data))
    assert ImagePart(data).fingerprint() != ImagePart(_png_bytes(Image.new("RGB", (3, 2)))).fingerprint()


def test_file_fingerprint_changes_when_file_changes(tmp_path):
    p = tmp_path / "x.png"
    Image.new("RGB", (4, 4)).save(p)
    before = ImagePart(p).fingerprint()
    Image.new("RGB", (8, 8)).save(p)
    assert ImagePart(p).fingerprint() != before


def test_as_items_and_hit_dict():
    items = as_items(["q", Item("d")])
    assert [i.text for i in items] == ["q", "d"]
    with pytest.raises(DataError, match="item 0: expected Item or str, got int"):
        as_items([1])  # type: ignore[list-item]
    h = Hit(id="x", score=0.5, modality="text", txt="t")
    assert h.to_dict() == {"id": "x", "score": 0.5, "rerank_score": None, "modality": "text", "txt": "t",
                           "img_path": None, "img_paths": [], "metadata": {}}


# ----------------------------------------------------------------------------------------- images
def test_corrupt_file_error_names_the_file(tmp_path):
    p = tmp_path / "broken.png"
    p.write_bytes(_png_bytes(Image.new("RGB", (64, 64), "blue"))[:60])  # truncated PNG
    with pytest.raises(ImageError, match="broken.png") as e:
        load_image(p)
    assert isinstance(e.value, OmniretError)
    with pytest.raises(ImageError, match="missing.jpg: no such image file"):
        load_image(tmp_path / "missing.jpg")


def test_unsupported_bytes_are_refused():
    with pytest.raises(ImageError, match="not a recognised image format"):
        load_image(b"%PDF-1.4 definitely not an image")
    with pytest.raises(ImageError, match="unsupported image source type"):
        load_image(12345)  # type: ignore[arg-type]


def test_decompression_bomb_refused_before_decoding(monkeypatch):
    # 4000x4000 = 16 MP of a single colour compresses to a few KB: a miniature bomb
    data = _png_bytes(Image.new("L", (4000, 4000)))
    decoded = []
    monkeypatch.setattr(Image.Image, "load", lambda self: decoded.append(1))
    with pytest.raises(ImageError, match="exceeds the pixel cap of 1000000"):
        load_image(data, max_pixels=1_000_000)
    assert decoded == []  # refused from the header alone
    with pytest.raises(ImageError, match="exceeds the pixel cap"):
        load_image(Image.new("RGB", (20, 20)), max_pixels=100)


def test_exif_orientation_is_applied():
    # a 40x20 image, left half red and right half blue; orientation 6 = "rotate 90 degrees clockwise to view"
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    img.paste((0, 0, 255), (20, 0, 40, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    img.save(buf, format="JPEG", exif=exif.tobytes(), quality=95)
    out = load_image(buf.getvalue())
    assert out.size == (20, 40)
    top, bottom = out.getpixel((10, 5)), out.getpixel((10, 35))
    assert top[0] > 200 and top[2] < 60  # red (the old left) is now on top
    assert bottom[2] > 200 and bottom[0] < 60


def test_rgba_composited_onto_white():
    img = Image.new("RGBA", (4, 4), (255, 0, 0, 0))  # fully transparent red
    img.putpixel((1, 1), (0, 0, 255, 255))
    img.putpixel((2, 2), (0, 0, 0, 128))  # half-transparent black
    out = load_image(_png_bytes(img))
    assert out.mode == "RGB"
    assert out.getpixel((0, 0)) == (255, 255, 255)
    assert out.getpixel((1, 1)) == (0, 0, 255)
    assert all(abs(c - 127) <= 1 for c in out.getpixel((2, 2)))


def test_palette_transparency_composited_onto_white():
    img = Image.new("P", (4, 4), 0)
    img.putpalette([0, 255, 0, 200, 0, 0] + [0] * (256 * 3 - 6))
    img.putpixel((3, 3), 1)
    out = load_image(_png_bytes(img, transparency=0))  # index 0 (green) is transparent
    assert out.mode == "RGB"
    assert out.getpixel((0, 0)) == (255, 255, 255)
    assert out.getpixel((3, 3)) == (200, 0, 0)


def test_grey_and_la_become_rgb():
    assert to_rgb(Image.new("L", (2, 2), 7)).getpixel((0, 0)) == (7, 7, 7)
    assert to_rgb(Image.new("LA", (2, 2), (0, 0))).getpixel((0, 0)) == (255, 255, 255)
    assert is_image_path("x/Y.JPG") and not is_image_path("notes.txt")
