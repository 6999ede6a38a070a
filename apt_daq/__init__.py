"""apt-daq: control, simulate and analyse a laser-pulsed atom probe."""

__version__ = "0.1.0"
