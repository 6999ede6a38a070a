"""The seed paper's numbers and statements, each with where it comes from.

Singh, Woods, Kim, Jung, Aota, Gault, "Facilitating the Systematic Nanoscale Study of Battery
Materials by Atom Probe Tomography through in-situ Metal Coating", Batteries & Supercaps 2023
(doi 10.1002/batt.202300403). Only what the text and captions state; the figures' images are
not available to us, so a value read off a plot is never used.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PaperValue:
    value: float | None  # None: a qualitative statement (the table says what it means)
    text: str  # what the paper says, quoted or closely paraphrased
    source: str  # section / figure / caption


# Run conditions (Experimental section and the captions of Fig. 4 and Fig. 7).
BASE_TEMPERATURE_K = 60.0
PULSE_RATE_HZ = 100_000.0
DETECTION_RATE = 0.005  # "0.5 ions per 1000 pulse" (Experimental); "0.5%" (Fig. 4 caption)
INSTRUMENTS = ("LEAP 5000 XS", "LEAP 5000 XR")

# Nominal NMC811 and LMO (Experimental; Fig. 5-7 dashed lines).
NOMINAL_AT_PCT = {"Li": 25.0, "Ni": 20.0, "Co": 2.5, "Mn": 2.5, "O": 50.0}

V = {
    # ---- Fig. 1 (uncoated NMC811, 5/10/15/20 pJ, one specimen)
    "fig1.heterogeneity": PaperValue(
        None, "as the laser pulse energy increases, the heterogeneity in the ion field "
        "evaporation is markedly more apparent", "Results, Fig. 1"),
    "fig1.li_5pj": PaperValue(
        None, "5 pJ: only Ni ions are displayed, with only few Li-ions detected",
        "Results, Fig. 1a"),
    "fig1.li_20pj": PaperValue(
        None, "at 20 pJ, one can exclusively observe the evaporation of Li-ions",
        "Results, Fig. 1d"),
    "fig1.fracture_uncoated": PaperValue(
        None, "Most specimens faced premature fracture during analysis", "Results, Fig. 1"),
    "fig1.fracture_coated": PaperValue(
        None, "Cr-coated specimens ... virtually eliminated premature specimen failures",
        "Abstract; Conclusions"),
    # ---- Fig. 2 / S3 (the shell)
    "fig2.shell": PaperValue(
        None, "a continuous, thin and conformal Cr-coating along the whole length of the "
        "specimen", "Results, Fig. 2c"),
    "fig2.ga": PaperValue(
        None, "Ga ... is also observed in the coated regions ... no significant ingress of Ga "
        "within the core of the specimen", "Results, Fig. 2c, Fig. S3"),
    # ---- Fig. 3 (coated, 5/10/15 pJ)
    "fig3.rim": PaperValue(
        None, "the periphery is visibly filled with Cr-ions and Cr-O molecular ions",
        "Results, Fig. 3a-c"),
    "fig3.consistent": PaperValue(
        None, "The atomic compositions for the 10 pJ and 15 pJ is consistent with the 5 pJ "
        "data", "Results, Fig. 3d"),
    "fig3.homogeneous": PaperValue(
        None, "the Cr-coating enables homogeneous field evaporation of all constituents, "
        "particularly of Li-ions", "Results, Fig. 3"),
    # ---- Fig. 4 / S5 (coated vs uncoated at 5 pJ)
    "fig4.o2_o": PaperValue(
        2.61, "The obtained ratio for O2+/O+ is approx. 2.61 for both measurements",
        "Results, before Fig. 4"),
    "fig4.mrp": PaperValue(
        None, "illustrating an improvement in the mass resolving power for the coated sample "
        "(reduction of the thermal tails)", "Fig. 4a caption; Results"),
    "fig4.mu_li_uncoated": PaperValue(
        0.9, "frequency distribution analysis of Li+ ions yielded coefficients of 0.9 (uncoated)",
        "Results, Fig. 4b"),
    "fig4.mu_li_coated": PaperValue(
        0.5, "... and 0.5 (Cr-coated)", "Results, Fig. 4c"),
    "fig4.mu_o2": PaperValue(
        None, "A similar trend was observed for O2+ ions", "Results, Fig. 4b,c"),
    # ---- Fig. 5 (coated, 5-50 pJ, one particle)
    "fig5.li": PaperValue(
        0.5, "Li/(Li+Ni+Co+Mn): expected 0.5; the observed ratio is close to this value "
        "across the entire range of electrostatic field", "Results, Fig. 5a"),
    "fig5.ni_low": PaperValue(
        0.78, "Ni/(Ni+Co+Mn) hovering around ~0.78 at lower O2+/O+ ratios, i.e., lower laser "
        "pulse energies", "Results, Fig. 5b"),
    "fig5.ni_high": PaperValue(
        None, "but show a slight deviation at high O2+/O+ ratios", "Results, Fig. 5b"),
    "fig5.o": PaperValue(
        0.5, "O/(Li+O+Ni+Co+Mn): expected 0.5 ... close to this expected value, especially with "
        "O2+/O+ ratios below 4", "Results, Fig. 5b"),
    "fig5.o2_vs_laser": PaperValue(
        None, "lower O2+/O+ ratios, i.e., lower laser pulse energies (O2+/O+ rises with laser "
        "energy)", "Results, Fig. 5b"),
    # ---- Fig. 6 (several particles of one batch)
    "fig6.band": PaperValue(
        None, "consistently display a narrow range of variations", "Results, Fig. 6"),
    # ---- Fig. 7 (LMO)
    "fig7.grain": PaperValue(
        None, "The obtained mass spectrum does not exhibit any peaks associated with Ni, Co "
        "and even Ni-O, Co-O molecular ions", "Results, Fig. 7a, Fig. S8"),
    "fig7.mn_csr": PaperValue(
        None, "There is a monotonous decrease in Mn2+/Mn+ ratio with decrease in laser energy",
        "Results, Fig. 7b"),
    "fig7.o2_csr": PaperValue(
        None, "but no particular trend in the O2+/O+ ratios, with only small variations",
        "Results, Fig. 7b"),
    "fig7.mn_frac": PaperValue(
        2 / 3, "Mn/(Li+Mn) (expected 2/3) ... deviate significantly from the expected values",
        "Results, Fig. 7c"),
    "fig7.li_frac": PaperValue(
        1 / 3, "Li/(Li+Mn) (expected 1/3) ... deviate significantly from the expected values",
        "Results, Fig. 7c"),
    # ---- Table S1
    "S1.mu_li": PaperValue(
        None, "The Li agglomerations ... consistently showed values in the range of 0.6-0.4",
        "Results, Table S1"),
}
