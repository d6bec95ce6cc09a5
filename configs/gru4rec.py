"""GRU4Rec teacher and student on MovieLens-100k: configs/eodrec.py with a GRU encoder.

RecBole's GRU4Rec sizes (d = 64, one GRU layer of 128 units, dropout 0.3 on the item
embeddings) under ccrec's training, codes, distillation and evaluation, unchanged
otherwise. The readout is the state at the last click (`last`), as in GRU4Rec.

  python launch/train.py --config=configs/gru4rec.py --workdir=runs/gru4rec
"""

from ccrec import config as config_lib


def get_config():
  c = config_lib.sibling(__file__, "eodrec.py")
  c.model.encoder = "gru4rec"
  c.model.gru_hidden = 128
  c.model.gru_layers = 1
  c.model.dropout = 0.3
  c.model.readout = "last"
  return c
