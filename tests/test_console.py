"""The console of a training run: library filter, progress lines, epoch line, results table."""

import io
import itertools
import json
import logging as std_logging
import os
import re
import subprocess
import sys

import pytest
from absl import logging

from ccrec import console

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _record(pathname: str, level: int = std_logging.INFO) -> std_logging.LogRecord:
  return std_logging.LogRecord("absl", level, pathname, 1, "message", None, None)


def test_filter_drops_library_info_and_keeps_ccrec_and_warnings():
  quiet = console._LibraryFilter(verbose_libs=False)
  orbax = "/site-packages/orbax/checkpoint/checkpoint_manager.py"
  assert not quiet.filter(_record(orbax))
  assert not quiet.filter(_record("/site-packages/jax/_src/xla_bridge.py"))
  assert quiet.filter(_record(orbax, std_logging.WARNING))
  assert quiet.filter(_record(os.path.join(ROOT, "ccrec", "train", "loop.py")))
  assert console._LibraryFilter(verbose_libs=True).filter(_record(orbax))


def test_configure_installs_one_filter_on_the_absl_handler():
  handler = logging.get_absl_handler()
  before = list(handler.filters)
  try:
    console.configure(verbose_libs=False)
    console.configure(verbose_libs=True)
    ours = [f for f in handler.filters if isinstance(f, console._LibraryFilter)]
    assert len(ours) == 1 and ours[0].verbose_libs
  finally:
    for f in list(handler.filters):
      if f not in before:
        handler.removeFilter(f)
    std_logging.getLogger("jax").setLevel(std_logging.NOTSET)
    std_logging.getLogger("orbax").setLevel(std_logging.NOTSET)


def test_duration():
  assert console.duration(0) == "0:00"
  assert console.duration(75.4) == "1:15"
  assert console.duration(3 * 3600 + 61) == "3:01:01"
  assert console.duration(float("nan")) == "?"


def test_progress_on_a_terminal_redraws_one_line_and_clears_it():
  stream = io.StringIO()
  with console.Progress("[t] step", 4, stream=stream, tty=True, redraw_s=0.0) as bar:
    for i in range(1, 5):
      bar.update(i, "ce 1.5")
  out = stream.getvalue()
  assert "\n" not in out  # redrawn in place
  assert out.count("\r") == 5 and out.endswith("\r\033[K")  # 4 draws + the clear
  assert "[t] step 4/4 (100%)" in out and "ce 1.5" in out


def test_progress_elsewhere_prints_only_for_long_loops(monkeypatch):
  lines = []
  monkeypatch.setattr(console.logging, "info", lambda fmt, *args: lines.append(fmt % args))
  clock = itertools.count(0.0, 10.0)  # every reading of the clock 10 s later
  monkeypatch.setattr(console.time, "monotonic", lambda: next(clock))
  bar = console.Progress(
      "[t] step", 100, stream=io.StringIO(), tty=False, every_percent=10, min_interval_s=30.0
  )
  for i in range(1, 101):
    bar.update(i)
  # A line at a 10% boundary only when 30 s have passed since the last one, never at 100%.
  assert lines and len(lines) <= 9
  assert all(re.match(r"\[t\] step \d+/100 \(\d+%\)", line) for line in lines)
  short = console.Progress("[s] step", 100, stream=io.StringIO(), tty=False, min_interval_s=1e9)
  n = len(lines)
  for i in range(1, 101):
    short.update(i)
  assert len(lines) == n  # a short loop prints nothing


def test_epoch_line():
  line = console.epoch_line(
      "teacher",
      3,
      200,
      loss=("teacher/ce", 7.01234),
      select="teacher/valid/NDCG@10",
      value=0.0671,
      best=0.0683,
      best_epoch=1,
      examples_per_s=22851.2,
      elapsed_s=65,
      left_patience_s=40,
      left_budget_s=3300,
  )
  assert line == (
      "[teacher] epoch 3/200: train teacher/ce 7.012, valid NDCG@10 0.0671 "
      "(best 0.0683 at epoch 2), 22,851 ex/s, elapsed 1:05, left 0:40 (patience) "
      "to 55:00 (epoch budget)"
  )


def test_train_loss_prefers_the_total():
  assert console.train_loss({"kd/kl": 1.0, "total": 5.0, "student/ce": 3.0}) == ("total", 5.0)
  assert console.train_loss({"codes/mse": 0.1, "student/ce": 3.0}) == ("student/ce", 3.0)
  assert console.train_loss({"codes/mse": 0.1}) is None


def test_results_table():
  metrics = {
      "teacher/valid/HR@10": 0.5,
      "teacher/valid/NDCG@10": 0.25,
      "teacher/valid/MRR@10": 0.125,
      "teacher/test/HR@10": 0.375,
      "student/test/NDCG@10": 0.0625,
      "student/test_hot/NDCG@10": 1.0,
      "student/compression/bytes_ratio": 3.0,
  }
  rows = console.results_table(metrics).splitlines()
  assert len(rows) == 3 and "valid HR@10" in rows[0] and "test MRR@10" in rows[0]
  assert rows[1].split() == ["teacher", "0.5000", "0.2500", "0.1250", "0.3750", "-", "-"]
  assert rows[2].split() == ["student", "-", "-", "-", "-", "0.0625", "-"]
  assert console.results_table({"student/compression/bytes_ratio": 3.0}) == ""


@pytest.mark.slow
def test_main_job_console_is_a_few_lines_per_stage(tmp_path):
  """launch/train.py on configs/tiny.py: no library INFO, one line per epoch, a results table."""
  workdir = tmp_path / "w"
  run = subprocess.run(
      [
          sys.executable,
          os.path.join(ROOT, "launch", "train.py"),
          "--config=" + os.path.join(ROOT, "configs", "tiny.py"),
          f"--workdir={workdir}",
      ],
      capture_output=True,
      text=True,
      cwd=ROOT,
      timeout=900,
      check=False,
  )
  assert run.returncode == 0, run.stderr[-3000:]
  metrics = json.loads(run.stdout)  # stdout is the JSON alone
  assert "student/test/NDCG@10" in metrics
  lines = run.stderr.splitlines()
  ours = {
      f
      for d in ("ccrec", "launch")
      for _, _, files in os.walk(os.path.join(ROOT, d))
      for f in files
      if f.endswith(".py")
  }
  sources = [
      m.group(1)
      for m in (re.match(r"^I\d{4} [\d:.]+ +\d+ ([\w.]+):\d+\]", line) for line in lines)
      if m
  ]
  assert sources and set(sources) <= ours, sorted(set(sources) - ours)
  assert not any("orbax" in line or "checkpoint_manager" in line for line in lines)
  assert not any(re.search(r"\] \[\w+\] step \d+ ", line) for line in lines)  # per-step: debug
  with open(workdir / "metrics.jsonl") as f:
    records = [json.loads(line) for line in f]
  assert any("examples_per_s" in r for r in records)  # the per-step records are still written
  for stage in ("teacher", "student_pretrain", "distill"):
    epochs = sum(1 for r in records if r["stage"] == stage and "best" in r)
    shown = [line for line in lines if f"[{stage}] epoch " in line and ": train " in line]
    assert epochs == 2 and len(shown) == epochs, (stage, shown)
  assert sum(1 for line in lines if "[codes] " in line and "reconstruction mse" in line) == 1
  table = [line.split()[0] for line in lines if re.match(r"^(teacher|student\w*) +\d", line)]
  assert table == ["teacher", "student", "student_mixed"]
  assert len(lines) <= 40, "\n".join(lines)
