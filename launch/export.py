r"""Exports a trained workdir's student (or teacher) as an on-device bundle.

  python launch/export.py --workdir=runs/eodrec --output=bundles/eodrec
  python launch/export.py --workdir=runs/eodrec --output=bundles/eodrec_int8 --codebooks=int8
  python launch/export.py --workdir=runs/eodrec --output=bundles/teacher --model=teacher

Then, with numpy alone:

  from ccrec.serving.runtime import Recommender
  rec = Recommender.load("bundles/eodrec")
  rec.recommend(["50", "172", "133"], k=20).items      # raw item ids, best first

Prints the manifest's metrics, sizes and verification (the runtime's top-20
vs the JAX model's on the test split).

One model file instead (needs `pip install -e '.[export]'`; docs/export.md):

  python launch/export.py --workdir=runs/eodrec --format=litert --output=out/student.tflite
  python launch/export.py --workdir=runs/eodrec --format=onnx --output=out/student.onnx \
      --quantize=int8 --k=20 --batch=100

writes the file and its id map (out/student.tflite.json), after checking the file's
top-k against the Flax model's on every test session (ccrec/serving/convert.py).
"""

import json

import _errors
from absl import app, flags

from ccrec.workflow.export import export_workdir, export_workdir_file

_WORKDIR = flags.DEFINE_string("workdir", None, "A workdir written by launch/train.py.")
_OUTPUT = flags.DEFINE_string(
    "output", None, "Bundle directory (or .tflite / .onnx file) " "to write."
)
_FORMAT = flags.DEFINE_enum(
    "format",
    "bundle",
    ["bundle", "litert", "onnx"],
    "bundle: numpy bundle directory; litert: .tflite; onnx: .onnx.",
)
_QUANTIZE = flags.DEFINE_enum(
    "quantize",
    "none",
    ["none", "int8"],
    "litert/onnx: int8 " "codebooks and Dense kernels (bundles: --codebooks=int8).",
)
_PAIR_CODES = flags.DEFINE_bool(
    "pair_codes",
    True,
    "litert/onnx: store and score the codebooks in pairs (K^2-entry tables) where "
    "K^2 <= 65536; --nopair_codes: one row per codebook.",
)
_K = flags.DEFINE_integer("k", 20, "litert/onnx: items the model file returns.")
_BATCH = flags.DEFINE_integer(
    "batch",
    0,
    "litert/onnx: 0 = one session per call (outputs "
    "[k]); B = a fixed batch of B sessions (outputs [B, k]).",
)
_MODEL = flags.DEFINE_enum("model", "student", ["student", "teacher"], "Which model to export.")
_CODEBOOKS = flags.DEFINE_enum(
    "codebooks", "float32", ["float32", "int8"], "Codebook storage (int8: per-codeword scale)."
)
_EVALUATE = flags.DEFINE_bool("evaluate", True, "Record the runtime's test metrics.")
_VERIFY = flags.DEFINE_bool("verify", True, "Compare the runtime's top-20 with the JAX model's.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an existing bundle at --output.")
flags.mark_flags_as_required(["workdir", "output"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if _FORMAT.value != "bundle":
    report = export_workdir_file(
        _WORKDIR.value,
        _OUTPUT.value,
        fmt=_FORMAT.value,
        model=_MODEL.value,
        k=_K.value,
        batch=_BATCH.value or None,
        quantize=None if _QUANTIZE.value == "none" else "int8",
        pair_codes=_PAIR_CODES.value,
        verify=_VERIFY.value,
        overwrite=_OVERWRITE.value,
    )
    print(json.dumps(report, indent=1, sort_keys=True))
    return
  if _QUANTIZE.value != "none":
    raise app.UsageError("--quantize is for --format=litert|onnx; bundles use --codebooks=int8")
  manifest = export_workdir(
      _WORKDIR.value,
      _OUTPUT.value,
      model=_MODEL.value,
      codebook_dtype=_CODEBOOKS.value,
      evaluate=_EVALUATE.value,
      verify=_VERIFY.value,
      overwrite=_OVERWRITE.value,
  )
  print(
      json.dumps(
          {k: manifest.get(k) for k in ("kind", "config", "sizes", "metrics", "verification")},
          indent=1,
          sort_keys=True,
      )
  )


if __name__ == "__main__":
  _errors.run(main)
