"""The Tmall model on the generated million-item catalog `synthetic-1m` (docs/data.md).

  python launch/prepare_data.py --dataset=synthetic-1m
  python launch/train.py --config=configs/synthetic_1m.py --workdir=runs/synthetic_1m

configs/synthetic_40k.py at 999,999 items (8,625,000 training examples): M=4 codebooks of
K=256 (32^4 codes would leave almost no room for distinct codes; CR about 31 at d=128);
every recommendation loss and the soft targets on a sampled candidate set (the batch's
targets + 8,192 popularity draws per step, log-Q corrected; ccrec/ops/sampled.py);
evaluation scores the catalog 65,536 items at a time; the code learner's early-stopping
checks scan a fixed sample of 65,536 items (the whole table would cost as much as 4,000
training steps per check), the best check's codes are then computed over every item. On
several devices --config.parallel.model splits the item table (V + 1 = 10^6 rows: 2, 4,
8, ... 64 ways).
"""

from ccrec import config as config_lib


def get_config():
  c = config_lib.sibling(__file__, "synthetic_40k.py")
  c.data.dataset = "synthetic-1m"
  c.codes.codebook_size = 256
  c.codes.check_items = 65_536
  c.train.loss = "sampled"
  c.train.num_negatives = 8192
  c.eval.item_chunk = 65_536
  return c
