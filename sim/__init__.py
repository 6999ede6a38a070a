"""The virtual LEAP 5000: a simpy instrument model with numba field-evaporation physics."""
