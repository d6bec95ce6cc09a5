"""The teacher alone on MovieLens-100k (leave-one-out, full ranking).

Sizes of RecBole's SASRec comparison: d=64, 2 blocks, 2 heads, inner 256,
max_len 50, dropout 0.5, Adam 1e-3, batch 256, early stopping on validation
NDCG@10 with patience 5.

  python launch/train.py --config=configs/teacher.py --workdir=runs/teacher
"""

from ccrec import config as config_lib


def get_config():
  c = config_lib.base_config()
  c.stages = ("teacher",)
  # ml-100k histories are long (106 clicks on average, windows of 50): the
  # last-position readout trains faster and scores higher here than the
  # unnormalised soft-attention readout (BENCHMARKS.md); set
  # --config.model.readout=soft_attention for the paper's readout.
  c.model.readout = "last"
  c.train.batch_size = 16  # windows of up to 50 targets each (~150 steps per epoch)
  c.train.patience = 10  # validation on 943 users is noisy
  return config_lib.lock(c)
