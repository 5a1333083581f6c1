"""Sub-commands of the ``wgtlab`` CLI, one module per concern (see ``wgtlab/cli.py``)."""
