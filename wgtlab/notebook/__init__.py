"""Notebook layer: the %wgt magics, the live dashboard widgets and the matplotlib plots.

Layer 5: may import every layer below; nothing below imports it.
"""
