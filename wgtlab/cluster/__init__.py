"""Clusters: the manager (``delegate_job``), the embedded ``LocalCluster``, ``DaskCluster``,
worker identities and simulated faults. All clusters implement the interface in ``base.py``."""
