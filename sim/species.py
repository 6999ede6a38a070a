"""The ion species of a specimen and the per-element evaporation parameters.

Three things live here, all plain data computed once per specimen (or per sub-block for the
field-dependent branching), never per ion:

- :data:`ELEMENTS`: per element, the field-evaporation barrier ``Q(F) = q0 (1 - F / fe)`` of the
  element bound in the oxide (or in the Cr shell), its Kingham post-ionisation curve (the 2+
  fraction, a sigmoid in F through the 2+/1+ crossing field) and the molecular-ion parameters
  (share of ``MO+``, neutral loss weight). What depends on the compound (dissociation of
  ``(MO)2+`` into ``M+ + O+``, direct evaporation as 2+) is the phase's
  (:class:`Chemistry`). Sources and calibrations are in ``docs/physics.md``.
- :class:`SpeciesTable`: the run's ion table (names by the project's convention, main m/n,
  charge) and the flattened isotopologue arrays the numba kernels sample from.
- :func:`phase_channels`: for one phase at one field, the evaporation *channels* (what one
  evaporation event produces: one ion, two dissociation products, or a neutral molecule that the
  detector never sees) with their relative weights, so that the atoms leaving are, on average,
  the phase's stoichiometry minus what is lost or migrates away.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from apt_daq.isotopes import ion_mass, isotopologues


@dataclass(frozen=True)
class ElementParams:
    """Field-evaporation and ionisation parameters of one element (see docs/physics.md)."""

    q0_ev: float  # zero-field evaporation barrier of the bound atom, eV
    fe_v_per_nm: float  # field at which the barrier vanishes, V/nm
    csr_field_v_per_nm: float | None  # Kingham 2+/1+ = 1 crossing field; None: only 1+
    kingham_width_v_per_nm: float = 1.5  # w of the 2+ fraction 1 / (1 + exp(-(F - F_x) / w))
    oxide_share: float = 0.0  # share of atoms leaving as MO+ at the reference field
    oxide_field_scale_v_per_nm: float = 8.0  # MO+ share grows as exp(-(F - F_ref) / scale)
    neutral_weight: float = 0.0  # weight of the neutral-molecule loss of MO (O2 is 1)


# Barriers: effective values for the element bound in the oxide, calibrated so that the field
# settles near the paper's conditions (docs/physics.md, "evaporation"); crossing fields of the
# 2+/1+ Kingham curves from PHYSICS-NOTES (port of a public Kingham-curve script).
ELEMENTS: dict[str, ElementParams] = {
    "Li": ElementParams(0.8, 22.5, None, oxide_share=0.01),
    "O": ElementParams(2.45, 24.0, None),
    "Ni": ElementParams(2.55, 24.5, 20.1, oxide_share=0.10, neutral_weight=0.30),
    "Co": ElementParams(2.55, 24.5, 18.1, oxide_share=0.10, neutral_weight=0.15),
    "Mn": ElementParams(2.50, 24.0, 15.4, oxide_share=0.12, neutral_weight=0.15),
    "Cr": ElementParams(2.50, 24.0, 17.1),
    "Ga": ElementParams(1.30, 15.0, 24.9),
}
ELEMENT_ORDER = ["Li", "O", "Mn", "Co", "Ni", "Cr", "Ga"]
"""Order of elements in the ion table (ions of an element keep this order)."""


@dataclass(frozen=True)
class Chemistry:
    """Field-dependent molecular-ion chemistry of a phase (empirical; docs/physics.md).

    O2+/O+ (intrinsic, before neutral loss) = ``o2_ratio_ref * exp(-(F - f_ref) / o2_scale)``:
    falls as the field rises (O2+ dissociates / post-ionises at high field, Schreiber 2014).
    Neutral loss of O2 = ``l(F) = 1 / (1 + exp((F - loss_field) / loss_scale))`` of the O atoms
    not bound in MO (and MO molecules: l(F) times the element's weight): grows as the field
    drops (Gault 2016, Devaraj 2013). The O2 neutrals form from the surface O pool before it
    field-evaporates (thermal desorption/recombination on the hot, low-field surface), so they
    take O atoms that would have left as O+ and as O2+ alike: the measured O2+/O+ stays the
    intrinsic, field-set ratio (the field proxy), and keeps rising as the field falls.
    ``mo_neutral``: (element, share at f_ref, field scale) of the element's atoms that leave in
    neutral MO molecules (undetected): share ``s0 exp(-(F - f_ref) / scale)``; a positive scale
    grows at low field (molecules survive), a negative one at high field (dissociation of
    larger molecular ions into a neutral MO fragment). Empirical, calibrated (docs/physics.md).
    """

    f_ref_v_per_nm: float = 22.0
    o2_ratio_ref: float = 2.45
    o2_scale_v_per_nm: float = 6.0
    loss_field_v_per_nm: float = 14.5
    loss_scale_v_per_nm: float = 1.0
    lio_share: float = 0.01
    mo_neutral: tuple[tuple[str, float, float], ...] = ()
    # (element, d0, F_d, w_d, lifetime ps): (MO)2+ -> M+ + O+, share d0 exp((F - F_d) / w_d)
    # of MO (<= 0.95); the parent's mean lifetime places the fragments on the track
    dissociation: tuple[tuple[str, float, float, float, float], ...] = ()
    # (element, d_max, T_d, w_T): direct 2+ share d_max / (1 + exp(-(T_peak - T_d) / w_T))
    direct_2plus: tuple[tuple[str, float, float, float], ...] = ()

    def mo_neutral_share(self, element: str, field_v_per_nm: float) -> float:
        """Share of ``element``'s atoms leaving in neutral MO molecules at this field."""
        for el, s0, scale in self.mo_neutral:
            if el == element:
                x = -(field_v_per_nm - self.f_ref_v_per_nm) / scale
                return min(0.9, s0 * math.exp(max(-60.0, min(60.0, x))))
        return 0.0

    def dissociation_share(self, element: str, field_v_per_nm: float) -> float:
        """Share of the element's detected MO molecules that dissociate into M+ + O+."""
        for el, d0, fd, wd, _ in self.dissociation:
            if el == element:
                x = (field_v_per_nm - fd) / wd
                return min(0.95, d0 * math.exp(max(-60.0, min(60.0, x))))
        return 0.0

    def direct_2plus_share(self, element: str, peak_k: float) -> float:
        """Share of the element's atomic ions that leave the surface directly as 2+."""
        for el, dmax, td, wt in self.direct_2plus:
            if el == element:
                return dmax / (1.0 + math.exp(max(-60.0, min(60.0, -(peak_k - td) / wt))))
        return 0.0

    @classmethod
    def from_config(cls, c) -> Chemistry:
        """From a phase's :class:`apt_daq.config.PhaseChemistryConfig` (the specimen YAML)."""
        return cls(o2_ratio_ref=c.o2_ratio_ref, o2_scale_v_per_nm=c.o2_field_scale_v_per_nm,
                   loss_field_v_per_nm=c.o2_loss_field_v_per_nm,
                   loss_scale_v_per_nm=c.o2_loss_scale_v_per_nm, lio_share=c.lio_share,
                   mo_neutral=tuple((m.element, m.share, m.field_scale_v_per_nm)
                                    for m in c.mo_neutral),
                   dissociation=tuple((d.element, d.share, d.field_v_per_nm, d.scale_v_per_nm,
                                       d.lifetime_ps) for d in c.dissociation),
                   direct_2plus=tuple((d.element, d.share_max, d.temperature_k, d.scale_k)
                                      for d in c.direct_2plus))


# The chemistry of a phase is a property of the phase in the specimen YAML (``chemistry:``,
# PhaseChemistryConfig; values and sources in docs/physics.md), never looked up by its name.
# This one (the config's defaults: NMC811's) serves the Cr shell, whose channels use none of
# it but the field laws' reference (its CrO share is fixed, it holds no free O or Li).
SHELL_CHEMISTRY = Chemistry(mo_neutral=(("Ni", 0.05, 1e9), ("Co", 0.015, 3.4),
                                        ("Mn", 0.015, 3.4)))


def kingham_fraction(field_v_per_nm: float, el: ElementParams) -> float:
    """Kingham post-ionisation: the share of the element's ions that leave the field as 2+,
    a sigmoid in F through the 2+/1+ crossing F_x that saturates at 0 and 1:
    f2 = 1 / (1 + exp(-(F - F_x) / w)) (3+ neglected: its crossings lie at 45-60 V/nm)."""
    if el.csr_field_v_per_nm is None:
        return 0.0
    x = (field_v_per_nm - el.csr_field_v_per_nm) / el.kingham_width_v_per_nm
    return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, x))))


def csr21(field_v_per_nm: float, el: ElementParams) -> float:
    """Kingham 2+/1+ ratio f2 / (1 - f2) of :func:`kingham_fraction` (1 at the crossing)."""
    if el.csr_field_v_per_nm is None:
        return 0.0
    x = (field_v_per_nm - el.csr_field_v_per_nm) / el.kingham_width_v_per_nm
    return math.exp(max(-60.0, min(60.0, x)))


def neutral_loss(field_v_per_nm: float, chem: Chemistry) -> float:
    """Share of O2 molecules leaving as neutrals (undetected) at this field."""
    x = (field_v_per_nm - chem.loss_field_v_per_nm) / chem.loss_scale_v_per_nm
    return 1.0 / (1.0 + math.exp(max(-60.0, min(60.0, x))))


# ------------------------------------------------------------------------------ ion table
@dataclass(frozen=True)
class IonSpecies:
    name: str
    formula: dict[str, int]
    charge: int
    mass_da: float  # m/n of the most abundant isotopologue


def _ions_of(element: str, all_elements: set[str]) -> list[tuple[dict[str, int], int]]:
    out: list[tuple[dict[str, int], int]] = []
    if element == "O":
        return [({"O": 1}, 1), ({"O": 2}, 1)]
    p = ELEMENTS[element]
    out.append(({element: 1}, 1))
    if p.csr_field_v_per_nm is not None:
        out.append(({element: 1}, 2))
    if "O" in all_elements and (p.oxide_share > 0 or element == "Cr"):
        out.append(({element: 1, "O": 1}, 1))
    return out


@dataclass
class SpeciesTable:
    """The ion table of a specimen and the isotopologue arrays for the kernels.

    ``iso_start[s]:iso_start[s+1]`` index ``iso_mass`` (m/n, Da) and ``iso_cdf`` (cumulative
    abundance, last = 1) of species ``s``.
    """

    ions: list[IonSpecies]
    iso_start: np.ndarray = field(repr=False)
    iso_mass: np.ndarray = field(repr=False)
    iso_cdf: np.ndarray = field(repr=False)

    @classmethod
    def for_elements(cls, elements: set[str]) -> SpeciesTable:
        unknown = sorted(elements - set(ELEMENTS))
        if unknown:
            raise ValueError(f"no evaporation parameters for element(s) {unknown}; "
                             f"known: {sorted(ELEMENTS)}")
        from apt_daq.isotopes import ion_name

        ions = []
        for el in ELEMENT_ORDER:
            if el not in elements:
                continue
            for formula, charge in _ions_of(el, elements):
                name = ion_name(formula, charge)
                ions.append(IonSpecies(name, formula, charge, ion_mass(name)))
        start, masses, cdfs = [0], [], []
        for ion in ions:
            peaks = isotopologues(ion.formula, ion.charge)
            m = np.array([p[0] for p in peaks])
            a = np.array([p[1] for p in peaks])
            masses.append(m)
            cdfs.append(np.cumsum(a) / a.sum())
            start.append(start[-1] + len(m))
        return cls(ions, np.array(start, np.int64), np.concatenate(masses),
                   np.concatenate(cdfs))

    def index(self, name: str) -> int:
        """Index of the named ion, -1 if the specimen has no such ion."""
        for i, ion in enumerate(self.ions):
            if ion.name == name:
                return i
        return -1

    def as_list(self) -> list[tuple[str, float, int]]:
        return [(i.name, float(i.mass_da), int(i.charge)) for i in self.ions]

    @property
    def charges(self) -> np.ndarray:
        return np.array([i.charge for i in self.ions], np.int8)


# ------------------------------------------------------------------------------ channels
@dataclass
class Channels:
    """Evaporation channels of one phase: weights (not normalised), products and atoms.

    ``ion_a``/``ion_b``: species indices of the products (-1 none); ``neutral``: 1 if the event
    leaves as a neutral molecule (``ion_a`` names its formula; never detected); ``atoms``: atoms
    removed from the specimen; ``li``: 1 for channels carrying Li (scaled by Li modulation).
    """

    weight: list[float] = field(default_factory=list)
    ion_a: list[int] = field(default_factory=list)
    ion_b: list[int] = field(default_factory=list)
    neutral: list[int] = field(default_factory=list)
    atoms: list[int] = field(default_factory=list)
    li: list[int] = field(default_factory=list)

    def add(self, w: float, a: int, b: int = -1, neutral: int = 0, atoms: int = 1,
            li: int = 0) -> None:
        if w > 0 and a >= 0:
            self.weight.append(w)
            self.ion_a.append(a)
            self.ion_b.append(b)
            self.neutral.append(neutral)
            self.atoms.append(atoms)
            self.li.append(li)


def phase_channels(composition: dict[str, float], field_v_per_nm: float, table: SpeciesTable,
                   chem: Chemistry, li_depletion: float = 0.0,
                   fixed_oxide_share: dict[str, float] | None = None,
                   o2_ratio_factor: float = 1.0, peak_k: float = 0.0) -> Channels:
    """Evaporation channels of a phase with ``composition`` (atoms per formula unit) at a field.

    ``li_depletion``: share of the phase's Li that migrated away before the surface reached it
    (never evaporated). ``fixed_oxide_share``: elements whose MO+ share is a fixed number (the
    shell's CrO, whose O is part of its composition) rather than the field law.
    ``o2_ratio_factor``: multiplies the intrinsic O2+/O+ (a local field excursion, e.g. during
    Li-rich/Li-poor episodes of the surface: see ``apt_daq.sim.instrument``).
    ``peak_k``: the laser pulse's peak temperature (direct evaporation as 2+).
    Charge states of the atomic ions: a share d(T_peak) leaves directly as 2+, the rest as 1+
    that Kingham post-ionises to 2+ with :func:`kingham_fraction`.
    """
    f = field_v_per_nm
    ch = Channels()
    idx = table.index
    fixed = fixed_oxide_share or {}
    loss = neutral_loss(f, chem)
    o_used = 0.0
    for el in ELEMENT_ORDER:
        n = composition.get(el, 0.0)
        if n <= 0 or el == "O":
            continue
        p = ELEMENTS[el]
        if el == "Li":
            w = n * (1.0 - li_depletion)
            s = chem.lio_share if idx("LiO+") >= 0 else 0.0
            ch.add(w * (1 - s), idx("Li+"), li=1)
            ch.add(w * s, idx("LiO+"), atoms=2, li=1)
            o_used += w * s
            continue
        mo = idx(f"{el}O+")
        nl = n * chem.mo_neutral_share(el, f) if el not in fixed and mo >= 0 else 0.0
        if nl > 0:  # neutral MO molecules: M and O lost together, never detected
            ch.add(nl, mo, neutral=1, atoms=2)
            o_used += nl
            n -= nl
        if el in fixed:
            m_share = fixed[el]
        elif mo >= 0 and p.oxide_share > 0:
            m_share = min(0.6, p.oxide_share * math.exp(-(f - chem.f_ref_v_per_nm)
                                                        / p.oxide_field_scale_v_per_nm))
        else:
            m_share = 0.0
        mol = n * m_share if mo >= 0 else 0.0
        if mol > 0:
            lost = mol * min(1.0, loss * p.neutral_weight)
            diss = 0.0
            if idx("O+") >= 0 and el not in fixed:
                diss = (mol - lost) * chem.dissociation_share(el, f)
            ch.add(lost, mo, neutral=1, atoms=2)
            ch.add(diss, idx(f"{el}+"), idx("O+"), atoms=2)
            ch.add(mol - lost - diss, mo, atoms=2)
            if el not in fixed:
                o_used += mol
        atomic = n - mol
        direct = chem.direct_2plus_share(el, peak_k)
        p2 = direct + (1.0 - direct) * kingham_fraction(f, p)
        ch.add(atomic * p2, idx(f"{el}2+"))
        ch.add(atomic * (1 - p2), idx(f"{el}+"))
    n_o = composition.get("O", 0.0) - o_used
    if n_o > 0 and idx("O+") >= 0:
        r_i = o2_ratio_factor * chem.o2_ratio_ref * math.exp(
            -(f - chem.f_ref_v_per_nm) / chem.o2_scale_v_per_nm)
        ch.add(n_o * loss / 2, idx("O2+"), neutral=1, atoms=2)  # neutral O2 from the O pool
        n_ion = n_o * (1 - loss)
        g2 = 2 * r_i / (1 + 2 * r_i)  # share of the ionised O atoms leaving paired
        ch.add(n_ion * g2 / 2, idx("O2+"), atoms=2)
        ch.add(n_ion * (1 - g2), idx("O+"))
    return ch
