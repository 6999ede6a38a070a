"""``python -m apt_daq.config > docs/config.md``: print the config reference."""

from apt_daq.config.reference import markdown_reference

print(markdown_reference())
