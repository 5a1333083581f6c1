"""HTML templates of the cluster layer (filled by ``wgtlab.cluster.display``)."""
