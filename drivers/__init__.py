"""Instrument drivers: laser, HV supply and delay-line detector behind small typed interfaces."""
