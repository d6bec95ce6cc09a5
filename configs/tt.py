"""OD-Rec baseline on MovieLens-100k: the student's item table is a tensor train.

Same pipeline as configs/eodrec.py (teacher -> student pre-training ->
distillation; the 'codes' stage is skipped for a TT student). TT rank 8 with
the default factorisations ((12, 12, 12) item radices, d = 64 = 4 * 4 * 4)
gives 3,840 core parameters, CR = V d / params = 28 on ml-100k, the paper's
"about 30" that OD-Rec is compared at. Training settings as configs/eodrec.py,
so the two students are compared like for like.

  python launch/train.py --config=configs/tt.py --workdir=runs/tt
"""

from ccrec import config as config_lib


def get_config():
  c = config_lib.base_config()
  c.stages = ("teacher", "codes", "student_pretrain", "distill")
  c.student.embedding = "tt"
  c.student.tt_rank = 8
  c.student.eta = 0.8
  c.distill.beta = 0.01
  c.distill.gamma = 0.3
  c.model.readout = "last"  # as configs/eodrec.py on ml-100k's long histories
  c.train.batch_size = 16
  c.distill.batch_size = 32  # as configs/eodrec.py (measured there with the codes student)
  c.train.patience = 10
  c.train.label_smoothing = 0.3  # as configs/eodrec.py
  return config_lib.lock(c)
