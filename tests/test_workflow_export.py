"""Exporting a workdir: the metrics it records (the export itself: tests/test_pipeline.py)."""

import pytest

from ccrec.workflow import export
from ccrec.workflow.workdir import WorkdirError


def _metrics_workdir(tmp_path, eval_json=None, lines=()):
  tmp_path.mkdir()
  if eval_json is not None:
    (tmp_path / "eval.json").write_text(eval_json)
  if lines:
    (tmp_path / "metrics.jsonl").write_text("".join(lines))
  return str(tmp_path)


def test_workdir_metrics_files(tmp_path):
  final = '{"stage": "final", "student/test/HR@10": 0.5, "teacher/test/HR@10": 0.6}\n'
  later = '{"stage": "final", "student/test/HR@10": 0.7}\n'
  workdir = _metrics_workdir(tmp_path / "a", lines=[final, '{"stage": "fin'])
  assert export.workdir_metrics(workdir, "student") == {"student/test/HR@10": 0.5}
  # A killed run's half line, then the resumed run's records: skipped, the later one wins.
  workdir = _metrics_workdir(tmp_path / "b", lines=[final, '{"stage": "fi\n', later])
  assert export.workdir_metrics(workdir, "student") == {"student/test/HR@10": 0.7}
  workdir = _metrics_workdir(tmp_path / "d", lines=[final, "[1]\n", later])
  with pytest.raises(WorkdirError, match=r"metrics\.jsonl line 2 is not a JSON object"):
    export.workdir_metrics(workdir, "student")
  for bad in ('{"student/test/HR@10": 0.', "[1, 2]"):
    workdir = _metrics_workdir(tmp_path / f"c{len(bad)}", eval_json=bad, lines=[final])
    with pytest.raises(WorkdirError, match=r"eval\.json .*launch/evaluate\.py"):
      export.workdir_metrics(workdir, "student")
