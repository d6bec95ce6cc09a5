"""The paper's Tmall (IJCAI-15) settings (docs/method.md §1-4), for users who have the data.

  python launch/prepare_data.py --dataset=tmall --input=PATH/user_log_format1.csv
  python launch/train.py --config=configs/tmall.py --workdir=runs/tmall

Session protocol; d=128, 1 block, 1 head, dropout 0.5, batch 100, Adam 1e-3,
L2 1e-5, uniform(-0.1, 0.1) init, per-prefix objective; M=4, K=32 (CR about
29); eta=0.8, beta=0.01, gamma=0.3.
"""

from ccrec import config as config_lib


def get_config():
  c = config_lib.base_config()
  c.stages = ("teacher", "codes", "student_pretrain", "distill")
  c.data.dataset = "tmall"
  c.data.protocol = "session"
  c.data.max_len = 40
  c.model.d = 128
  c.model.num_blocks = 1
  c.model.num_heads = 1
  c.model.inner = 512
  c.model.dropout = 0.5
  c.model.attn_dropout = 0.5
  c.model.init = "uniform"
  c.model.init_scale = 0.1
  c.train.objective = "prefix"
  c.train.batch_size = 100
  c.train.l2 = 1e-5
  c.eval.batch_size = 500
  c.codes.num_codebooks = 4
  c.codes.codebook_size = 32
  c.student.eta = 0.8
  c.distill.beta = 0.01
  c.distill.gamma = 0.3
  return config_lib.lock(c)
