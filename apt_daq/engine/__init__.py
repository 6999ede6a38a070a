"""The run engine's parts; :mod:`apt_daq.run` (``Session``) puts them together and re-exports
every public name.

- :mod:`~apt_daq.engine.states`: the run's states, its result, the abort exception;
- :mod:`~apt_daq.engine.feedback`: the detection-rate feedback on V_dc (``RateController``);
- :mod:`~apt_daq.engine.suspenders`: conditions that pause a run while they fail;
- :mod:`~apt_daq.engine.progress`: the progress display;
- :mod:`~apt_daq.engine.signals`: the signals that pause or end a run.
"""
