"""configs/synthetic_40k.py with the paper's RetailRocket codes: M=3 codebooks of K=256.

  python launch/train.py --config=configs/synthetic_40k_m3k256.py --workdir=runs/s40k_m3k256

Only the codes change (the Tmall model, d=128, stays), so the two compressed students can
be compared over one teacher setting: CR = V d / (M K d + M V) is about 24 here (the
paper's 31 is at RetailRocket's d=256). The same as
--config=configs/synthetic_40k.py --config.codes.num_codebooks=3 --config.codes.codebook_size=256.
"""

from ccrec import config as config_lib


def get_config():
  c = config_lib.sibling(__file__, "synthetic_40k.py")
  c.codes.num_codebooks = 3
  c.codes.codebook_size = 256
  return c
