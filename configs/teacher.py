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
  return config_lib.lock(c)
