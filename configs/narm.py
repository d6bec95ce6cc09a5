"""NARM teacher and student on MovieLens-100k: configs/eodrec.py with NARM's encoder.

NARM (Li et al. 2017) is the GRU encoder of ccrec/models/gru.py with NARM's readout: the
state at the last click (global encoding), an attention over every click's state with that
state as the query (local encoding), and a bilinear map of the two to d. RecBole's NARM
sizes: d = 64, one GRU layer of 128 units, dropout 0.25 on the item embeddings and 0.5
before the bilinear map. Training, codes, distillation and evaluation are eodrec.py's.

  python launch/train.py --config=configs/narm.py --workdir=runs/narm
"""

from ccrec import config as config_lib


def get_config():
  c = config_lib.sibling(__file__, "eodrec.py")
  c.model.encoder = "narm"
  c.model.readout = "narm"
  c.model.gru_hidden = 128
  c.model.gru_layers = 1
  c.model.dropout = 0.25
  c.model.readout_dropout = 0.5
  return c
