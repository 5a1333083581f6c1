"""HTML templates of the receipts layer (filled through ``wgtlab.views.render``)."""
