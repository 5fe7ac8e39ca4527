"""``shapes``: a built-in data set of geometric shapes over cluttered backgrounds.

Every image is a pure function of ``(seed, index)``: nothing is downloaded or stored, any machine
renders the same pixels, and a first training run needs no data at all. One generator serves two tasks:

* classification (``render_classification_sample``, ``ShapesClassification``): one dominant shape per
  image, the label is its class;
* detection and instance segmentation (``render_scene``): several non-overlapping shapes per image,
  each with a polygon, a pixel mask and a COCO ``[x, y, w, h]`` box (the detectron2 smoke runs export
  these to COCO JSON).

Shapes vary in position, scale, rotation, mild aspect ratio and colour; the background is a colour
gradient crossed by random lines and blobs, plus pixel noise, so that a network must look at shape,
not colour or brightness, to tell the classes apart.

Conventions: pixel ``(row i, column j)`` covers ``[j, j+1) x [i, i+1)`` in xy coordinates, so its centre
is ``(j + 0.5, i + 0.5)``; a pixel belongs to a shape's mask when its centre lies inside the polygon.
The image is painted from that mask, so image, mask, polygon and box always agree.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch.utils.data import Dataset

SHAPE_CLASSES: tuple[str, ...] = (
    "circle",
    "triangle",
    "square",
    "pentagon",
    "star",
    "cross",
    "arrow",
    "crescent",
)

# Random streams: classification and detection samples with the same (seed, index) are unrelated.
_STREAM_CLASSIFICATION = 0
_STREAM_SCENE = 1
# Validation samples of ShapesClassification live at indices >= _VAL_OFFSET, disjoint from training.
_VAL_OFFSET = 2**31


@dataclass
class ShapeObject:
    """One shape in a scene: class index, outline (xy pixel coordinates), visible mask and COCO box."""

    label: int
    polygon: np.ndarray  # (K, 2) float64, xy
    mask: np.ndarray  # (H, W) bool
    bbox: tuple[float, float, float, float]  # COCO XYWH

    @property
    def name(self) -> str:
        return SHAPE_CLASSES[self.label]


@dataclass
class Scene:
    """A rendered image (H, W, 3) uint8 and the shapes in it, back to front."""

    image: np.ndarray
    objects: list[ShapeObject] = field(default_factory=list)


# ----------------------------------------------------------------------------- outlines (unit size)


def _regular_polygon(n: int, phase: float = 0.0) -> np.ndarray:
    angles = phase + 2 * np.pi * np.arange(n) / n
    return np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _star(points: int = 5, inner: float = 0.45) -> np.ndarray:
    angles = -np.pi / 2 + np.pi * np.arange(2 * points) / points
    radii = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)


def _cross(half_width: float = 0.33) -> np.ndarray:
    a, w = 1.0, half_width
    return np.array(
        [[-w, -a], [w, -a], [w, -w], [a, -w], [a, w], [w, w], [w, a], [-w, a], [-w, w], [-a, w], [-a, -w], [-w, -w]]
    )


def _arrow() -> np.ndarray:
    # Shaft from x=-1 to 0.1 (half-height 0.25), head from 0.1 to 1 (half-height 0.75).
    return np.array([[-1.0, -0.25], [0.1, -0.25], [0.1, -0.75], [1.0, 0.0], [0.1, 0.75], [0.1, 0.25], [-1.0, 0.25]])


def _crescent(offset: float = 0.45, inner_radius: float = 0.8, points: int = 24) -> np.ndarray:
    # Unit disc minus a disc of radius `inner_radius` centred at (offset, 0): the outer arc on the far
    # side, then the inner arc back. The two circles cross at x = (1 + c^2 - r^2) / (2c).
    c, r = offset, inner_radius
    x_cross = (1 + c * c - r * r) / (2 * c)
    y_cross = np.sqrt(1 - x_cross**2)
    theta0 = np.arctan2(y_cross, x_cross)
    phi0 = np.arctan2(y_cross, x_cross - c)
    outer = np.linspace(theta0, 2 * np.pi - theta0, points)
    inner = np.linspace(2 * np.pi - phi0, phi0, points)[1:-1]
    poly = np.concatenate(
        [np.stack([np.cos(outer), np.sin(outer)], 1), np.stack([c + r * np.cos(inner), r * np.sin(inner)], 1)]
    )
    return poly - (poly.max(0) + poly.min(0)) / 2  # centre the bounding box


_OUTLINES: dict[str, np.ndarray] = {
    "circle": _regular_polygon(32),
    "triangle": _regular_polygon(3, -np.pi / 2),
    "square": _regular_polygon(4, np.pi / 4),
    "pentagon": _regular_polygon(5, -np.pi / 2),
    "star": _star(),
    "cross": _cross(),
    "arrow": _arrow(),
    "crescent": _crescent(),
}
assert tuple(_OUTLINES) == SHAPE_CLASSES


def shape_outline(label: int) -> np.ndarray:
    """The unit-size outline (K, 2) of class ``label``, centred at the origin, radius about 1."""
    if not 0 <= label < len(SHAPE_CLASSES):
        raise ValueError(f"label must be in [0, {len(SHAPE_CLASSES)}), got {label}")
    return _OUTLINES[SHAPE_CLASSES[label]].copy()


# ----------------------------------------------------------------------------- rasterisation


def polygon_mask(polygon: np.ndarray, height: int, width: int) -> np.ndarray:
    """(H, W) bool: pixels whose centre lies inside ``polygon`` (even-odd rule, xy coordinates)."""
    polygon = np.asarray(polygon, dtype=np.float64)
    if polygon.ndim != 2 or polygon.shape[1] != 2 or len(polygon) < 3:
        raise ValueError(f"polygon must have shape (K >= 3, 2), got {polygon.shape}")
    px = np.arange(width) + 0.5
    py = (np.arange(height) + 0.5)[:, None]
    inside = np.zeros((height, width), dtype=bool)
    x0, y0 = polygon[:, 0], polygon[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    for ax, ay, bx, by in zip(x0, y0, x1, y1):
        if ay == by:
            continue  # a horizontal edge never crosses a horizontal ray
        crosses_row = (ay > py) != (by > py)  # (H, 1)
        x_at_row = ax + (py - ay) * (bx - ax) / (by - ay)  # (H, 1)
        inside ^= crosses_row & (px < x_at_row)
    return inside


def _bbox_xywh(polygon: np.ndarray) -> tuple[float, float, float, float]:
    x_min, y_min = polygon.min(0)
    x_max, y_max = polygon.max(0)
    return float(x_min), float(y_min), float(x_max - x_min), float(y_max - y_min)


def _place(rng: np.random.Generator, label: int, radius: float, size: int) -> np.ndarray:
    """Rotate, stretch mildly, scale to ``radius`` and move the outline to a random spot inside the image."""
    outline = shape_outline(label)
    angle = rng.uniform(0, 2 * np.pi)
    aspect = rng.uniform(0.85, 1.15)
    outline = outline * np.array([aspect, 1 / aspect])
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    pts = outline @ rot.T * radius
    low, high = -pts.min(0) + 1.0, size - pts.max(0) - 1.0  # keep a 1-pixel margin
    centre = rng.uniform(low, np.maximum(high, low))
    return pts + centre


# ----------------------------------------------------------------------------- background clutter


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A two-colour gradient crossed by random lines and blobs, (H, W, 3) uint8."""
    c0, c1 = rng.uniform(40, 215, size=(2, 3))
    direction = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:size, 0:size] / max(size - 1, 1)
    t = np.clip(0.5 + (xx - 0.5) * np.cos(direction) + (yy - 0.5) * np.sin(direction), 0, 1)[..., None]
    image = Image.fromarray(((1 - t) * c0 + t * c1).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(3, 9))):
        xy = [float(v) for v in rng.uniform(0, size, 4)]
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        draw.line(xy, fill=colour, width=int(rng.integers(1, max(2, size // 32) + 1)))
    for _ in range(int(rng.integers(1, 4))):
        cx, cy = rng.uniform(0, size, 2)
        rx, ry = rng.uniform(0.02, 0.08, 2) * size
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        draw.ellipse([float(cx - rx), float(cy - ry), float(cx + rx), float(cy + ry)], fill=colour)
    return np.asarray(image).copy()


def _contrasting_colour(
    rng: np.random.Generator, under: np.ndarray, distance: float = 80, tries: int = 20
) -> np.ndarray:
    """A random colour at least ``distance`` (RGB distance) away from the mean colour ``under`` the shape."""
    mean = under.reshape(-1, 3).mean(0)
    for _ in range(tries):
        colour = rng.integers(0, 256, 3)
        if np.linalg.norm(colour - mean) > distance:
            return colour
    return np.where(mean > 127, 0, 255)  # fall back to the opposite corner of the colour cube


def _finish(rng: np.random.Generator, image: np.ndarray, noise: float) -> np.ndarray:
    noisy = image.astype(np.float64) + rng.normal(0, noise, image.shape)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def _check_size(size: int, minimum: int) -> None:
    if not isinstance(size, (int, np.integer)) or size < minimum:
        raise ValueError(f"size must be an integer >= {minimum}, got {size!r}")


# ----------------------------------------------------------------------------- public generators


def render_classification_sample(seed: int, index: int, size: int = 32) -> tuple[np.ndarray, int, np.ndarray]:
    """One dominant shape over clutter: ``(image (H, W, 3) uint8, label, mask (H, W) bool)``.

    The shape spans roughly 55-90 % of the image side and stands out clearly from the background (RGB
    distance > 150): a small network then learns the classes within a couple of minutes on a CPU. The
    label is uniform over ``SHAPE_CLASSES``.
    """
    _check_size(size, 8)
    rng = np.random.default_rng([_STREAM_CLASSIFICATION, int(seed), int(index)])
    label = int(rng.integers(len(SHAPE_CLASSES)))
    image = _background(rng, size)
    polygon = _place(rng, label, rng.uniform(0.3, 0.45) * size, size)
    mask = polygon_mask(polygon, size, size)
    image[mask] = _contrasting_colour(rng, image[mask] if mask.any() else image, distance=150, tries=50)
    return _finish(rng, image, rng.uniform(3, 12)), label, mask


def render_scene(seed: int, index: int, size: int = 64, min_objects: int = 1, max_objects: int = 4) -> Scene:
    """Several non-overlapping shapes over clutter, with polygons, masks and COCO boxes.

    Shapes are kept at least 2 pixels apart, so each mask is the full polygon (no occlusion) and the
    COCO polygon, mask and box describe the same pixels. When a shape does not fit after some tries it
    is drawn smaller; ``min_objects`` is always met.
    """
    _check_size(size, 16)
    if not (isinstance(min_objects, (int, np.integer)) and isinstance(max_objects, (int, np.integer))):
        raise ValueError(f"min_objects and max_objects must be integers, got {min_objects!r}, {max_objects!r}")
    if not 1 <= min_objects <= max_objects <= 10:
        raise ValueError(f"need 1 <= min_objects <= max_objects <= 10, got {min_objects}, {max_objects}")
    rng = np.random.default_rng([_STREAM_SCENE, int(seed), int(index)])
    image = _background(rng, size)
    taken = np.zeros((size, size), dtype=bool)  # occupied pixels, grown by 2 px as a safety gap
    objects: list[ShapeObject] = []
    for k in range(int(rng.integers(min_objects, max_objects + 1))):
        label = int(rng.integers(len(SHAPE_CLASSES)))
        radius = rng.uniform(0.1, 0.22) * size
        for attempt in range(60):
            polygon = _place(rng, label, radius, size)
            mask = polygon_mask(polygon, size, size)
            if mask.any() and not (mask & taken).any():
                break
            if attempt % 10 == 9:
                radius = max(radius * 0.8, 3.0)
        else:
            if k >= min_objects:
                continue
            raise RuntimeError(f"could not place {min_objects} shapes in a {size}x{size} image; lower min_objects")
        image[mask] = _contrasting_colour(rng, image[mask])
        taken |= _dilate(mask, 2)
        objects.append(ShapeObject(label=label, polygon=polygon, mask=mask, bbox=_bbox_xywh(polygon)))
    return Scene(image=_finish(rng, image, rng.uniform(3, 12)), objects=objects)


def _dilate(mask: np.ndarray, pixels: int) -> np.ndarray:
    out = mask.copy()
    for _ in range(pixels):
        grown = out.copy()
        grown[1:] |= out[:-1]
        grown[:-1] |= out[1:]
        grown[:, 1:] |= out[:, :-1]
        grown[:, :-1] |= out[:, 1:]
        out = grown
    return out


# ----------------------------------------------------------------------------- torch Dataset


class ShapesClassification(Dataset):
    """Map-style data set of ``render_classification_sample`` images.

    Args:
        split: ``"train"`` or ``"val"``; the two splits use disjoint sample indices.
        size: image side in pixels.
        length: number of samples (default 10,000 for train, 2,000 for val).
        seed: generator seed; the same seed gives the same images on every machine.
        transform: called on a PIL image, or on the (H, W, 3) uint8 array where it has ``takes_array``
            set (the built-in ``transforms.ShapesTransform``); ``None`` gives a float tensor (3, H, W) in [0, 1].
        cache: keep every rendered sample in memory (about 4 bytes per pixel) so that later epochs skip
            the rendering; ``None`` follows the class attribute ``cache_rendered`` (default False), which a
            process can switch on for the data sets that training builds (the experiment runner does).
            Samples are a pure function of ``(seed, index, size)``, so the cache changes no pixel.

    ``dataset[i]`` is ``(image, label)``; ``dataset.sample(i)`` gives the raw ``(uint8 image, label, mask)``.
    """

    classes = SHAPE_CLASSES
    cache_rendered = False  # default of ``cache`` for instances built without it

    def __init__(
        self,
        split: str = "train",
        size: int = 32,
        length: int | None = None,
        seed: int = 0,
        transform=None,
        cache: bool | None = None,
    ):
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        _check_size(size, 8)
        length = (10_000 if split == "train" else 2_000) if length is None else length
        if not isinstance(length, (int, np.integer)) or not 0 < length <= _VAL_OFFSET:
            raise ValueError(f"length must be an integer in [1, 2**31], got {length!r}")
        self.split, self.size, self.length, self.seed, self.transform = split, size, int(length), int(seed), transform
        self._offset = 0 if split == "train" else _VAL_OFFSET
        self._cache: dict[int, tuple[np.ndarray, int, np.ndarray]] | None = (
            {} if (self.cache_rendered if cache is None else cache) else None
        )

    def __len__(self) -> int:
        return self.length

    def sample(self, index: int) -> tuple[np.ndarray, int, np.ndarray]:
        if not -self.length <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} samples")
        index %= self.length
        if self._cache is not None and index in self._cache:
            image, label, mask = self._cache[index]
            return image.copy(), label, mask.copy()
        sample = render_classification_sample(self.seed, self._offset + index, self.size)
        if self._cache is not None:
            self._cache[index] = (sample[0].copy(), sample[1], sample[2].copy())
        return sample

    def __getitem__(self, index: int):
        image, label, _ = self.sample(index)
        if self.transform is None:
            return torch.from_numpy(image).permute(2, 0, 1).float().div_(255), label
        if getattr(self.transform, "takes_array", False):  # the built-in transform (transforms.ShapesTransform)
            return self.transform(image), label
        return self.transform(Image.fromarray(image)), label

    def __repr__(self) -> str:
        return f"ShapesClassification(split={self.split!r}, size={self.size}, length={self.length}, seed={self.seed})"


def fingerprint(split: str = "train", size: int = 16, seed: int = 0, n: int = 64) -> str:
    """sha256 (16 hex digits) of the first ``n`` samples of a split: pixels, labels and masks.

    The images are drawn by NumPy's generator and Pillow, so "the same seed gives the same images"
    holds across machines only while their versions draw alike. A run's record carries this, and a
    test pins it, so that a machine drawing other pixels is seen rather than assumed away."""
    samples = ShapesClassification(split, size=size, length=n, seed=seed, cache=False)
    h = hashlib.sha256()
    for index in range(n):
        image, label, mask = samples.sample(index)
        h.update(image.tobytes())
        h.update(bytes([label]))
        h.update(np.packbits(mask).tobytes())
    return h.hexdigest()[:16]
