"""OD-Rec baseline on MovieLens-100k: the student's item table is a tensor train.

configs/eodrec.py with a TT student in place of the compositional codes (the 'codes'
stage is skipped for a TT student), so the two students train and are compared like for
like. TT rank 8 with the default factorisations ((12, 12, 12) item radices, d = 64 =
4 * 4 * 4) gives 3,840 core parameters, CR = V d / params = 28 on ml-100k, the paper's
"about 30" at which OD-Rec is compared.

  python launch/train.py --config=configs/tt.py --workdir=runs/tt
"""

from ccrec import config as config_lib


def get_config():
  c = config_lib.sibling(__file__, "eodrec.py")
  c.student.embedding = "tt"
  c.student.tt_rank = 8
  return c
