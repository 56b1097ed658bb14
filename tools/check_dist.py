"""Check a built wheel and sdist (``python -m build --outdir DIST``): both exist, and each
holds every package module and the package data (the MNIST files of ebm_ppl/datasets/).

Usage: python tools/check_dist.py DIST
"""

import pathlib
import sys
import tarfile
import zipfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
# source folder -> the package's folder inside the wheel
PACKAGES = {ROOT / "ebm_ppl": "ebm_ppl", ROOT / "backends" / "ebm_ppl_pyro": "ebm_ppl_pyro",
            ROOT / "backends" / "ebm_ppl_numpyro": "ebm_ppl_numpyro"}


def expected_files():
    """The wheel paths of every module and every data file the package ships."""
    out = set()
    for src, name in PACKAGES.items():
        out |= {f"{name}/{f.relative_to(src).as_posix()}" for f in src.rglob("*.py") if "__pycache__" not in f.parts}
    data = sorted((ROOT / "ebm_ppl" / "datasets").glob("*.npz"))
    assert data, "no package data found under ebm_ppl/datasets/"
    return out | {f"ebm_ppl/datasets/{f.name}" for f in data}


def main(dist):
    dist = pathlib.Path(dist)
    wheels, sdists = sorted(dist.glob("ebm_ppl-*.whl")), sorted(dist.glob("ebm_ppl-*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, f"expected one wheel and one sdist in {dist}: {wheels + sdists}"
    need = expected_files()
    with zipfile.ZipFile(wheels[0]) as z:
        in_wheel = set(z.namelist())
        sizes = {i.filename: i.file_size for i in z.infolist()}
    missing = sorted(need - in_wheel)
    assert not missing, f"{wheels[0].name} lacks {missing}"
    for name in need:
        if name.endswith(".npz"):
            src = ROOT / name
            assert sizes[name] == src.stat().st_size, f"{name}: {sizes[name]} bytes in the wheel, {src.stat().st_size} here"
    with tarfile.open(sdists[0]) as t:
        in_sdist = {n.split("/", 1)[1] for n in t.getnames() if "/" in n}
    data = sorted(n for n in need if n.endswith(".npz"))
    lacking = [n for n in data if n not in in_sdist]
    assert not lacking, f"{sdists[0].name} lacks {lacking}"
    print(f"{wheels[0].name}: {len(need)} package files present, data {data}; {sdists[0].name}: data present")


if __name__ == "__main__":
    main(sys.argv[1])
