"""Solvers that take any :class:`nnfit.operators.LinearOperator` (or a Gram matrix).

A solver never opens a file: callers hand it operators, arrays and callbacks.
"""
