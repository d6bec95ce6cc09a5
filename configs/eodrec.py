"""EODRec on MovieLens-100k: teacher -> codes -> student pre-training -> distillation.

The default ml-100k method config (the README's main job): compression with M=4 codebooks
of K=32 codewords (the paper's Tmall setting) at d=64. Where it departs from the paper,
and why: docs/method.md section 7; measurements: RESULTS.md and BENCHMARKS.md.

  python launch/train.py --config=configs/eodrec.py --workdir=runs/eodrec
"""

from ccrec import config as config_lib


def get_config():
  c = config_lib.base_config()
  c.stages = ("teacher", "codes", "student_pretrain", "distill")
  c.codes.num_codebooks = 4
  c.codes.codebook_size = 32
  # Codes fitted to the items in proportion to their training frequency (item v weighted by
  # count_v): the 128 codewords go where the targets are.
  c.codes.weight_power = 1.0
  c.student.eta = 0.8
  # Mixup as a warm-up: eta falls 0.8 -> 0 over the first 5 pre-training epochs, and the
  # student then trains (and distils) on the composite table it is evaluated and deployed with.
  c.student.eta_decay_epochs = 5
  c.distill.beta = 0.01
  c.distill.gamma = 0.3
  # ml-100k histories are long (106 clicks on average, windows of 50): the state at the last
  # click rather than the paper's unnormalised soft-attention readout (selected on validation).
  # --config.model.readout=soft_attention gives the paper's readout.
  c.model.readout = "last"
  c.train.batch_size = 16  # windows of up to 50 targets each (~150 steps per epoch)
  c.distill.batch_size = 32  # two models per step: twice the teacher's windows per step
  c.train.patience = 10  # validation on 943 users is noisy
  c.train.label_smoothing = 0.3  # every recommendation cross-entropy (teacher and student)
  return config_lib.lock(c)
