"""The example configs shipped with apt-daq (``apt_daq.configs``): runs, instruments,
specimens, range files, campaigns and pyvisa-sim instruments. Find them with
:func:`apt_daq.shipped.configs_dir`; ``apt-daq configs list`` lists them and ``apt-daq configs
copy DIR`` gives you editable copies."""
