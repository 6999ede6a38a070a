"""The shipped isotope table (apt_daq/data/isotopes.json) against independently typed references.

The reference values below are NOT taken from the packages the table was generated from
(periodictable, molmass): they were typed from

- AME2020 atomic masses (Wang et al., Chinese Phys. C 45 (2021) 030003), in the column of CIAAW's
  table of nuclide masses (ciaaw.org/atomic-masses.htm), in Da;
- CIAAW "Isotopic compositions of the elements 2013" (Meija et al., Pure Appl. Chem. 88 (2016)
  293), Table 1, the column "best measurement from a single terrestrial source", amount
  fractions;
- CIAAW standard atomic weights 2021 (Prohaska et al., Pure Appl. Chem. 94 (2022) 573), abridged.

The shipped abundances are the *representative* compositions, which may differ from a single
best measurement within the natural variation (180Hf: 0.3512 in the 2021 table against 0.350802
measured in 2013), hence a 5e-4 tolerance; that still rejects an interval mid-point (6Li 4.85 %
instead of 7.59 %) or the pre-2013 Mo composition (92Mo 0.1453).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from apt_daq import isotopes
from apt_daq.io.ranges import read_ranges, write_ranges

# (element, A, AME2020 atomic mass Da, CIAAW 2013 best-measurement amount fraction)
REFERENCE = [
    ("W", 184, 183.950933180, 0.306422),
    ("Hf", 180, 179.946559537, 0.350802),
    ("Sn", 120, 119.902202557, 0.32593),
    ("Y", 89, 88.905838156, 1.0),
    ("Ta", 181, 180.947998528, 0.9998799),
    ("Eu", 153, 152.921236789, 0.52190),
    ("Nd", 142, 141.907728824, 0.27153),
    ("Si", 28, 27.97692653442, 0.9222968),
    ("Li", 7, 7.01600343426, 0.92411),
    ("O", 16, 15.99491461926, 0.9976206),
    ("Mo", 92, 91.906807153, 0.14649),
]

# CIAAW 2021 standard atomic weights, abridged to 5-6 significant digits
STANDARD_WEIGHT = {
    "Hf": 178.486,
    "Sn": 118.710,
    "Y": 88.906,
    "Ta": 180.948,
    "W": 183.84,
    "Nd": 144.242,
    "Er": 167.259,
    "Eu": 151.964,
    "Th": 232.038,
    "U": 238.029,
}

SYMBOLS_H_TO_U = """
H He Li Be B C N O F Ne Na Mg Al Si P S Cl Ar K Ca Sc Ti V Cr Mn Fe Co Ni Cu Zn Ga Ge As Se Br Kr
Rb Sr Y Zr Nb Mo Tc Ru Rh Pd Ag Cd In Sn Sb Te I Xe Cs Ba La Ce Pr Nd Pm Sm Eu Gd Tb Dy Ho Er Tm
Yb Lu Hf Ta W Re Os Ir Pt Au Hg Tl Pb Bi Po At Rn Fr Ra Ac Th Pa U
""".split()
# no isotope of terrestrial abundance, so no isotopic composition in the CIAAW tables
NO_NATURAL_COMPOSITION = {"Tc", "Pm", "Po", "At", "Rn", "Fr", "Ra", "Ac"}

RARE_EARTHS = "Sc Y La Ce Pr Nd Sm Eu Gd Tb Dy Ho Er Tm Yb Lu".split()


def _isotope(el: str, a: int) -> tuple[float, float]:
    return dict(zip(isotopes.mass_numbers(el), isotopes.isotopes(el), strict=True))[a]


@pytest.mark.parametrize(("el", "a", "mass", "abundance"), REFERENCE)
def test_published_mass_and_abundance(el: str, a: int, mass: float, abundance: float) -> None:
    m, x = _isotope(el, a)
    assert m == pytest.approx(mass, abs=5e-7)  # AME2016 -> AME2020 moved 184W by 2.3e-6 Da
    assert x == pytest.approx(abundance, abs=5e-4)


@pytest.mark.parametrize(("el", "weight"), sorted(STANDARD_WEIGHT.items()))
def test_average_mass_is_the_standard_atomic_weight(el: str, weight: float) -> None:
    assert isotopes.average_mass(el) == pytest.approx(weight, abs=5e-3)


def test_every_natural_element_h_to_u_is_present_in_z_order() -> None:
    assert len(SYMBOLS_H_TO_U) == 92
    want = [s for s in SYMBOLS_H_TO_U if s not in NO_NATURAL_COMPOSITION]
    assert isotopes.elements() == want
    assert set(RARE_EARTHS) <= set(want)


@pytest.mark.parametrize("el", [s for s in SYMBOLS_H_TO_U if s not in NO_NATURAL_COMPOSITION])
def test_each_element_is_a_consistent_distribution(el: str) -> None:
    iso = isotopes.isotopes(el)
    a = isotopes.mass_numbers(el)
    assert iso and len(a) == len(iso) == len(set(a))
    assert math.isclose(sum(x for _, x in iso), 1.0, abs_tol=1e-3)
    assert all(0.0 < x <= 1.0 for _, x in iso)
    masses = [m for m, _ in iso]
    assert masses == sorted(masses)
    # a nuclide's atomic mass is within 0.1 Da of its mass number for all stable nuclides
    assert all(abs(m - n) < 0.1 for m, n in zip(masses, a, strict=True))


def test_thorium_and_uranium_have_their_natural_compositions() -> None:
    assert isotopes.mass_numbers("U") == [234, 235, 238]
    assert _isotope("U", 235)[1] == pytest.approx(0.0072041, abs=2e-6)
    assert isotopes.mass_numbers("Th")[-1] == 232
    assert _isotope("Th", 232)[1] > 0.999


def test_data_file_names_its_sources() -> None:
    path = Path(isotopes.__file__).parent / "data" / "isotopes.json"
    head = json.loads(path.read_text(encoding="utf-8"))
    assert "AME2020" in head["masses"] and "CIAAW" in head["abundances"]
    assert head["periodictable"] and head["generated_by"] == "tools/make_isotope_data.py"


def test_new_elements_in_ion_names() -> None:
    assert isotopes.parse_ion("W3+") == ({"W": 1}, 3)
    assert isotopes.parse_ion("(HfO)2+") == ({"Hf": 1, "O": 1}, 2)
    assert isotopes.parse_ion("HfO2+") == ({"Hf": 1, "O": 2}, 1)
    assert isotopes.ion_name({"Er": 1}, 2) == "Er2+"
    assert isotopes.ion_mass("Nd2+") == pytest.approx(141.907728824 / 2, abs=1e-6)
    assert isotopes.ion_mass("Sn+") == pytest.approx(119.902202557, abs=1e-6)


# an IVAS/AP Suite style RRNG: charges are not stored, they are inferred from the positions
RRNG = """\
[Ions]
Number=8
Ion1=Hf
Ion2=Sn
Ion3=Y
Ion4=Ta
Ion5=W
Ion6=Nd
Ion7=Er
Ion8=HfO
[Ranges]
Number=8
Range1=44.4000 44.5000 Vol:0.03320 Y:1 Color:33FF99
Range2=59.9000 60.0600 Vol:0.02243 Hf:1 Color:CC00FF
Range3=60.2500 60.4000 Vol:0.01800 Ta:1 Color:996633
Range4=61.2500 61.4000 Vol:0.01585 W:1 Color:3366FF
Range5=70.9000 71.0000 Vol:0.03400 Nd:1 Color:FF6600
Range6=82.9000 83.0500 Vol:0.03060 Er:1 Color:00CCCC
Range7=97.9000 98.0500 Vol:0.03600 Hf:1 O:1 Color:CC66FF
Range8=119.8000 120.0000 Vol:0.02706 Sn:1 Color:999999
"""


def test_rrng_with_heavy_and_rare_earth_elements_round_trips(tmp_path: Path) -> None:
    src = tmp_path / "heavy.rrng"
    src.write_text(RRNG, encoding="utf-8")
    t = read_ranges(src)
    assert t.names == ["Y2+", "Hf3+", "Ta3+", "W3+", "Nd2+", "Er2+", "(HfO)2+", "Sn+"]
    assert {el for c in t.composition for el in c} == {"Hf", "Sn", "Y", "Ta", "W", "Nd", "Er", "O"}
    for name, lo, hi in zip(t.names, t.lo_da, t.hi_da, strict=True):
        assert lo <= isotopes.ion_mass(name) < hi, name
    for ext in (".rrng", ".rng"):
        out = tmp_path / f"back{ext}"
        write_ranges(t, out)
        back = read_ranges(out)
        assert back.names == t.names, ext
        assert back.composition == t.composition, ext
        assert back.lo_da == pytest.approx(t.lo_da, abs=1e-4)
        assert back.hi_da == pytest.approx(t.hi_da, abs=1e-4)
