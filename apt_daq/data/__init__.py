"""Data files shipped with apt_daq (isotopes.json: see tools/make_isotope_data.py)."""
