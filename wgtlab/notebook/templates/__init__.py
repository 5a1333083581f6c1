"""HTML templates of the notebook layer (filled by ``wgtlab.notebook.display``)."""
