"""Seconds-long config for tests and smoke runs: a small synthetic catalog, tiny model.

Runs the whole EODRec pipeline (teacher -> codes -> student pre-training ->
distillation) with a couple of epochs per stage.
"""

from ccrec import config as config_lib


def get_config():
  c = config_lib.base_config()
  c.seed = 0
  c.stages = ("teacher", "codes", "student_pretrain", "distill")
  c.data.dataset = "synthetic"
  c.data.protocol = "session"
  c.data.max_len = 8
  c.data.synthetic_items = 60
  c.data.synthetic_sessions = 300
  c.model.d = 16
  c.model.num_blocks = 1
  c.model.num_heads = 2
  c.model.inner = 32
  c.model.dropout = 0.1
  c.model.attn_dropout = 0.1
  c.train.batch_size = 32
  c.train.epochs = 2
  c.train.patience = 2
  c.train.log_every = 5
  c.eval.batch_size = 64
  c.codes.num_codebooks = 2
  c.codes.codebook_size = 8
  c.codes.batch_size = 32
  c.codes.max_steps = 60
  c.codes.eval_every = 20
  c.codes.patience = 2
  c.student.pretrain_epochs = 2
  c.distill.epochs = 2
  c.distill.batch_size = 16  # differs from train.batch_size, so tests see the field used
  return config_lib.lock(c)
