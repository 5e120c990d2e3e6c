"""``folder:DIR``: one sub-folder per class of PNG/JPEG images (``train/`` + ``test/`` or a seeded split); images
are read as 8-bit (0..255)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

from toolchain.data.checks import check_pair_shapes
from toolchain.data.splits import DatasetSplits, finish, split_all
from toolchain.errors import DatasetError
from toolchain.specs import DatasetSpec, SourceNormalisation, SplitParams

FORM = "folder:DIR"
DESCRIPTION = "DIR/<class>/*.png|jpg (or DIR/train/<class>, DIR/test/<class>)"
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")
_EIGHT_BIT = SourceNormalisation(1.0 / 255.0, "declared", "8-bit images: 0..255")


def rows() -> list[dict[str, Any]]:
    ok = importlib.util.find_spec("PIL") is not None
    return [{"spec": FORM, "description": DESCRIPTION, "offline": ok,
             "detail": "local images" if ok else "needs pillow"}]


def _list_class_folder(root: Path) -> dict[str, list[Path]]:
    classes: dict[str, list[Path]] = {}
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(f for f in sub.iterdir()
                       if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            raise DatasetError("class folder has no PNG/JPEG images", received=str(sub))
        classes[sub.name] = files
    if not classes:
        raise DatasetError("image folder has no class sub-folders (expected DIR/<class>/*.png or "
                           "DIR/train/<class>/ + DIR/test/<class>/)", received=str(root))
    return classes


def _read_images(files: list[Path], mode: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    arrays = []
    size = None
    for f in files:
        try:
            with Image.open(f) as im:
                im = im.convert(mode)
                arr = np.asarray(im, dtype=np.uint8)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise DatasetError("corrupt or unreadable image", received=f"{f}: {exc}") from None
        if size is None:
            size = arr.shape
            first = f
        elif arr.shape != size:
            raise DatasetError("all images must have the same size",
                               received=f"{f}: {arr.shape[1]}x{arr.shape[0]} vs {size[1]}x{size[0]} of {first}")
        arrays.append(arr)
    return np.stack(arrays)


def _image_mode(files: list[Path]) -> str:
    """'L' if every image is single-channel, else 'RGB' (palette/alpha images are converted)."""
    from PIL import Image, UnidentifiedImageError

    for f in files:
        try:
            with Image.open(f) as im:
                mode = im.mode
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise DatasetError("corrupt or unreadable image", received=f"{f}: {exc}") from None
        if mode not in ("1", "L", "LA", "I", "I;16", "F"):
            return "RGB"
    return "L"


def load(spec: DatasetSpec, split: SplitParams) -> DatasetSplits:
    root = Path(spec.arg).expanduser()
    if not root.is_dir():
        raise DatasetError("image folder not found", received=str(root))
    try:
        import PIL  # noqa: F401
    except ImportError:
        raise DatasetError("folder data sets need Pillow", received=str(root), hint="pip install pillow") from None
    has_split = (root / "train").is_dir() and (root / "test").is_dir()
    if has_split:
        train = _list_class_folder(root / "train")
        test = _list_class_folder(root / "test")
        extra = sorted(set(test) - set(train))
        if extra:
            raise DatasetError("test folder has classes missing from train", received=f"{root / 'test'}: {extra}")
        labels = sorted(train)
        all_files = [f for fs in train.values() for f in fs] + [f for fs in test.values() for f in fs]
        mode = _image_mode(all_files)
        x_parts, y_parts = [], []
        for part in (train, test):
            files = [f for c in labels for f in part.get(c, [])]
            ys = [labels.index(c) for c in labels for _ in part.get(c, [])]
            x_parts.append(_read_images(files, mode))
            y_parts.append(np.array(ys, np.int64))
        check_pair_shapes(x_parts[0], x_parts[1], str(root))
        return finish(spec, x_parts[0], y_parts[0], x_parts[1], y_parts[1], labels, split=split,
                      normalisation=_EIGHT_BIT, source=str(root), own_test=True)
    classes = _list_class_folder(root)
    labels = sorted(classes)
    files = [f for c in labels for f in classes[c]]
    y = np.array([i for i, c in enumerate(labels) for _ in classes[c]], np.int64)
    x = _read_images(files, _image_mode(files))
    return split_all(spec, x, y, labels, split=split, normalisation=_EIGHT_BIT, source=str(root))

