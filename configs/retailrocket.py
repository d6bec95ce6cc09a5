"""The paper's RetailRocket settings (docs/method.md §1-4), for users who have the data.

  python launch/prepare_data.py --dataset=retailrocket --input=PATH/events.csv
  python launch/train.py --config=configs/retailrocket.py --workdir=runs/retailrocket

Session protocol; d=256, 1 block, 2 heads, dropout 0.2, batch 100, Adam 1e-3,
L2 1e-5, uniform(-0.1, 0.1) init, per-prefix objective; M=3, K=256 (CR about
31); eta=0.7, beta=0.5, gamma=0.3.
"""

from ccrec import config as config_lib


def get_config():
  c = config_lib.base_config()
  c.stages = ("teacher", "codes", "student_pretrain", "distill")
  c.data.dataset = "retailrocket"
  c.data.protocol = "session"
  c.data.max_len = 50
  c.model.d = 256
  c.model.num_blocks = 1
  c.model.num_heads = 2
  c.model.inner = 1024
  c.model.dropout = 0.2
  c.model.attn_dropout = 0.2
  c.model.init = "uniform"
  c.model.init_scale = 0.1
  c.train.objective = "prefix"
  c.train.batch_size = 100
  c.train.l2 = 1e-5
  c.eval.batch_size = 500
  c.codes.num_codebooks = 3
  c.codes.codebook_size = 256
  c.student.eta = 0.7
  c.distill.beta = 0.5
  c.distill.gamma = 0.3
  return config_lib.lock(c)
