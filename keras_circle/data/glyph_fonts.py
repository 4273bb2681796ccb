"""The typefaces of the glyph benchmark, and which Debian packages hold them.

NumPy-free table data. `CJK_DESIGNS`: the free CJK typefaces Debian ships,
one entry per distinct design (file, face index, package, licence, the
half of the cross-typeface protocol it belongs to, and the fonts counted as
the same design); `tiny_designs()`: the DejaVu and STIX fonts inside
matplotlib, for tests and CI. `check_fonts` names the packages to install
when a font file is missing; nothing here installs anything.
"""

import os
import pathlib

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


class MissingFontsError(FileNotFoundError):
    """Font files of a glyph set are missing; the message names the packages.

    Attributes:
        paths: the missing font files.
        packages: the Debian packages that hold them, sorted.
    """

    def __init__(self, paths, packages):
        self.paths = list(paths)
        self.packages = sorted(packages)
        super().__init__(
            f"{len(self.paths)} font file(s) of the glyph set are missing "
            f"({', '.join(self.paths)}). Install them first (nothing here "
            f"installs them): apt-get install -y {' '.join(self.packages)}"
        )


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


def designs_of(name):
    """The designs of glyph set `name` (`"cjk"` or `"tiny"`)."""
    if name not in SETS:
        raise ValueError(f"`name` must be one of {sorted(SETS)}; received {name!r}.")
    return CJK_DESIGNS if name == "cjk" else tiny_designs()


def check_fonts(designs):
    """Raises `MissingFontsError` naming the packages of missing font files."""
    missing = [d for d in designs if not os.path.isfile(d["path"])]
    if missing:
        raise MissingFontsError(
            [d["path"] for d in missing], {d["package"] for d in missing}
        )


def apt_packages(name="cjk"):
    """The Debian packages holding the fonts of glyph set `name`, sorted."""
    return sorted({d["package"] for d in designs_of(name)})
