"""Report tables as data: each table is a :class:`TableSpec` registered in :data:`TABLES`
by its own module (``paper.py``: the founding paper's Tables I-V; ``kd_benchmark.py``: the
CIFAR-100 and ImageNet KD benchmark). The report iterates over :data:`TABLES`."""

from supkd.experiments.tables import kd_benchmark, paper
from supkd.experiments.tables.spec import (
    BEST,
    LAST,
    TABLES,
    CellKey,
    Keyed,
    ReferenceRow,
    TableSpec,
    register_table,
    report_order,
    tables_of,
)

__all__ = ["BEST", "LAST", "TABLES", "CellKey", "Keyed", "ReferenceRow", "TableSpec",
           "kd_benchmark", "paper", "register_table", "report_order",
           "tables_of"]
