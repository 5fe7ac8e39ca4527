"""The table gate's old import path. It lives in ``aff3d_fast.table_gate`` now, with the other routes; this
alias stays only until ``torch_impl.benchmark_sections`` imports it from there (then delete this file)."""

from .aff3d_fast.table_gate import supports, table_forward  # noqa: F401
