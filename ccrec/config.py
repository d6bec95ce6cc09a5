"""The experiment config schema: every hyperparameter, with defaults.

Config files under configs/ start from `base_config()` and override fields;
the result is locked, so `--config.modle.d=64` (a misspelt key) is an error.
`validate` checks values and names the offending field; every float must be
finite (no NaN or infinity).
"""

from __future__ import annotations

import importlib.util
import math
import os

import ml_collections

STAGES = ("teacher", "codes", "student_pretrain", "distill")


ENCODERS = ("transformer", "gru4rec", "narm")  # model.encoder: ccrec/models/recommender.py
GRU_ENCODERS = ("gru4rec", "narm")  # the encoders built on ccrec/models/gru.py
READOUTS = ("soft_attention", "last", "narm")  # model.readout: ccrec/models/readout.py


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 2020  # root of every random stream (init, dropout, gumbel, data order)
  c.stages = ("teacher",)  # pipeline stages to run: a prefix of STAGES

  c.data = ml_collections.ConfigDict()
  c.data.dataset = "ml-100k"  # known name, a prepared-dataset directory, or 'synthetic'
  c.data.protocol = "loo"  # 'loo' (leave-one-out per user) or 'session' (time split)
  c.data.max_len = 50  # sessions/histories keep their last max_len items
  c.data.data_dir = ""  # cache of prepared datasets ('' = $CCREC_DATA_DIR or ~/.cache/ccrec)
  c.data.hot_fraction = 0.2  # top fraction of items by training frequency that are 'hot'
  c.data.synthetic_items = 500  # dataset='synthetic': catalog size
  c.data.synthetic_sessions = 2000  # dataset='synthetic': number of sessions

  c.model = ml_collections.ConfigDict()
  c.model.d = 64  # embedding and hidden size
  c.model.num_blocks = 2  # transformer blocks
  c.model.num_heads = 2  # attention heads
  c.model.inner = 256  # feed-forward inner size
  c.model.dropout = 0.5  # hidden dropout
  c.model.attn_dropout = 0.5  # dropout on attention weights
  # 'transformer' (SASRec), 'gru4rec' or 'narm' (the GRU encoder; needs readout='narm')
  c.model.encoder = "transformer"
  c.model.gru_hidden = 128  # GRU units per layer (encoder='gru4rec' or 'narm')
  c.model.gru_layers = 1  # GRU layers (encoder='gru4rec' or 'narm')
  # 'soft_attention' (the paper's), 'last' (plain SASRec, GRU4Rec) or 'narm' (NARM's attention)
  c.model.readout = "soft_attention"
  c.model.readout_dropout = 0.0  # dropout before NARM's bilinear map (readout='narm')
  # 'truncated_normal' | 'normal' | 'uniform' (paper: U(-0.1, 0.1))
  c.model.init = "truncated_normal"
  c.model.init_scale = 0.02  # stddev, or the bound for 'uniform'
  c.model.layer_norm_eps = 1e-12  # as RecBole's SASRec

  c.train = ml_collections.ConfigDict()
  c.train.objective = "window"  # 'window' (all positions of a window) or 'prefix' (one per prefix)
  c.train.window_stride = 0  # objective=window: stride between windows (0 = max_len, no overlap)
  # >0: batch rows of similar length together and cut each batch to its longest row,
  # rounded up to a multiple of this (short sessions stop paying for max_len positions)
  c.train.length_bucket = 0
  c.train.batch_size = 256  # windows (objective=window) or prefixes (objective=prefix) per step
  c.train.optimizer = "adam"  # 'adam' | 'adamw'
  c.train.learning_rate = 1e-3
  c.train.lr_decay = 1.0  # learning rate multiplied by this each epoch, smoothly (1.0 = constant)
  c.train.weight_decay = 0.0  # decoupled decay (adamw only)
  c.train.l2 = 0.0  # coupled L2 on all parameters (the paper: 1e-5)
  c.train.clip_norm = 0.0  # global-norm clipping, 0 disables
  c.train.label_smoothing = 0.0  # eps of every recommendation cross-entropy (teacher, student)
  c.train.rdrop = 0.0  # teacher stage: weight of the R-Drop consistency term (0 = off)
  c.train.rdrop_detach = False  # R-Drop's second pass as a fixed target (forward only)
  # Teacher stage and student pre-training: rows per chunk of the fused scoring + loss
  # (ccrec/ops/fused.py); 0 = the reference path, materialised [N, V] logits and autodiff.
  c.train.fused_chunk = 0
  c.train.loss = "full"  # 'full' (softmax over every item) or 'sampled' (ccrec/ops/sampled.py)
  c.train.num_negatives = 1024  # loss='sampled': items drawn by popularity per step, shared
  c.train.epochs = 200  # upper bound; early stopping usually ends sooner
  c.train.patience = 5  # epochs without validation improvement before stopping
  c.train.select_metric = "NDCG@10"  # validation metric for model selection
  c.train.log_every = 50  # steps between log lines

  c.eval = ml_collections.ConfigDict()
  c.eval.batch_size = 256  # prefixes per evaluation batch
  c.eval.item_chunk = 0  # score the catalog in chunks of this many items (0 = all at once)

  c.codes = ml_collections.ConfigDict()
  c.codes.num_codebooks = 4  # M
  c.codes.codebook_size = 32  # K
  c.codes.temperature = 0.3  # Gumbel-softmax temperature
  c.codes.learning_rate = 1e-3
  c.codes.batch_size = 256  # items per code-learning step
  c.codes.max_steps = 20000  # upper bound on code-learning steps
  c.codes.eval_every = 200  # steps between full-table reconstruction checks
  c.codes.patience = 10  # checks without relative improvement > tolerance before stopping
  c.codes.tolerance = 1e-3  # relative improvement that counts
  # >0: the checks scan a fixed sample of this many items, not the whole table (large catalogs)
  c.codes.check_items = 0
  c.codes.refit = True  # least-squares codebooks for the frozen codes (never worse; exact)
  c.codes.refine_iterations = 20  # alternating code/codebook refinement after learning (0 = off)
  c.codes.unique = True  # move items that share a full code to the nearest free code (then refit)
  # Every code-learning step weights item v by max(count_v, 1)^weight_power (mean 1): 0 = all
  # items alike (the paper); 1 = by training frequency, so frequent items are reconstructed best
  c.codes.weight_power = 0.0

  c.student = ml_collections.ConfigDict()
  c.student.embedding = "codes"  # 'codes' (compositional, the method) or 'tt' (OD-Rec baseline)
  c.student.tt_rank = 8  # TT rank when embedding='tt'
  c.student.mixup = True  # embedding mixup during student training
  c.student.eta = 0.8  # weight of the TEACHER table in the mixup table
  c.student.eta_decay_epochs = 0  # >0: eta falls linearly to 0 over this many epochs of student
  # pre-training and distillation trains the composite alone (the table it is deployed with)
  c.student.init_from_teacher = True  # start the student's encoder/readout from the teacher's
  c.student.mse_weight = 1.0  # weight of the reconstruction loss ||e_v - X_v||^2
  c.student.pretrain_epochs = 200  # upper bound for student pre-training (early stopping)
  c.student.rdrop = 0.0  # student pre-training: weight of the R-Drop term (0 = off)
  # > 0: the student is validated, selected, evaluated and exported with an exponential
  # moving average of its weights (this decay per step) in pre-training and distillation
  c.student.ema_decay = 0.0

  c.distill = ml_collections.ConfigDict()
  c.distill.enabled = True  # False = 'base' ablation (student trained alone after pretraining)
  c.distill.bidirectional = True  # False freezes the teacher ('w/o-b')
  c.distill.contrastive = True  # False = 'w/o-c'
  c.distill.soft_targets = True  # False = 'w/o-s'
  c.distill.beta = 0.01  # weight of the contrastive loss
  c.distill.gamma = 0.3  # weight of the soft-target KL
  c.distill.kd_temperature = 1.0  # temperature of the soft targets
  c.distill.con_temperature = 0.2  # InfoNCE temperature
  c.distill.epochs = 200  # upper bound (early stopping on the student's validation metric)
  c.distill.batch_size = 0  # windows/prefixes per distillation step (0 = train.batch_size)

  # Device mesh (ccrec/parallel.py, docs/scale_out.md). Multi-host settings are launch flags.
  c.parallel = ml_collections.ConfigDict()
  c.parallel.data = -1  # data-axis size (batch split); -1 = all devices // parallel.model
  # item-axis size: item table / codes / logits split; needs (V+1) % model == 0
  c.parallel.model = 1
  return c


class ConfigError(ValueError):
  """A config field holds an invalid value."""


def _floats(c: ml_collections.ConfigDict, prefix: str = ""):
  """(dotted field, value) of every float in `c`, tuples included."""
  for key, value in c.items():
    if isinstance(value, ml_collections.ConfigDict):
      yield from _floats(value, f"{prefix}{key}.")
    elif isinstance(value, float):
      yield f"{prefix}{key}", value
    elif isinstance(value, (tuple, list)):
      yield from ((f"{prefix}{key}", v) for v in value if isinstance(v, float))


def validate(c: ml_collections.ConfigDict) -> None:
  """Raises ConfigError (a ValueError) naming the field for any invalid value."""

  def need(ok: bool, field: str, what: str):
    if not ok:
      raise ConfigError(f"config.{field}: {what} (got {get(c, field)!r})")

  for field, value in _floats(c):
    need(math.isfinite(value), field, "must be a finite number (not NaN or infinity)")

  need(
      all(s in STAGES for s in c.stages) and len(c.stages) > 0,
      "stages",
      f"must be a non-empty sequence of {STAGES}",
  )
  # Each stage starts from the one before it (the teacher's table, its codes, the pre-trained
  # student), so a run is a prefix of the pipeline; a TT student has no codes to learn.
  needed = tuple(s for s in STAGES if s != "codes" or c.student.embedding != "tt")
  run = tuple(s for s in c.stages if s in needed)
  need(
      run == needed[: len(run)],
      "stages",
      f"must be a prefix of {STAGES} (each stage needs the one before it; "
      "student.embedding='tt' may leave out 'codes')",
  )
  need(c.data.protocol in ("loo", "session"), "data.protocol", "must be 'loo' or 'session'")
  need(c.data.max_len >= 1, "data.max_len", "must be >= 1")
  need(0 < c.data.hot_fraction < 1, "data.hot_fraction", "must be in (0, 1)")
  for f in ("d", "num_blocks", "num_heads", "inner"):
    need(c.model[f] >= 1, f"model.{f}", "must be >= 1")
  need(c.model.d % c.model.num_heads == 0, "model.d", "must be divisible by model.num_heads")
  for f in ("dropout", "attn_dropout"):
    need(0 <= c.model[f] < 1, f"model.{f}", "must be in [0, 1)")
  encoder = c.model.get("encoder", "transformer")
  need(encoder in ENCODERS, "model.encoder", f"must be one of {ENCODERS}")
  if encoder in GRU_ENCODERS:
    for f in ("gru_hidden", "gru_layers"):
      need(c.model.get(f, 1) >= 1, f"model.{f}", "must be >= 1")
  need(c.model.readout in READOUTS, "model.readout", f"must be one of {READOUTS}")
  need(
      encoder != "narm" or c.model.readout == "narm",
      "model.readout",
      "must be 'narm' with model.encoder='narm'",
  )
  need(0 <= c.model.get("readout_dropout", 0.0) < 1, "model.readout_dropout", "must be in [0, 1)")
  need(
      c.model.init in ("truncated_normal", "normal", "uniform"),
      "model.init",
      "must be 'truncated_normal', 'normal' or 'uniform'",
  )
  need(c.model.init_scale > 0, "model.init_scale", "must be > 0")
  need(c.model.layer_norm_eps > 0, "model.layer_norm_eps", "must be > 0")
  need(c.train.optimizer in ("adam", "adamw"), "train.optimizer", "must be 'adam' or 'adamw'")
  for f in ("weight_decay", "l2", "clip_norm"):
    need(c.train[f] >= 0, f"train.{f}", "must be >= 0 (0 disables it)")
  need(c.train.log_every >= 1, "train.log_every", "must be >= 1")
  metric, _, k = str(c.train.select_metric).partition("@")
  need(
      metric in ("HR", "MRR", "NDCG") and k in ("5", "10", "20"),
      "train.select_metric",
      "must be HR, MRR or NDCG @ 5, 10 or 20, e.g. 'NDCG@10'",
  )
  need(c.eval.item_chunk >= 0, "eval.item_chunk", "must be >= 0 (0 = the whole catalog)")
  need(c.data.synthetic_items >= 2, "data.synthetic_items", "must be >= 2")
  need(c.data.synthetic_sessions >= 1, "data.synthetic_sessions", "must be >= 1")
  need(c.train.objective in ("window", "prefix"), "train.objective", "must be 'window' or 'prefix'")
  need(0.0 < c.train.lr_decay <= 1.0, "train.lr_decay", "must be in (0, 1]")
  need(c.train.batch_size >= 1, "train.batch_size", "must be >= 1")
  need(
      0 <= c.train.window_stride <= c.data.max_len,
      "train.window_stride",
      "must be in [0, data.max_len] (0 = max_len)",
  )
  need(
      c.train.length_bucket >= 0,
      "train.length_bucket",
      "must be >= 0 (0 = every batch at max_len)",
  )
  need(c.eval.batch_size >= 1, "eval.batch_size", "must be >= 1")
  need(0 <= c.train.label_smoothing < 1, "train.label_smoothing", "must be in [0, 1)")
  need(c.train.rdrop >= 0, "train.rdrop", "must be >= 0")
  need(isinstance(c.train.rdrop_detach, bool), "train.rdrop_detach", "must be True or False")
  need(c.train.fused_chunk >= 0, "train.fused_chunk", "must be >= 0 (0 = not fused)")
  need(
      not (c.train.fused_chunk and c.train.rdrop_detach),
      "train.fused_chunk",
      "must be 0 with train.rdrop_detach=True (the fused loss has no detached form)",
  )
  need(c.train.loss in ("full", "sampled"), "train.loss", "must be 'full' or 'sampled'")
  need(c.train.num_negatives >= 1, "train.num_negatives", "must be >= 1")
  need(
      c.train.loss == "full" or not (c.train.fused_chunk or c.train.rdrop_detach),
      "train.loss",
      "'sampled' needs train.fused_chunk=0 and train.rdrop_detach=False",
  )
  need(c.train.learning_rate > 0, "train.learning_rate", "must be > 0")
  need(c.train.epochs >= 1, "train.epochs", "must be >= 1")
  need(c.train.patience >= 1, "train.patience", "must be >= 1")
  need(c.codes.num_codebooks >= 1, "codes.num_codebooks", "must be >= 1")
  need(2 <= c.codes.codebook_size <= 65536, "codes.codebook_size", "must be in [2, 65536]")
  need(c.codes.temperature > 0, "codes.temperature", "must be > 0")
  need(c.codes.learning_rate > 0, "codes.learning_rate", "must be > 0")
  for f in ("batch_size", "max_steps", "eval_every", "patience"):
    need(c.codes[f] >= 1, f"codes.{f}", "must be >= 1")
  need(c.codes.tolerance >= 0, "codes.tolerance", "must be >= 0")
  need(c.codes.get("check_items", 0) >= 0, "codes.check_items", "must be >= 0 (0 = every item)")
  need(
      0 <= c.codes.weight_power < float("inf"),
      "codes.weight_power",
      "must be a finite number >= 0 (0 = unweighted)",
  )
  need(c.codes.refine_iterations >= 0, "codes.refine_iterations", "must be >= 0 (0 = off)")
  need(c.student.tt_rank >= 1, "student.tt_rank", "must be >= 1")
  need(c.student.mse_weight >= 0, "student.mse_weight", "must be >= 0")
  need(c.student.pretrain_epochs >= 1, "student.pretrain_epochs", "must be >= 1")
  need(c.student.rdrop >= 0, "student.rdrop", "must be >= 0")
  need(0 <= c.student.ema_decay < 1, "student.ema_decay", "must be in [0, 1) (0 = off)")
  need(c.distill.epochs >= 1, "distill.epochs", "must be >= 1")
  for f in ("beta", "gamma"):
    need(c.distill[f] >= 0, f"distill.{f}", "must be >= 0")
  need(c.student.embedding in ("codes", "tt"), "student.embedding", "must be 'codes' or 'tt'")
  need(0 <= c.student.eta <= 1, "student.eta", "must be in [0, 1]")
  need(c.student.eta_decay_epochs >= 0, "student.eta_decay_epochs", "must be >= 0")
  need(c.distill.batch_size >= 0, "distill.batch_size", "must be >= 0 (0 = train.batch_size)")
  need(c.distill.kd_temperature > 0, "distill.kd_temperature", "must be > 0")
  need(c.distill.con_temperature > 0, "distill.con_temperature", "must be > 0")
  need(c.parallel.data == -1 or c.parallel.data >= 1, "parallel.data", "must be -1 (all) or >= 1")
  need(c.parallel.model >= 1, "parallel.model", "must be >= 1")


def distill_batch_size(c: ml_collections.ConfigDict) -> int:
  """Windows (or prefixes) per distillation step: distill.batch_size, else train.batch_size."""
  return c.distill.batch_size or c.train.batch_size


def get(c: ml_collections.ConfigDict, dotted: str):
  """The value of a dotted field: get(c, "distill.beta") is c.distill.beta."""
  for part in dotted.split("."):
    c = c[part]
  return c


def from_file(path: str) -> ml_collections.ConfigDict:
  """`get_config()` of the config file at `path`. A config file may start from another and
  override its fields (configs/tt.py is configs/eodrec.py with the TT student)."""
  spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def sibling(config_file: str, name: str) -> ml_collections.ConfigDict:
  """`from_file` of the config file `name` in the directory of `config_file` (a __file__)."""
  return from_file(os.path.join(os.path.dirname(os.path.abspath(config_file)), name))


def lock(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  c.lock()
  return c
