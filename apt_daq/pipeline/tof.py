"""Time of flight -> mass-to-charge: the project's one m/n kernel and its one constant,
defined in the foundation module :mod:`apt_daq.tof` (the simulator's detector uses its
inverse) and re-exported here beside the other kernels."""

from apt_daq.tof import (
    DALTON_KG,
    E_CHARGE_C,
    K_CODATA,
    K_DA,
    flight_time_ns,
    flight_time_one,
    implied_flight_path_mm,
    mass_da,
    mass_kernel,
    mass_to_charge,
)

__all__ = [
    "DALTON_KG", "E_CHARGE_C", "K_CODATA", "K_DA", "flight_time_ns", "flight_time_one",
    "implied_flight_path_mm", "mass_da", "mass_kernel", "mass_to_charge",
]
