"""The study report: ``page`` (HTML assembly, ``write_report``), ``figures``, ``prose`` (the generated answers),
``fmt`` (shared formatting) and ``style.css``. Renders typed rows from ``frankenlm.study.results``; decides
nothing."""

from frankenlm.report.fmt import TOP_N
from frankenlm.report.page import FIGURE_DIR, REPORT_NAME, TABLE_DIR, write_report

__all__ = ["write_report", "TOP_N", "REPORT_NAME", "FIGURE_DIR", "TABLE_DIR"]
