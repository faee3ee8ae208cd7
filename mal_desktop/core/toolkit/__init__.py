"""Evaluation toolkit: model references (files, ``zoo:NAME``, plans, in-memory models) and the
cached models x datasets matrix.

It sits above ``jobs`` and ``zoo`` because a reference may name a zoo model or an assembly plan
that is assembled on the fly; the lower ``evaluate`` package knows nothing of either.
"""
