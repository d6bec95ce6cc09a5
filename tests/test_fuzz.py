"""Fuzzing: every reader and loader, fed mutated copies of small valid inputs, either reads or
raises its own error type, within bounded memory, and runs nothing.

Targets: the click-log readers (RecBole .inter, MovieLens u.data, Diginetica, Yoochoose,
RetailRocket, Tmall, generic CSV/TSV), the session pickles, prepared datasets, and
checkpoints (their state files and their meta). Mutations: flipped bits, deleted,
inserted and duplicated bytes, truncation, and long runs of one byte, with inserts drawn
from the bytes the parsers look for (delimiters, line breaks, quotes, NUL, signs, digits,
dates, stray UTF-8). A read must be consistent: a click log's vocab and a pickle's ids
stay in proportion to the file's size, a restored checkpoint equals what was saved.

Each target runs in a child process under an address-space cap (RLIMIT_AS, through
helpers.run_limited): a MemoryError there fails the test like any exception that is not
the loader's own. An audit hook, armed only while a loader runs, fails on any attempt to
start a process, run code that is not a module's own file, or look up a class by name.
Hypothesis runs derandomized with a fixed number of examples (the inputs that found past
bugs first, as explicit examples): the default run takes seconds per target; `-m slow`
runs ten times as many. `python tests/test_fuzz.py TARGET EXAMPLES` runs one target
without the cap.
"""

import os
import shutil
import sys
import tempfile
import warnings

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(ROOT, "tests", "fixtures")
MEMORY_MIB = {"checkpoint": 3072, "bundle": 3072}  # jax reserves address space at start
FAST = {"checkpoint": 40, "bundle": 50}  # examples; other targets: DEFAULT_FAST
DEFAULT_FAST, DEFAULT_MEMORY_MIB = 150, 1024
TARGETS = (
    "inter",
    "udata",
    "diginetica",
    "yoochoose",
    "retailrocket",
    "tmall",
    "generic",
    "pickle",
    "prepared",
    "checkpoint",
    "bundle",
)


def _run(target: str, examples: int) -> None:
  import helpers

  code = (
      "import sys\n"
      f"sys.path.insert(0, {os.path.join(ROOT, 'tests')!r})\n"
      "import test_fuzz\n"
      f"test_fuzz.main({target!r}, {examples})\n"
  )
  run = helpers.run_limited(
      code, memory_mib=MEMORY_MIB.get(target, DEFAULT_MEMORY_MIB), timeout=600
  )
  assert run.returncode == 0, (run.stdout + run.stderr)[-6000:]
  assert f"fuzzed {target}: {examples} examples" in run.stdout, run.stdout[-2000:]


@pytest.mark.parametrize("target", TARGETS)
def test_fuzz(target):
  _run(target, FAST.get(target, DEFAULT_FAST))


@pytest.mark.slow
@pytest.mark.parametrize("target", TARGETS)
def test_fuzz_slow(target, request):
  if "slow" not in (request.config.getoption("markexpr") or ""):
    pytest.skip("long fuzzing run: select it with -m slow")
  _run(target, 10 * FAST.get(target, DEFAULT_FAST))


# ------------------------------------------------------------------ the child process

_ARMED = [False]
_FORBIDDEN = (
    "os.system",
    "os.exec",
    "os.posix_spawn",
    "os.spawn",
    "os.fork",
    "subprocess.",
    "pickle.find_class",
    "exec",
    "ctypes.",
    "os.startfile",
    "pty.spawn",
)


def _audit(event: str, args) -> None:
  if not _ARMED[0] or not event.startswith(_FORBIDDEN):
    return
  if event == "exec" and os.path.isfile(getattr(args[0], "co_filename", "")):
    return  # a module's own file, imported lazily (numpy.ma, encodings, ...)
  _ARMED[0] = False
  raise AssertionError(f"a loader tried to run something: audit event {event!r} {args!r:.200}")


class _Armed:
  """The audit hook fails on forbidden events inside this block; DataWarnings are allowed."""

  def __enter__(self):
    self._warnings = warnings.catch_warnings()
    self._warnings.__enter__()
    warnings.simplefilter("ignore")
    _ARMED[0] = True

  def __exit__(self, *exc):
    _ARMED[0] = False
    self._warnings.__exit__(*exc)


_TOKENS = [
    b"\n",
    b"\r\n",
    b"\t",
    b",",
    b";",
    b'"',
    b"\x00",
    b"\xff\xfe",
    b"\xc3",
    b"-",
    b"0",
    b"9" * 19,
    b"1e309",
    b"nan",
    b"inf",
    b"2014-02-31",
    b"2016-02-29T24:00:61Z",
    b" ",
    b"T",
    b":",
    b".",
    b"\xef\xbb\xbf",
    b"]",
    b"}",
    b'{"',
    b"99999999999",
]


def _strategies():
  import hypothesis.strategies as st

  edit = st.tuples(
      st.sampled_from(["flip", "delete", "insert", "truncate", "duplicate", "long"]),
      st.integers(0, 1 << 16),
      st.integers(1, 64),
      st.one_of(st.sampled_from(_TOKENS), st.binary(min_size=1, max_size=8)),
  )
  return st, st.lists(edit, min_size=1, max_size=4)


def mutate(data: bytes, edits) -> bytes:
  """`data` with each (kind, position, size, payload) edit applied in turn."""
  b = bytearray(data)
  for kind, pos, size, payload in edits:
    pos %= len(b) + 1
    if kind == "flip" and b:
      b[pos % len(b)] ^= 1 << (size % 8)
    elif kind == "delete":
      del b[pos : pos + size]
    elif kind == "insert":
      b[pos:pos] = payload
    elif kind == "truncate":
      del b[pos:]
    elif kind == "duplicate":
      b[pos:pos] = b[pos : pos + 8 * size]
    elif kind == "long":  # up to 25,600 copies of one byte: a long field, many blank lines
      b[pos:pos] = payload[:1] * (400 * size)
  return bytes(b)


def _readers():
  from ccrec.data import readers

  def generic_iso(p):
    return readers.read_generic(
        p, session_field="s", item_field="i", time_field="t", time_format="iso"
    )

  return {
      "inter": [
          ("sample.inter", readers.read_inter),
          ("sample.inter", lambda p: readers.read_inter(p, encoding="latin-1")),
      ],
      "udata": [("u.data", readers.read_udata)],
      "diginetica": [("train-item-views.csv", readers.read_diginetica)],
      "yoochoose": [("yoochoose-clicks.dat", readers.read_yoochoose)],
      "retailrocket": [
          ("events.csv", readers.read_retailrocket),
          ("events.csv", lambda p: readers.read_retailrocket(p, events=("view",))),
      ],
      "tmall": [("user_log_format1.csv", readers.read_tmall)],
      "generic": [
          (
              "generic.tsv",
              lambda p: readers.read_generic(
                  p, session_field="session", item_field="product", time_field="ts"
              ),
          ),
          (
              b"s,i,t\ns1,a,2014-04-05T00:01:00.559Z\ns1,b,2014-04-05\ns2,a,2014-04-06\n",
              generic_iso,
          ),
      ],
  }


def _check_log(log, file_bytes: int) -> None:
  """A read log is consistent, and its vocab costs memory in proportion to the file."""
  import numpy as np

  n = len(log.item)
  assert n > 0 and len(log.session) == n and len(log.time) == n
  assert np.isfinite(log.time).all()
  assert 0 <= log.item.min() and log.item.max() < len(log.item_vocab)
  vocab = log.item_vocab
  held = vocab.nbytes if vocab.dtype != object else sum(map(len, vocab)) + 8 * len(vocab)
  assert held <= 16 * file_bytes + (1 << 18), (held, file_bytes, vocab.dtype)  # 64K chars


def _fuzz_reader(target: str, workdir: str):
  import hypothesis

  from ccrec.data.errors import DataError

  st, edits = _strategies()
  cases = _readers()[target]
  bases = [
      (
          base if isinstance(base, bytes) else open(os.path.join(FIX, base), "rb").read(),
          base if isinstance(base, str) else "clicks.csv",
          read,
      )
      for base, read in cases
  ]

  @hypothesis.given(st.sampled_from(range(len(bases))), edits)
  @hypothesis.example(0, [("long", 61, 25, b"x")])  # a 10,000-byte item id in sample.inter
  @hypothesis.example(0, [("truncate", -7, 1, b"x")])  # cut off inside the last line
  @hypothesis.example(0, [("insert", 60, 1, b"2014-02-31")])  # an impossible date in a field
  @hypothesis.example(len(bases) - 1, [("delete", 6, 1, b"")])  # generic ISO: a short field
  def fuzz(which, edit_list):
    data, name, read = bases[which]
    path = os.path.join(workdir, name)
    data = mutate(data, edit_list)
    with open(path, "wb") as f:
      f.write(data)
    try:
      with _Armed():
        log = read(path)
    except DataError:
      return
    _check_log(log, len(data))

  return fuzz


def _pickle_bases():
  import pickle

  sessions = [[1, 2, 3, 4], [5, 1], [2, 6, 2, 7, 7]]
  prefixes, targets = [], []
  for seq in sessions:
    for i in range(1, len(seq)):
      targets.append(seq[-i])
      prefixes.append(seq[:-i])
  shared = list(range(1, 60))
  return [pickle.dumps((prefixes, targets), protocol=p) for p in range(6)] + [
      pickle.dumps(([shared] * 50, [1] * 50), protocol=4),  # memo references
      pickle.dumps(([[1.5]], [1])),  # a float id
      pickle.dumps(_Exploit()),  # would run os.system if anything ran it
  ]


class _Exploit:

  def __reduce__(self):
    return (os.system, ("echo pwned",))


def _fuzz_pickle(workdir: str):
  import pickle

  import hypothesis

  from ccrec.data import safe_pickle
  from ccrec.data.errors import DataError

  st, edits = _strategies()
  bases = _pickle_bases()
  test = os.path.join(workdir, "test.txt")
  with open(test, "wb") as f:
    f.write(bases[0])
  values = st.recursive(
      st.one_of(
          st.integers(-3, 2**40),
          st.floats(allow_nan=True),
          st.text(max_size=3),
          st.none(),
          st.booleans(),
      ),
      lambda inner: st.one_of(
          st.lists(inner, max_size=4),
          st.lists(inner, max_size=3).map(tuple),
          st.dictionaries(st.integers(0, 3), inner, max_size=2),
      ),
      max_leaves=12,
  )
  source = st.one_of(
      st.tuples(st.sampled_from(range(len(bases))), edits), st.tuples(values, st.integers(0, 5))
  )

  @hypothesis.given(source, st.booleans())
  @hypothesis.example((6, [("flip", 0, 8, b"")]), False)  # memo amplification, as written
  @hypothesis.example((7, [("flip", 0, 8, b"")]), False)  # the float id
  def fuzz(case, strict):
    first, second = case
    data = (
        mutate(bases[first], second)
        if isinstance(first, int) and isinstance(second, list)
        else pickle.dumps(first, protocol=second)
    )
    path = os.path.join(workdir, "train.txt")
    with open(path, "wb") as f:
      f.write(data)
    try:
      with _Armed():
        prefixes, targets = safe_pickle.load_examples(path)
    except DataError:
      return
    assert all(type(x) is int and x >= 1 for p in prefixes for x in p)
    assert sum(map(len, prefixes)) + len(targets) <= len(data)  # memo repetition is bounded
    try:
      with _Armed():
        ds = safe_pickle.from_pickles(path, test, strict=strict, valid_fraction=0.3)
    except DataError:
      return
    assert len(ds.train) >= 1 and ds.num_items >= 1

  return fuzz


def _fuzz_prepared(workdir: str):
  import hypothesis

  from ccrec.data import dataset, synthetic
  from ccrec.data.errors import DataError

  st, edits = _strategies()
  base = os.path.join(workdir, "base")
  dataset.save(synthetic.synthetic_dataset(30, 40, seed=0, max_len=5), base)
  names = (dataset.ARRAYS_FILE, dataset.MANIFEST_FILE)

  originals = {name: open(os.path.join(base, name), "rb").read() for name in names}
  copy = os.path.join(workdir, "copy")
  os.makedirs(copy)

  @hypothesis.given(st.sampled_from(names), edits)
  def fuzz(name, edit_list):
    for other, data in originals.items():
      with open(os.path.join(copy, other), "wb") as f:
        f.write(mutate(data, edit_list) if other == name else data)
    try:
      with _Armed():
        ds = dataset.load(copy)
    except DataError:
      return
    assert ds.num_items >= 0 and len(ds.item_counts) == ds.num_items + 1

  return fuzz


META = {
    "epoch": 2,
    "best": 0.25,
    "best_epoch": 1,
    "bad_epochs": 0,
    "done": False,
    "best_metrics": {"NDCG@10": 0.25, "count": 3.0},
}


def _fuzz_checkpoint(workdir: str):
  import glob

  import hypothesis
  import jax
  import jax.numpy as jnp
  import numpy as np
  import optax

  from ccrec.checkpoint import Checkpointer, CheckpointError
  from ccrec.train.state import TrainState

  st, edits = _strategies()
  table = jnp.sin(jnp.arange(40 * 8, dtype=jnp.float32)).reshape(40, 8)
  state = TrainState.create({"params": {"table": table, "bias": jnp.ones(8)}}, optax.sgd(0.1))
  base = os.path.join(workdir, "base")
  Checkpointer(base).save(7, state, META)
  step_dir = os.path.join(base, "latest", "7")
  files = sorted(
      os.path.relpath(f, step_dir)
      for f in glob.glob(f"{step_dir}/**", recursive=True)
      if os.path.isfile(f) and not f.endswith("meta/metadata")
  )
  want = [np.asarray(x) for x in jax.tree.leaves(state)]

  # Half the examples damage the meta, half one of the state's files.
  @hypothesis.given(st.one_of(st.just("meta/metadata"), st.sampled_from(files)), edits)
  @hypothesis.example("meta/metadata", [("flip", 3, 0, b"")])  # "epoch" -> "eqoch"
  def fuzz(name, edit_list):
    copy = os.path.join(workdir, "copy")
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(base, copy)
    path = os.path.join(copy, "latest", "7", name)
    with open(path, "rb") as f:
      data = f.read()
    with open(path, "wb") as f:
      f.write(mutate(data, edit_list))
    try:
      with _Armed():
        restored = Checkpointer(copy).restore(state, meta_keys=META)
    except CheckpointError:
      return
    if restored is None:  # the step's own marker files were damaged: no checkpoint is seen
      return
    got_state, got_meta = restored
    assert got_meta == META
    for a, b in zip(jax.tree.leaves(got_state), want, strict=True):
      np.testing.assert_array_equal(np.asarray(a), b)

  return fuzz


def _fuzz_bundle(workdir: str):
  import glob

  import hypothesis
  import jax
  import numpy as np

  from ccrec.models.recommender import ModelSpec, SessionRecommender, init_variables
  from ccrec.serving.bundle import BundleError
  from ccrec.serving.export import export_model
  from ccrec.serving.runtime import Recommender

  st, edits = _strategies()
  spec = ModelSpec(
      num_items=30,
      d=8,
      num_blocks=1,
      num_heads=2,
      inner=16,
      max_len=5,
      embedding="codes",
      num_codebooks=2,
      codebook_size=4,
      readout="last",
  )
  base = os.path.join(workdir, "base")
  export_model(
      base,
      spec,
      init_variables(SessionRecommender(spec), jax.random.key(0)),
      item_counts=np.arange(31),
  )
  files = sorted(os.path.relpath(f, base) for f in glob.glob(f"{base}/*") if os.path.isfile(f))
  sessions = [[1, 2, 3], [5], [30, 29, 28, 27, 26, 25], [7, 7]]
  want = [Recommender.load(base).recommend(s, k=10) for s in sessions]

  # Half the examples damage the manifest, half one of the arrays: every damage is a
  # BundleError, or (an informational manifest field) the same recommendations.
  @hypothesis.given(st.one_of(st.just("manifest.json"), st.sampled_from(files)), edits)
  @hypothesis.example("manifest.json", [("flip", 0, 0, b"")])
  def fuzz(name, edit_list):
    copy = os.path.join(workdir, "copy")
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(base, copy)
    path = os.path.join(copy, name)
    with open(path, "rb") as f:
      data = f.read()
    with open(path, "wb") as f:
      f.write(mutate(data, edit_list))
    try:
      with _Armed():
        rec = Recommender.load(copy)
        got = [rec.recommend(s, k=10) for s in sessions]
    except BundleError:
      return
    for a, b in zip(got, want, strict=True):
      np.testing.assert_array_equal(a.ids, b.ids)
      np.testing.assert_array_equal(a.scores, b.scores)

  return fuzz


def main(target: str, examples: int) -> None:
  """Runs `examples` derandomized examples of `target` (in this capped child process)."""
  import hypothesis

  sys.addaudithook(_audit)
  settings = hypothesis.settings(
      max_examples=examples,
      derandomize=True,
      database=None,
      deadline=None,
      suppress_health_check=list(hypothesis.HealthCheck),
      print_blob=False,
  )
  with tempfile.TemporaryDirectory() as workdir:
    if target == "pickle":
      fuzz = _fuzz_pickle(workdir)
    elif target == "prepared":
      fuzz = _fuzz_prepared(workdir)
    elif target == "checkpoint":
      fuzz = _fuzz_checkpoint(workdir)
    elif target == "bundle":
      fuzz = _fuzz_bundle(workdir)
    else:
      fuzz = _fuzz_reader(target, workdir)
    settings(fuzz)()
  print(f"fuzzed {target}: {examples} examples")


if __name__ == "__main__":
  main(sys.argv[1], int(sys.argv[2]))
