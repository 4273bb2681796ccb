"""Build the zero-shot glyph benchmark: printed characters in many typefaces.

The command line of `keras_circle.data.glyph_build` (the rendering, which
`keras-circle demo --dataset glyphs` also runs on first use). The full set
("cjk") draws CJK Unified Ideographs (U+4E00-U+9FFF) in the free CJK
typefaces Debian ships (`keras_circle.data.glyph_fonts.CJK_DESIGNS`, one
entry per distinct design, with licences); the tiny set ("tiny", for tests
and CI) draws Latin, Greek and Cyrillic letters in the DejaVu and STIX fonts
that ship inside matplotlib.

This script installs nothing. If a font file is missing it stops and names
the Debian packages to install (`apt-get install -y ...`). It writes
`glyphs.npz` and `manifest.json` into `<cache>/<name>/` (default cache
`~/.cache/keras_circle/glyphs`); load them with
`keras_circle.data.load_glyphs`.

Usage:

    python tools/build_glyphs.py [--name cjk|tiny] [--cache-dir DIR]
        [--size 48] [--num-train N] [--num-test N] [--min-designs 15]
"""

import argparse
import pathlib
import sys

from keras_circle.data import glyph_build
from keras_circle.data import glyph_fonts
from keras_circle.data.glyphs import DEFAULT_GLYPHS_DIR


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", choices=sorted(glyph_fonts.SETS), default="cjk")
    parser.add_argument("--cache-dir", default=DEFAULT_GLYPHS_DIR)
    parser.add_argument("--size", type=int, help="image side in pixels")
    parser.add_argument("--em", type=int, help="font size in pixels")
    parser.add_argument("--num-train", type=int)
    parser.add_argument("--num-test", type=int)
    parser.add_argument("--min-designs", type=int)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for key in ("size", "em", "num_train", "num_test", "min_designs"):
        value = getattr(args, key)
        if value is not None and value < 1:
            parser.error(f"--{key.replace('_', '-')} must be >= 1, got {value}")
    try:
        manifest = glyph_build.build(
            args.name,
            args.cache_dir,
            size=args.size,
            em=args.em,
            num_train=args.num_train,
            num_test=args.num_test,
            min_designs=args.min_designs,
            seed=args.seed,
        )
    except (glyph_fonts.MissingFontsError, ValueError) as error:
        sys.exit(f"build_glyphs: {error}")
    folder = pathlib.Path(args.cache_dir).expanduser() / args.name
    print(
        f"wrote {folder}: {manifest['num_images']} images, "
        f"{manifest['num_train_classes']} + {manifest['num_test_classes']} classes, "
        f"{len(manifest['designs'])} designs, images sha256 "
        f"{manifest['sha256']['images'][:16]}..., {manifest['build_seconds']} s"
    )


if __name__ == "__main__":
    main()
