"""Generate apt_daq/data/isotopes.json, the isotope table read by apt_daq.isotopes.

Run once when the sources change (not at install or import time)::

    pip install periodictable==2.1.0 molmass==2026.1.8
    python tools/make_isotope_data.py          # writes apt_daq/data/isotopes.json
    python tools/make_isotope_data.py --check  # exit 1 if the shipped file differs

Sources:

- Atomic masses: AME2020 (M. Wang et al., Chinese Phys. C 45 (2021) 030003), as shipped by
  ``periodictable`` (``Isotope.mass``; its ``periodictable/mass.py`` is read from
  massround.mas20).
- Isotopic compositions: CIAAW "Isotopic compositions of the elements 2021" (ciaaw.org), the
  table ``periodictable.mass.isotope_abundance`` (with periodictable's choices: N and Ar of air,
  Pb from Meija et al. 2016). It is parsed here rather than read through ``Isotope.abundance``
  because periodictable 2.1.0 drops the last element of that table (U reads 0 %).
- For the 11 elements whose CIAAW composition is only an interval (H, Li, B, C, O, Mg, Si, S, Cl,
  Br, Tl), periodictable takes the mid-point of each interval, which is no material's
  composition (6Li mid-point 4.85 % against 7.59 % in ordinary lithium; the Li mean mass would be
  6.967 Da, outside the conventional 6.94). For those the IUPAC representative isotopic
  composition (Berglund & Wieser, Pure Appl. Chem. 83 (2011) 397, the values of NIST's
  "Atomic Weights and Isotopic Compositions" table that AP Suite/IVAS also use) is taken, as
  shipped by ``molmass`` (``ELEMENTS[sym].isotopes``).

Elements: every Z = 1..92 with a CIAAW isotopic composition, i.e. all but Tc, Pm, Po, At, Rn,
Fr, Ra, Ac (no isotope of terrestrial abundance). Th (230Th, 232Th), Pa (231Pa) and U (234U,
235U, 238U) are included with their CIAAW natural compositions.
"""

from __future__ import annotations

import argparse
import json
import sys
from importlib.metadata import version
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "apt_daq" / "data" / "isotopes.json"


def _ciaaw_table() -> dict[int, tuple[str, dict[int, float | None]]]:
    """Z -> (symbol, {A: amount fraction, or None where CIAAW gives only an interval})."""
    import periodictable.mass as pm

    out: dict[int, tuple[str, dict[int, float | None]]] = {}
    comp: dict[int, float | None] = {}
    for line in pm.isotope_abundance.splitlines():
        line = line.rstrip("\\")
        if not line.strip():
            continue
        if line[0] not in " \t":
            z, sym = line.split()[:2]
            comp = {}
            out[int(z)] = (sym, comp)
            continue
        a, value = line.split()[:2]
        comp[int(a)] = None if value.startswith("[") else float(value.split("(")[0])
    return out


def build() -> dict:
    import periodictable
    from molmass import ELEMENTS

    elements: dict[str, list[list[float]]] = {}
    representative: list[str] = []
    for z, (sym, comp) in sorted(_ciaaw_table().items()):
        el = periodictable.elements[z]
        assert el.symbol == sym, (z, sym, el.symbol)
        if any(v is None for v in comp.values()):
            rep = {a: iso.abundance for a, iso in ELEMENTS[sym].isotopes.items() if iso.abundance}
            assert set(rep) == set(comp), (sym, sorted(rep), sorted(comp))
            comp = dict(rep)
            representative.append(sym)
        total = sum(comp.values())
        rows = []
        for a in sorted(comp):
            frac = float(f"{comp[a] / total:.12g}")
            rows.append([a, el[a].mass, frac])
        rows.sort(key=lambda r: r[1])
        elements[sym] = rows
    return {
        "format": "element -> [[mass number A, atomic mass Da, amount fraction], ...] by mass",
        "masses": "AME2020 (Wang et al., Chinese Phys. C 45 (2021) 030003)",
        "abundances": "CIAAW isotopic compositions 2021; IUPAC 2009 representative compositions "
        "(Berglund & Wieser 2011) for the interval elements " + ", ".join(representative),
        "generated_by": "tools/make_isotope_data.py",
        "periodictable": version("periodictable"),
        "molmass": version("molmass"),
        "elements": elements,
    }


def dumps(data: dict) -> str:
    """JSON with one line per element (diff-friendly, small)."""
    head = {k: v for k, v in data.items() if k != "elements"}
    lines = ["{"] + [f" {json.dumps(k)}: {json.dumps(v)}," for k, v in head.items()]
    lines.append(' "elements": {')
    els = [f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in data["elements"].items()]
    lines.append(",\n".join(els))
    lines += [" }", "}"]
    text = "\n".join(lines) + "\n"
    assert json.loads(text) == data
    return text


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="compare with the shipped file")
    args = ap.parse_args()
    text = dumps(build())
    if args.check:
        same = OUT.read_text(encoding="utf-8") == text
        print(f"{OUT}: {'up to date' if same else 'DIFFERS'}")
        return 0 if same else 1
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
