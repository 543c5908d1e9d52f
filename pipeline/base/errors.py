"""The project's one exception base: ``except PipelineError`` catches every fault it names.

Each of the project's exception classes derives from :class:`PipelineError` and keeps
its built-in base (``ValueError`` for bad input, ``RuntimeError`` for a service that
failed), so a caller's ``except ValueError`` goes on working. The one exception is
:class:`pipeline.base.interrupt.Interrupted`: a signal unwinds like ``KeyboardInterrupt``,
which ``except Exception`` must not catch, so it cannot derive from this class.
"""

from __future__ import annotations


class PipelineError(Exception):
    """A fault the pipeline recognised and describes (file, column, key, rule, service)."""
