"""``logger=csv``: Lightning's CSVLogger, except that a resumed run continues the interrupted run's metrics.csv.

Lightning's writer deletes an existing metrics.csv ("Previous log files in this directory will be
deleted"), so after a kill and ``resume=auto`` the steps logged before the kill were lost. Here a
resumed run keeps the rows of the steps before its checkpoint's global step and appends after them;
rows of later steps are dropped, as the resumed run logs those steps again. (Lightning logs the
metrics of the batch that reaches global step ``s`` under ``step`` ``s - 1``.) A fresh run still
starts a new file.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

from vla.atomic import write_bytes_atomic


def keep_rows_before(metrics_file: Path, step: int) -> list[str]:
    """Rewrite ``metrics_file`` with only its rows of steps < ``step``; returns its columns ([] if there is no file)."""
    if not metrics_file.is_file():
        return []
    with open(metrics_file, newline="") as f:
        reader = csv.DictReader(f)
        columns, rows = list(reader.fieldnames or []), [row for row in reader if int(row["step"]) < step]
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    write_bytes_atomic(metrics_file, text.getvalue().encode())
    return columns


class _ContinuingWriter(ExperimentWriter):
    """Lightning's writer, but with ``keep_before`` set it trims metrics.csv instead of deleting it."""

    def __init__(self, log_dir: str, keep_before: int | None):
        self.keep_before = keep_before
        super().__init__(log_dir)
        if keep_before is not None:
            self.metrics_keys = keep_rows_before(Path(self.metrics_file_path), keep_before)

    def _check_log_dir_exists(self) -> None:
        if self.keep_before is None:
            super()._check_log_dir_exists()


class ResumableCSVLogger(CSVLogger):
    """CSVLogger whose run can continue an interrupted run's metrics.csv (:meth:`continue_from`)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._keep_before: int | None = None

    def continue_from(self, step: int) -> None:
        """Keep the rows logged before global step ``step`` (the resumed checkpoint's) and append to them."""
        if self._experiment is not None:
            raise RuntimeError("continue_from() must come before the first metrics are logged")
        self._keep_before = step

    @property
    @rank_zero_experiment
    def experiment(self) -> _ContinuingWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ContinuingWriter(self.log_dir, self._keep_before)
        return self._experiment
