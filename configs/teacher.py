"""The teacher alone on MovieLens-100k (leave-one-out, full ranking): ccrec's strongest teacher.

configs/eodrec.py's teacher stage (sizes of RecBole's SASRec comparison: d=64, 2 blocks,
2 heads, inner 256, max_len 50, dropout 0.5, Adam 1e-3; every position of a 50-click
window a target of one causal pass, batch 16 windows, patience 10, label smoothing 0.3,
the last-position readout) plus R-Drop: two dropout passes per step, the mean of their
cross-entropies plus alpha times the symmetric KL between their next-item distributions
(Liang et al. 2021). Its loss is fused with the scoring matmul, 128 rows at a time with
closed-form gradients (ccrec/ops/fused.py). Accuracy and speed against RecBole's SASRec:
BENCHMARKS.md sections 1-2.

  python launch/train.py --config=configs/teacher.py --workdir=runs/teacher
"""

from ccrec import config as config_lib


def get_config():
  c = config_lib.sibling(__file__, "eodrec.py")
  c.stages = ("teacher",)
  c.train.rdrop = 1.0  # weight alpha of the symmetric KL (0 = the plain step)
  c.train.fused_chunk = 128  # rows per chunk of the fused scoring + loss (0 = materialised)
  return c
