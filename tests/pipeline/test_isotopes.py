"""Isotope table, isotopologue patterns and ion names against known values."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from apt_daq.isotopes import (
    average_mass,
    elements,
    ion_mass,
    ion_name,
    isotopes,
    isotopologues,
    parse_ion,
)

REQUIRED = "H Li B C N O F Na Mg Al Si P S Cl K Ca Ti V Cr Mn Fe Co Ni Cu Zn Ga Ge Nb Mo Ag W Au Pt".split()


@pytest.mark.parametrize("el", REQUIRED)
def test_abundances_sum_to_one(el: str) -> None:
    iso = isotopes(el)
    assert iso, el
    assert math.isclose(sum(a for _, a in iso), 1.0, abs_tol=2e-4)
    masses = [m for m, _ in iso]
    assert masses == sorted(masses)


@pytest.mark.parametrize(
    ("el", "weight"),
    # IUPAC standard atomic weights (conventional values)
    [
        ("H", 1.008),
        ("Li", 6.94),
        ("O", 15.999),
        ("Ni", 58.693),
        ("Cr", 51.996),
        ("Ga", 69.723),
        ("Mo", 95.95),
        ("W", 183.84),
        ("Pt", 195.08),
        ("Cu", 63.546),
        ("Fe", 55.845),
    ],
)
def test_average_mass_matches_standard_atomic_weight(el: str, weight: float) -> None:
    assert average_mass(el) == pytest.approx(weight, abs=0.01)


@pytest.mark.parametrize(
    ("name", "peak", "abundance"),
    [
        ("Ni+", 57.935, 0.68077),
        ("Ni2+", 28.968, 0.68077),
        ("O2+", 31.990, 0.99757**2),
        ("Li+", 7.016, 0.9241),
        ("Li+", 6.015, 0.0759),
        ("O+", 15.995, 0.99757),
        ("Mn2+", 27.469, 1.0),
        ("Co+", 58.933, 1.0),
        ("Ga+", 68.926, 0.60108),
        ("Cr2+", 25.970, 0.83789),
        ("NiO+", 73.930, 0.68077 * 0.99757),
        ("(O2)2+", 15.995, 0.99757**2),
    ],
)
def test_known_isotopologue_positions(name: str, peak: float, abundance: float) -> None:
    formula, charge = parse_ion(name)
    pattern = isotopologues(formula, charge)
    near = [p for p in pattern if abs(p[0] - peak) < 0.0015]
    assert len(near) == 1, (name, pattern)
    assert near[0][1] == pytest.approx(abundance, rel=1e-3)


def test_isotopologue_pattern_sums_to_one_and_merges_isobars() -> None:
    pattern = isotopologues({"O": 2}, 1, min_abundance=0.0)
    assert sum(a for _, a in pattern) == pytest.approx(1.0, abs=1e-6)
    # O2: nominal masses 32..36, one peak each (16O18O and 17O17O merged at 34)
    assert [round(m) for m, _ in pattern] == [32, 33, 34, 35, 36]
    assert ion_mass("O2+") == pytest.approx(31.98983, abs=1e-4)


def test_parse_convention() -> None:
    assert parse_ion("Ni2+") == ({"Ni": 1}, 2)
    assert parse_ion("O2+") == ({"O": 2}, 1)
    assert parse_ion("NiO+") == ({"Ni": 1, "O": 1}, 1)
    assert parse_ion("(O2)2+") == ({"O": 2}, 2)
    assert parse_ion("Li+") == ({"Li": 1}, 1)
    assert parse_ion("Ni++") == ({"Ni": 1}, 2)
    assert parse_ion("(O)2+") == ({"O": 1}, 2)
    assert ion_name({"O": 1}, 2) == "(O)2+"
    assert ion_name({"Ni": 1}, 2) == "Ni2+"
    assert ion_name({"O": 2}, 1) == "O2+"
    assert ion_name({"Ni": 1, "O": 1}, 2) == "(NiO)2+"
    for bad in ("Ni", "Xx+", "(O2+", "2+", "ni+"):
        with pytest.raises(ValueError):
            parse_ion(bad)


@given(
    st.dictionaries(st.sampled_from(elements()), st.integers(1, 3), min_size=1, max_size=3),
    st.integers(1, 3),
)
def test_name_round_trip(formula: dict[str, int], charge: int) -> None:
    assert parse_ion(ion_name(formula, charge)) == (formula, charge)
