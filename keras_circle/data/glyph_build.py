"""Renders the glyph benchmark into its cache folder (NumPy, Pillow, fontTools).

Each class is one character (a Unicode code point); the images of a class are
that character drawn by distinct typefaces (`glyph_fonts`). Deterministic:
classes are the code points drawn by at least `min_designs` designs,
ordered by a hash of the code point and `seed` (no RNG whose stream could
change between NumPy versions); the first `num_test` of them are the test
classes, the next `num_train` the training classes. Each glyph is rendered
with Pillow (FreeType) at a fixed em size, white ink on black, then moved so
that the centre of its ink box is the centre of the image (shrunk only if
the ink does not fit). A glyph with no ink, or a rendering identical to that
of another class in the same design (a placeholder), is dropped.

Writes, atomically, into `<cache>/<name>/`: `glyphs.npz` (images uint8
(N, S, S), labels = class index, designs = design index, code_points per
class, class_split per class: 0 train, 1 test) and `manifest.json`
(designs with licences, font paths and sha256, sizes, versions, the sha256
of the arrays). `tools/build_glyphs.py` is its command line,
`keras_circle.data.load_glyphs` its reader, and `ensure_glyphs` builds a
missing set on first use. Pillow and fontTools come with matplotlib.
"""

import hashlib
import json
import os
import pathlib
import platform
import time

import numpy as np

from keras_circle.data import glyph_fonts
from keras_circle.data.glyphs import DEFAULT_GLYPHS_DIR
from keras_circle.data.glyphs import array_sha256


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def cmap_of(design):
    """The code points the font's best cmap maps to a glyph (fontTools)."""
    from fontTools.ttLib import TTFont

    with TTFont(design["path"], fontNumber=design["face"], lazy=True) as font:
        return set(font.getBestCmap())


def order_key(code_point, seed):
    """Seeded, version-independent order of the candidate classes."""
    return hashlib.sha256(f"{seed}:{code_point}".encode()).digest()


def render(font, char, size):
    """One glyph, white on black, centred on its ink box; None if no ink."""
    from PIL import Image
    from PIL import ImageDraw

    canvas = 3 * font.size
    image = Image.new("L", (canvas, canvas), 0)
    ImageDraw.Draw(image).text(
        (canvas // 2, canvas // 2), char, fill=255, font=font, anchor="mm"
    )
    box = image.getbbox()
    if box is None:
        return None
    ink = image.crop(box)
    width, height = ink.size
    if max(width, height) > size:
        scale = size / max(width, height)
        width, height = max(1, round(width * scale)), max(1, round(height * scale))
        ink = ink.resize((width, height), Image.Resampling.LANCZOS)
    out = Image.new("L", (size, size), 0)
    out.paste(ink, ((size - width) // 2, (size - height) // 2))
    return np.asarray(out, dtype=np.uint8)


def build(
    name,
    cache_dir=None,
    *,
    size=None,
    em=None,
    num_train=None,
    num_test=None,
    min_designs=None,
    seed=0,
    verbose=True,
):
    """Renders glyph set `name` into `cache_dir/<name>/`; returns its manifest.

    Settings left at `None` take the set's defaults (`SETS`); an `em` left at
    `None` with another `size` keeps the set's ratio of em to image size.

    Args:
        name: `"cjk"` or `"tiny"`.
        cache_dir: the folder to hold `<name>/`. Defaults to
            `~/.cache/keras_circle/glyphs`.
        size: image side in pixels.
        em: font size in pixels.
        num_train: training classes.
        num_test: test classes (the first ones in the seeded order).
        min_designs: designs that must draw a character for it to be a class.
        seed: the order of the candidate classes. Defaults to `0`.
        verbose: print progress lines. Defaults to `True`.

    Raises:
        MissingFontsError: font files are missing (before anything is written).
        ValueError: a setting is out of range, or too few characters are
            drawn by `min_designs` designs.
    """
    import fontTools
    import PIL
    from PIL import ImageFont
    from PIL import features

    start = time.time()
    designs = glyph_fonts.designs_of(name)
    spec = glyph_fonts.SETS[name]
    given = dict(size=size, em=em, num_train=num_train, num_test=num_test,
                 min_designs=min_designs)  # fmt: skip
    for key, value in given.items():
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise ValueError(f"`{key}` must be a positive integer; received {value!r}.")
    settings = {key: spec[key] if v is None else v for key, v in given.items()}
    if em is None and size is not None:
        settings["em"] = round(size * spec["em"] / spec["size"])
    size, em = settings["size"], settings["em"]
    num_train, num_test = settings["num_train"], settings["num_test"]
    min_designs = settings["min_designs"]
    glyph_fonts.check_fonts(designs)
    if min_designs > len(designs):
        raise ValueError(
            f"`min_designs`={min_designs} is more than the {len(designs)} designs "
            f"of glyph set {name!r}."
        )
    log = print if verbose else lambda *args, **kwargs: None
    candidates = sorted(cp for lo, hi in spec["ranges"] for cp in range(lo, hi + 1))
    coverage = np.zeros(len(candidates), np.int32)
    cmaps = []
    for d in designs:
        cmap = cmap_of(d)
        cmaps.append(cmap)
        coverage += np.array([cp in cmap for cp in candidates])
    eligible = [
        cp for cp, n in zip(candidates, coverage, strict=True) if n >= min_designs
    ]
    log(
        f"{len(designs)} designs; {len(eligible)} code points drawn by >= "
        f"{min_designs} of them (cmap); rendering at {size}x{size} px, em {em}",
        flush=True,
    )
    eligible.sort(key=lambda cp: order_key(cp, seed))
    fonts = [
        ImageFont.truetype(
            d["path"], size=em, index=d["face"], layout_engine=ImageFont.Layout.BASIC
        )
        for d in designs
    ]
    wanted = num_train + num_test
    classes, images, labels, designs_of = [], [], [], []
    seen = [set() for _ in designs]  # per design: hashes of its renderings
    dropped = {"no_ink": 0, "placeholder": 0, "too_few_designs": 0}
    for cp in eligible:
        if len(classes) == wanted:
            break
        drawn = []
        for j, (font, cmap) in enumerate(zip(fonts, cmaps, strict=True)):
            if cp not in cmap:
                continue
            glyph = render(font, chr(cp), size)
            if glyph is None:
                dropped["no_ink"] += 1
                continue
            digest = hashlib.sha256(glyph.tobytes()).digest()
            if digest in seen[j]:
                dropped["placeholder"] += 1
                continue
            seen[j].add(digest)
            drawn.append((j, glyph))
        if len(drawn) < min_designs:
            dropped["too_few_designs"] += 1
            continue
        for j, glyph in drawn:
            images.append(glyph)
            labels.append(len(classes))
            designs_of.append(j)
        classes.append(cp)
        if len(classes) % 500 == 0:
            log(
                f"  {len(classes)}/{wanted} classes, {len(images)} images, "
                f"{time.time() - start:.0f} s",
                flush=True,
            )
    if len(classes) < wanted:
        raise ValueError(
            f"only {len(classes)} classes are drawn by >= "
            f"{min_designs} designs; asked for {num_train} + {num_test}."
        )
    arrays = dict(
        images=np.stack(images),
        labels=np.asarray(labels, np.int32),
        designs=np.asarray(designs_of, np.int16),
        code_points=np.asarray(classes, np.int32),
        # The first `num_test` classes in the seeded order are the test ones.
        class_split=(np.arange(wanted) < num_test).astype(np.uint8),
    )
    per_class = np.bincount(arrays["labels"])
    manifest = {
        "name": name,
        "builder": "tools/build_glyphs.py",
        "image_size": size,
        "em_size": em,
        "seed": seed,
        "min_designs": min_designs,
        "num_train_classes": num_train,
        "num_test_classes": num_test,
        "num_images": len(images),
        "images_per_class": {
            "min": int(per_class.min()),
            "mean": round(float(per_class.mean()), 2),
            "max": int(per_class.max()),
        },
        "code_point_ranges": [f"U+{lo:04X}-U+{hi:04X}" for lo, hi in spec["ranges"]],
        "eligible_code_points": len(eligible),
        "dropped": dropped,
        "designs": [
            {
                **d,
                "sha256": sha256_file(d["path"]),
                "cmap_code_points_in_ranges": int(sum(cp in c for cp in candidates)),
            }
            for d, c in zip(designs, cmaps, strict=True)
        ],
        "query_designs": [j for j, d in enumerate(designs) if d["group"] == 0],
        "sha256": {key: array_sha256(value) for key, value in arrays.items()},
        "versions": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "pillow": PIL.__version__,
            "freetype": features.version("freetype2"),
            "fonttools": fontTools.version,
        },
        "build_seconds": round(time.time() - start, 1),
    }
    base = pathlib.Path(cache_dir or DEFAULT_GLYPHS_DIR).expanduser()
    write(base / name, arrays, manifest)
    return manifest


def write(folder, arrays, manifest):
    """Writes each file under a temporary name, then renames it into place.

    The arrays go first and the manifest (which holds their checksums) last,
    so a reader never sees a manifest that describes other arrays than the
    ones beside it.
    """
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f"glyphs.npz.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)
    os.replace(tmp, folder / "glyphs.npz")
    tmp = folder / f"manifest.json.tmp{os.getpid()}"
    tmp.write_text(json.dumps(manifest, indent=1) + "\n")
    os.replace(tmp, folder / "manifest.json")
