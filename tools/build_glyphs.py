"""Build the zero-shot glyph benchmark: printed characters in many typefaces.

Each class is one character (a Unicode code point); the images of a class are
that character drawn by distinct typefaces. The full set ("cjk") draws CJK
Unified Ideographs (U+4E00-U+9FFF) in the free CJK typefaces Debian ships;
the tiny set ("tiny", for tests and CI) draws Latin, Greek and Cyrillic
letters in the DejaVu and STIX fonts that ship inside matplotlib.

A typeface design is counted once: regional, monospaced/proportional and
weight variants of one family are one design, and so are fonts derived from
one another (the `same_design_as` field of each entry names the fonts left
out for that reason). One file and face index is used per design.

This script installs nothing. If a font file is missing it stops and names
the Debian packages to install (`apt-get install -y ...`).

Deterministic: classes are the code points drawn by at least
`--min-designs` designs, ordered by a hash of the code point and `--seed`
(no RNG whose stream could change between NumPy versions); the first
`--num-test` of them are the test classes, the next `--num-train` the
training classes. Each glyph is rendered with Pillow (FreeType) at a fixed
em size, white ink on black, then moved so that the centre of its ink box is
the centre of the image (shrunk only if the ink does not fit). A glyph with
no ink, or a rendering identical to that of another class in the same design
(a placeholder), is dropped.

Writes, atomically, into `<cache>/<name>/` (default cache
`~/.cache/keras_circle/glyphs`): `glyphs.npz` (images uint8 (N, S, S),
labels = class index, designs = design index, code_points per class,
class_split per class: 0 train, 1 test) and `manifest.json` (designs with
licences, font paths and sha256, sizes, versions, the sha256 of the arrays).
Load it with `keras_circle.data.load_glyphs`.

Usage:

    python tools/build_glyphs.py [--name cjk|tiny] [--cache-dir DIR]
        [--size 48] [--num-train N] [--num-test N] [--min-designs 15]
"""

import argparse
import hashlib
import json
import os
import pathlib
import platform
import sys
import time

import numpy as np

# One entry per design. `group` is the half of the cross-typeface protocol
# the design belongs to (0: queries, 1: gallery). Both halves hold sans,
# serif and kai designs, and the closest pairs of distinct designs (Noto Sans
# / Droid 0.943, Noto Serif / UMing 0.931, IPAexMincho / Hanazono 0.912 by
# the measure below) sit in the same half, so that a query does not find a
# near twin in the gallery.
#
# Same-design test. Beyond the documented derivations (Droid Sans Fallback ->
# WenQuanYi Micro Hei, Mingti2L/SungtiL -> UMing, KaitiM -> UKai, IPA ->
# IPAex, Klee One -> LXGW WenKai), pairs were measured: 300 code points drawn
# by all, rendered at 96 px, Gaussian blur of 3 px (so stroke weight matters
# little and stroke placement a lot), mean cosine of the centred images.
# Documented derivations score 0.966 (UKai / KaitiM GB) to 0.997 (IPAex /
# IPA Gothic), weights of one family 0.944-0.973; among the kept designs the
# highest is 0.943. Three more pairs score like derivations and are counted
# once: LXGW WenKai / Klee One 0.974, UKai / cwTeX Kai 0.974, cwTeX HeiBold /
# cwTeX Yen 0.970. Of each, the one drawing more code points is kept.
CJK_DESIGNS = [
    # fmt: off
    dict(
        name="Noto Sans CJK SC (Source Han Sans)",
        package="fonts-noto-cjk",
        path="/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
        face=2,
        style="sans",
        group=0,
        licence="OFL-1.1",
        same_design_as="JP/KR/TC/HK regional faces, Mono faces, other weights "
        "(fonts-noto-cjk-extra)",
    ),
    dict(
        name="Noto Serif CJK SC (Source Han Serif)",
        package="fonts-noto-cjk",
        path="/usr/share/fonts/opentype/noto/NotoSerifCJK-Regular.ttc",
        face=2,
        style="serif",
        group=0,
        licence="OFL-1.1",
        same_design_as="JP/KR/TC/HK regional faces, other weights "
        "(fonts-noto-cjk-extra)",
    ),
    dict(
        name="AR PL UMing CN",
        package="fonts-arphic-uming",
        path="/usr/share/fonts/truetype/arphic/uming.ttc",
        face=0,
        style="serif",
        group=0,
        licence="Arphic Public License",
        same_design_as="AR PL Mingti2L Big5 (fonts-arphic-bsmi00lp), "
        "AR PL SungtiL GB (fonts-arphic-gbsn00lp), UMing HK/TW faces",
    ),
    dict(
        name="AR PL UKai CN",
        package="fonts-arphic-ukai",
        path="/usr/share/fonts/truetype/arphic/ukai.ttc",
        face=0,
        style="kai",
        group=0,
        licence="Arphic Public License",
        same_design_as="AR PL KaitiM Big5 (fonts-arphic-bkai00mp), "
        "AR PL KaitiM GB (fonts-arphic-gkai00mp), UKai HK/TW faces, "
        "cwTeX Kai (fonts-cwtex-kai; measured 0.974)",
    ),
    dict(
        name="WenQuanYi Zen Hei",
        package="fonts-wqy-zenhei",
        path="/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
        face=0,
        style="sans",
        group=1,
        licence="GPL-2 with font embedding exception",
        same_design_as="Zen Hei Mono, Zen Hei Sharp",
    ),
    dict(
        name="Droid Sans Fallback",
        package="fonts-droid-fallback",
        path="/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",
        face=0,
        style="sans",
        group=0,
        licence="Apache-2.0",
        same_design_as="WenQuanYi Micro Hei and Micro Hei Mono "
        "(fonts-wqy-microhei, derived from it; measured 1.000)",
    ),
    dict(
        name="IPAexGothic",
        package="fonts-ipaexfont-gothic",
        path="/usr/share/fonts/opentype/ipaexfont-gothic/ipaexg.ttf",
        face=0,
        style="sans",
        group=0,
        licence="IPA Font License 1.0",
        same_design_as="IPAGothic, IPAPGothic (fonts-ipafont-gothic)",
    ),
    dict(
        name="IPAexMincho",
        package="fonts-ipaexfont-mincho",
        path="/usr/share/fonts/opentype/ipaexfont-mincho/ipaexm.ttf",
        face=0,
        style="serif",
        group=1,
        licence="IPA Font License 1.0",
        same_design_as="IPAMincho, IPAPMincho (fonts-ipafont-mincho)",
    ),
    dict(
        name="Hanazono Mincho A",
        package="fonts-hanazono",
        path="/usr/share/fonts/truetype/hanazono/HanaMinA.ttf",
        face=0,
        style="serif",
        group=1,
        licence="Hanazono Font License or OFL-1.1",
        same_design_as="",
    ),
    dict(
        name="LXGW WenKai",
        package="fonts-lxgw-wenkai",
        path="/usr/share/fonts/truetype/lxgw-wenkai/LXGWWenKai-Regular.ttf",
        face=0,
        style="kai",
        group=1,
        licence="OFL-1.1",
        same_design_as="LXGW WenKai Mono, other weights, Klee One "
        "(fonts-klee; WenKai is derived from it, measured 0.974)",
    ),
    dict(
        name="cwTeX Ming",
        package="fonts-cwtex-ming",
        path="/usr/share/fonts/truetype/cwtex/cwming.ttf",
        face=0,
        style="serif",
        group=1,
        licence="GPL-2+",
        same_design_as="",
    ),
    dict(
        name="cwTeX HeiBold",
        package="fonts-cwtex-heib",
        path="/usr/share/fonts/truetype/cwtex/cwheib.ttf",
        face=0,
        style="sans",
        group=1,
        licence="GPL-2+",
        same_design_as="cwTeX Yen (fonts-cwtex-yen; measured 0.970)",
    ),
    dict(
        name="cwTeX FangSong",
        package="fonts-cwtex-fs",
        path="/usr/share/fonts/truetype/cwtex/cwfs.ttf",
        face=0,
        style="fangsong",
        group=1,
        licence="GPL-2+",
        same_design_as="",
    ),
    dict(
        name="VL Gothic",
        package="fonts-vlgothic",
        path="/usr/share/fonts/truetype/vlgothic/VL-Gothic-Regular.ttf",
        face=0,
        style="sans",
        group=1,
        licence="VL Gothic licence (BSD-3-Clause), M+ FONTS and Sazanami licences",
        same_design_as="VL PGothic",
    ),
    dict(
        name="Smiley Sans Oblique",
        package="fonts-smiley-sans",
        path="/usr/share/fonts/truetype/smiley-sans/SmileySans-Oblique.ttf",
        face=0,
        style="display",
        group=0,
        licence="OFL-1.1 or CC0-1.0",
        same_design_as="",
    ),
    # fmt: on
]
# Letters that exist in Latin, Greek and Cyrillic (A-Z, a-z, U+0391-U+03C9,
# U+0410-U+044F).
TINY_RANGES = [(0x41, 0x5A), (0x61, 0x7A), (0x391, 0x3C9), (0x410, 0x44F)]
TINY_FILES = [
    ("DejaVuSans.ttf", "sans", 0),
    ("DejaVuSans-Bold.ttf", "sans", 1),
    ("DejaVuSerif.ttf", "serif", 1),
    ("DejaVuSerif-Italic.ttf", "serif", 0),
    ("DejaVuSansMono.ttf", "mono", 0),
    ("DejaVuSansMono-BoldOblique.ttf", "mono", 1),
    ("STIXGeneral.ttf", "serif", 0),
    ("STIXGeneralBolIta.ttf", "serif", 1),
]
SETS = {
    # name: code point ranges, size, em, num_train, num_test, min_designs
    "cjk": dict(
        ranges=[(0x4E00, 0x9FFF)],
        size=48,
        em=42,
        num_train=1900,
        num_test=1900,
        min_designs=15,
    ),
    "tiny": dict(
        ranges=TINY_RANGES, size=24, em=20, num_train=40, num_test=20, min_designs=8
    ),
}
DEFAULT_CACHE = pathlib.Path("~/.cache/keras_circle/glyphs")


def tiny_designs():
    import matplotlib

    folder = pathlib.Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    return [
        dict(
            name=file.rsplit(".", 1)[0],
            package=f"matplotlib {matplotlib.__version__} (bundled)",
            path=str(folder / file),
            face=0,
            style=style,
            group=group,
            licence="Bitstream Vera / DejaVu licence"
            if file.startswith("DejaVu")
            else "OFL-1.1 (STIX)",
            same_design_as="",
        )
        for file, style, group in TINY_FILES
    ]


def check_fonts(designs):
    """Stops with one message naming the packages whose fonts are missing."""
    missing = [d for d in designs if not os.path.isfile(d["path"])]
    if missing:
        packages = sorted({d["package"] for d in missing})
        sys.exit(
            "build_glyphs: missing font files "
            + ", ".join(d["path"] for d in missing)
            + ".\nInstall them first (this script installs nothing):\n"
            "    apt-get install -y " + " ".join(packages)
        )


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


def build(name, cache_dir, size, em, num_train, num_test, min_designs, seed):
    import fontTools
    import PIL
    from PIL import ImageFont
    from PIL import features

    start = time.time()
    spec = SETS[name]
    designs = CJK_DESIGNS if name == "cjk" else tiny_designs()
    check_fonts(designs)
    if min_designs > len(designs):
        sys.exit(f"build_glyphs: --min-designs={min_designs} > {len(designs)} designs")
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
    print(
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
            print(
                f"  {len(classes)}/{wanted} classes, {len(images)} images, "
                f"{time.time() - start:.0f} s",
                flush=True,
            )
    if len(classes) < wanted:
        sys.exit(
            f"build_glyphs: only {len(classes)} classes are drawn by >= "
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
    write(pathlib.Path(cache_dir).expanduser() / name, arrays, manifest)
    return manifest


def array_sha256(array):
    """sha256 of an array's dtype, shape and C-order bytes (also in the loader)."""
    digest = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
    digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", choices=sorted(SETS), default="cjk")
    parser.add_argument("--cache-dir", default=str(DEFAULT_CACHE))
    parser.add_argument("--size", type=int, help="image side in pixels")
    parser.add_argument("--em", type=int, help="font size in pixels")
    parser.add_argument("--num-train", type=int)
    parser.add_argument("--num-test", type=int)
    parser.add_argument("--min-designs", type=int)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    spec = dict(SETS[args.name])
    for key in ("size", "em", "num_train", "num_test", "min_designs"):
        value = getattr(args, key)
        if value is not None:
            if value < 1:
                parser.error(f"--{key.replace('_', '-')} must be >= 1, got {value}")
            spec[key] = value
    if args.em is None and args.size is not None:
        spec["em"] = round(args.size * SETS[args.name]["em"] / SETS[args.name]["size"])
    manifest = build(
        args.name,
        args.cache_dir,
        spec["size"],
        spec["em"],
        spec["num_train"],
        spec["num_test"],
        spec["min_designs"],
        args.seed,
    )
    print(
        f"wrote {pathlib.Path(args.cache_dir).expanduser() / args.name}: {manifest['num_images']} images, "
        f"{manifest['num_train_classes']} + {manifest['num_test_classes']} classes, "
        f"{len(manifest['designs'])} designs, images sha256 "
        f"{manifest['sha256']['images'][:16]}..., {manifest['build_seconds']} s"
    )


if __name__ == "__main__":
    main()
