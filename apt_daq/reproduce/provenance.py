"""Each table row's provenance, derived from a declared parameter -> calibrated-on mapping.

:data:`PARAMETERS`: every calibrated simulator parameter (or group set together), where it
lives, the table rows it was set against (``fitted_to``: row ids) and the conditions whose
data it was set on (``on``: ``material@pJ``; docs/physics.md's "calibrated" columns).
:data:`ROWS`: every row of the table, the conditions it measures and the parameters its
compared quantity depends on (or ``construction``: it follows from the configuration alone).

The rule (:func:`label`): a row is ``by construction`` if declared so; ``calibrated`` if any
parameter it depends on was fitted to the row itself or to data of one of the row's
conditions; ``predicted`` otherwise. The figures take their ``Row.provenance`` from
:func:`provenance` only (tests/reproduction/test_provenance.py checks that, and the rule).

Conditions: ``nmc811`` uncoated NMC811, ``nmc811-cr`` Cr-coated NMC811, ``lmo-cr`` Cr-coated
LiMn2O4, ``grain`` the Li-Mn-O grain in NMC811; ``@5`` the laser pulse energy in pJ.
"""

from __future__ import annotations

from dataclasses import dataclass


def at(material: str, *energies: float) -> tuple[str, ...]:
    """``at("nmc811-cr", 5, 10)`` -> ("nmc811-cr@5", "nmc811-cr@10")."""
    return tuple(f"{material}@{e:g}" for e in energies)


NMC_CR_SWEEP = at("nmc811-cr", 5, 10, 15, 20, 25, 30, 40, 50)  # Fig. 5's runs
LMO_SWEEP = at("lmo-cr", 1, 2, 5, 10, 15, 20)  # Fig. 7b and Table S1's runs
BOTH_5PJ = at("nmc811", 5) + at("nmc811-cr", 5)  # Fig. 4's datasets


@dataclass(frozen=True)
class Param:
    """A calibrated parameter (group): value, where it is set, the rows it was fitted to and
    the conditions of the data it was fitted on."""

    value: str
    where: str  # "path: key" (the key occurs in the file)
    fitted_to: tuple[str, ...]
    on: tuple[str, ...]


PARAMETERS: dict[str, Param] = {
    "heating law A, E_s": Param(
        "1400 K, 110 pJ", "sim/thermal.py: E_s", ("fig4.o2_o", "fig5.o2_vs_laser"),
        NMC_CR_SWEEP + at("nmc811", 5)),
    "evaporation barriers q0, F_e (O, Ni, Co, Mn)": Param(
        "O 2.45 eV, 24.0 V/nm", "sim/species.py: q0_ev", ("fig4.o2_o",),
        BOTH_5PJ),
    "heated length l": Param("l(5 pJ) = 150 nm (l_0 146.64 nm)", "sim/thermal.py: heated_length",
                             ("fig4.mrp",), at("nmc811-cr", 5)),
    "Cr shell conductivity kappa_300": Param(
        "30 W/(m K)", "sim/thermal.py: shell_conductivity_w_per_mk", ("fig4.mrp",), BOTH_5PJ),
    "O2+/O+ r_ref, w_O (NMC811)": Param(
        "2.45, 6 V/nm", "configs/specimens/nmc811.yaml: o2_ratio", ("fig4.o2_o",
                                                                    "fig5.o2_vs_laser"),
        NMC_CR_SWEEP + at("nmc811", 5)),
    "O2+/O+ r_ref, w_O (LiMn2O4)": Param(
        "1.6, 60 V/nm", "configs/specimens/lmo.yaml: o2_ratio", ("fig7.mn_csr",), LMO_SWEEP),
    "O2 loss field F_l, w_l": Param(
        "14.5, 1.0 V/nm", "sim/species.py: loss_field_v_per_nm", ("fig3.composition", "fig5.o_low",
                                                   "fig5.o_high"),
        NMC_CR_SWEEP),
    "neutral NiO share (NMC811)": Param(
        "0.05", "configs/specimens/nmc811.yaml: neutral", ("fig5.ni_low",), at("nmc811-cr", 5)),
    "neutral CoO, MnO shares (NMC811)": Param(
        "0.015, 3.4 V/nm", "configs/specimens/nmc811.yaml: neutral", ("fig5.ni_high",
                                                                     "fig5.li"), NMC_CR_SWEEP),
    "neutral MnO share (LiMn2O4)": Param(
        "0.45, -10 V/nm", "configs/specimens/lmo.yaml: neutral", ("fig7.mn_frac",), LMO_SWEEP),
    "(MnO)2+ dissociation d0, F_d, scale": Param(
        "0.30 at 19 V/nm, 3.0 V/nm", "configs/specimens/lmo.yaml: dissociation",
        ("fig7.mn_csr",), LMO_SWEEP + NMC_CR_SWEEP),
    "Mn direct 2+ d_max, T_d, w_T": Param(
        "0.97, 150 K, 100 K", "sim/species.py: T_d", ("fig7.mn_csr",), LMO_SWEEP + NMC_CR_SWEEP),
    "Li depletion d_max, F_d, w_d": Param(
        "0.92, 20.4 V/nm, 0.45 V/nm", "sim/lithium.py: depletion_max", ("fig1.li_5pj",),
        at("nmc811", 5)),
    "Li bursts A, E_b, b_max": Param("630, 0.147 eV, 30", "sim/lithium.py: burst_max",
                                     ("fig1.li_20pj",), at("nmc811", 20)),
    "Li burst spot (burst_spot_fraction)": Param(
        "0.35", "sim/lithium.py: burst_spot_fraction", ("fig1.heterogeneity",), at("nmc811", 5, 10, 15, 20)),
    "Li episode amplitude a, uncoated": Param("0.6", "sim/lithium.py: episode",
                                              ("fig4.mu_li_uncoated",), at("nmc811", 5)),
    "Li episode amplitude a, coated NMC811": Param(
        "0.167", "configs/specimens/nmc811.yaml: li_episode_amplitude_coated",
        ("fig4.mu_li_coated",), at("nmc811-cr", 5)),
    "Li episode amplitude a, coated LiMn2O4": Param(
        "0.215", "configs/specimens/lmo.yaml: li_episode_amplitude_coated", ("S1.mu_li",),
        LMO_SWEEP),
    "O pairing with the episodes c": Param("0.5", "sim/lithium.py: pairing",
                                           ("fig4.mu_o2", "fig4.o2_o"), BOTH_5PJ),
    "Li screening under the shell": Param(
        "1e-5", "sim/lithium.py: coating_screening", ("fig5.li", "S1.mu_li"),
        NMC_CR_SWEEP + LMO_SWEEP),
    "Weibull strength scales, uncoated / coated": Param(
        "1.9 / 4.5 GPa", "sim/fracture.py: strength_uncoated_gpa", ("fig1.fracture",),
        BOTH_5PJ),
}


@dataclass(frozen=True)
class RowDeps:
    """A table row: the conditions it measures, the parameters its compared quantity depends
    on, or (``construction``) why it follows from the configuration alone."""

    on: tuple[str, ...]
    params: tuple[str, ...] = ()
    construction: str = ""


_HEAT = "heating law A, E_s"
_BAR = "evaporation barriers q0, F_e (O, Ni, Co, Mn)"
_LI = ("Li depletion d_max, F_d, w_d", "Li bursts A, E_b, b_max")
_NEUTRAL = ("neutral NiO share (NMC811)", "neutral CoO, MnO shares (NMC811)",
            "O2 loss field F_l, w_l", "Li screening under the shell")

ROWS: dict[str, RowDeps] = {
    "fig1.li_5pj": RowDeps(at("nmc811", 5), (*_LI, _HEAT, _BAR)),
    "fig1.li_20pj": RowDeps(at("nmc811", 20), (*_LI, _HEAT, _BAR)),
    "fig1.heterogeneity": RowDeps(at("nmc811", 5, 10, 15, 20),
                                  ("Li burst spot (burst_spot_fraction)", *_LI, _HEAT)),
    "fig1.fracture": RowDeps(BOTH_5PJ, ("Weibull strength scales, uncoated / coated", _HEAT,
                                        _BAR)),
    "fig2.shell": RowDeps(at("nmc811-cr", 5), construction="the configured shell all around "
                          "the core, Ga in the shell only (ga_fraction)"),
    "fig3.composition": RowDeps(at("nmc811-cr", 5, 10, 15), (*_NEUTRAL, _HEAT, _BAR)),
    "fig3.homogeneous": RowDeps(BOTH_5PJ, ("Li episode amplitude a, coated NMC811",
                                           "Li episode amplitude a, uncoated", *_LI)),
    "fig4.o2_o": RowDeps(BOTH_5PJ, ("O2+/O+ r_ref, w_O (NMC811)", _HEAT, _BAR,
                                    "O pairing with the episodes c")),
    "fig4.mrp": RowDeps(BOTH_5PJ, ("heated length l", "Cr shell conductivity kappa_300",
                                   _HEAT)),
    "fig4.mu_li_uncoated": RowDeps(at("nmc811", 5), ("Li episode amplitude a, uncoated",)),
    "fig4.mu_li_coated": RowDeps(at("nmc811-cr", 5), ("Li episode amplitude a, coated NMC811",)),
    "fig4.mu_o2": RowDeps(BOTH_5PJ, ("O pairing with the episodes c",
                                     "Li episode amplitude a, uncoated",
                                     "Li episode amplitude a, coated NMC811")),
    "fig5.li": RowDeps(NMC_CR_SWEEP, (*_NEUTRAL, _HEAT, _BAR, "O2+/O+ r_ref, w_O (NMC811)")),
    "fig5.ni_low": RowDeps(NMC_CR_SWEEP, (*_NEUTRAL, _HEAT, "O2+/O+ r_ref, w_O (NMC811)")),
    "fig5.ni_high": RowDeps(NMC_CR_SWEEP, (*_NEUTRAL, _HEAT, "O2+/O+ r_ref, w_O (NMC811)")),
    "fig5.o_low": RowDeps(NMC_CR_SWEEP, (*_NEUTRAL, _HEAT, "O2+/O+ r_ref, w_O (NMC811)")),
    "fig5.o_high": RowDeps(NMC_CR_SWEEP, (*_NEUTRAL, _HEAT, "O2+/O+ r_ref, w_O (NMC811)")),
    "fig5.o2_vs_laser": RowDeps(NMC_CR_SWEEP, (_HEAT, _BAR, "O2+/O+ r_ref, w_O (NMC811)")),
    # Kingham's crossings and the assumed slope are not fitted; the field they follow is
    "fig5.charge_states": RowDeps(NMC_CR_SWEEP, (_HEAT, _BAR)),
    "fig6.band": RowDeps(at("nmc811-cr", 5, 10, 15, 20, 30, 40), (*_NEUTRAL, _HEAT, _BAR)),
    "fig7.grain": RowDeps(at("grain", 20), construction="the grain is configured as LiMn2O4"),
    "fig7.mn_csr": RowDeps(LMO_SWEEP, ("(MnO)2+ dissociation d0, F_d, scale",
                                       "Mn direct 2+ d_max, T_d, w_T",
                                       "O2+/O+ r_ref, w_O (LiMn2O4)", _HEAT)),
    "fig7.mn_frac": RowDeps(LMO_SWEEP, ("neutral MnO share (LiMn2O4)", _HEAT)),
    "S1.mu_li": RowDeps(LMO_SWEEP, ("Li episode amplitude a, coated LiMn2O4",
                                    "Li screening under the shell")),
}


def conditions(conds) -> str:
    """("nmc811-cr@5", "nmc811-cr@10", "lmo-cr@10") -> "nmc811-cr 5/10 pJ, lmo-cr 10 pJ"."""
    by: dict[str, list[str]] = {}
    for c in conds:
        material, energy = c.split("@")
        by.setdefault(material, []).append(energy)
    return ", ".join(f"{m} {'/'.join(es)} pJ" for m, es in by.items())


def blocking(row: str) -> list[tuple[str, str]]:
    """(parameter, why) for each parameter that keeps ``row`` from being predicted: fitted to
    the row itself, or to data of one of its conditions."""
    deps = ROWS[row]
    out = []
    for name in deps.params:
        p = PARAMETERS[name]
        if row in p.fitted_to:
            out.append((name, "fitted to this row"))
        else:
            shared = [c for c in p.on if c in deps.on]
            if shared:
                out.append((name, f"fitted on {conditions(shared)}"))
    return out


def label(row: str) -> str:
    """'by construction', 'calibrated' or 'predicted', by the rule of the module doc."""
    if ROWS[row].construction:
        return "by construction"
    return "calibrated" if blocking(row) else "predicted"


def provenance(row: str) -> str:
    """``Row.provenance`` of ``row``: its label and what it rests on."""
    deps = ROWS[row]
    if deps.construction:
        return f"by construction: {deps.construction}"
    b = blocking(row)
    if b:
        return "calibrated: " + "; ".join(f"{n} ({why})" for n, why in b)
    return "predicted: depends on " + ", ".join(deps.params) + ", none fitted on it or its " \
        "conditions"


def counts() -> dict[str, int]:
    """Rows by label."""
    out = {"by construction": 0, "calibrated": 0, "predicted": 0}
    for r in ROWS:
        out[label(r)] += 1
    return out
