"""HTML templates of the jobs layer (filled through ``wgtlab.views.render``)."""
