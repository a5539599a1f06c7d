"""Baseline methods. Each module here defines one :class:`spt.harness.method.Method` subclass
with a unique ``name``; the harness registry imports every module of this package, so adding a
baseline means adding one file.
"""
