"""The recommenders of an experiment config, and the encode/score functions evaluators take.

`build_models(config, num_items)` gives the teacher (full item table) and the student
(config.student.embedding: compositional codes or tensor-train) with the same encoder
and readout sizes (config.model, config.data.max_len). `model_fns(model)` gives the
(encode, score) pair of `ccrec.evaluation.evaluator.Evaluator`.
"""

from __future__ import annotations

from typing import Any, Callable

import ml_collections

from ccrec.models.recommender import ModelSpec, SessionRecommender


def build_models(
    config: ml_collections.ConfigDict, num_items: int
) -> tuple[SessionRecommender, SessionRecommender]:
  """(teacher, student) for `num_items` items."""
  common = dict(max_len=config.data.max_len)
  teacher = SessionRecommender(
      ModelSpec.from_config(config.model, num_items, embedding="table", **common)
  )
  student = SessionRecommender(
      ModelSpec.from_config(
          config.model,
          num_items,
          embedding=config.student.embedding,
          num_codebooks=config.codes.num_codebooks,
          codebook_size=config.codes.codebook_size,
          tt_rank=config.student.tt_rank,
          **common,
      )
  )
  return teacher, student


def model_fns(model: SessionRecommender) -> tuple[Callable[..., Any], Callable[..., Any]]:
  """(encode(variables, items [B, L]) -> s [B, d], score(variables, s, ids | None) -> scores)."""
  encode = lambda v, items: model.apply(v, items)["session"]
  score = lambda v, s, ids: model.apply(v, s, ids, method="score")
  return encode, score
