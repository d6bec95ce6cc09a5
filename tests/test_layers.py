"""ccrec's layers (docs/DESIGN.md, "Layers"), checked on the import graph.

Every import of every ccrec module is read with `ast`, those inside functions included,
and must go to a layer its own layer may import; module-level cycles are refused; an
import inside a function says why in a comment; the numpy runtime reaches no jax.
"""

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Module (or package) -> layer; a module belongs to the layer of its longest listed prefix.
LAYER_OF = {
    "ccrec": "base",  # the package itself (its __init__), exactly
    "ccrec.atomic": "base",
    "ccrec.config": "base",
    "ccrec.console": "base",
    "ccrec.item_layout": "base",
    "ccrec.data": "data",
    "ccrec.ops": "ops",
    "ccrec.parallel": "platform",
    "ccrec.checkpoint": "platform",
    "ccrec.models": "models",
    "ccrec.evaluation": "evaluation",
    "ccrec.serving": "serving",
    "ccrec.train": "train",
    "ccrec.workflow": "workflow",
    "ccrec.benchmarks": "benchmarks",
}
BELOW_SERVING = {"base", "data", "ops", "platform", "models", "evaluation"}
# Layer -> the layers it may import (besides itself). As docs/DESIGN.md draws them.
MAY_IMPORT = {
    "base": set(),
    "data": {"base"},
    "ops": {"base"},
    "platform": {"base"},
    "models": {"base", "ops"},
    "evaluation": {"base", "data", "platform"},
    "serving": {"base", "data", "models", "evaluation"},
    "train": {"base", "data", "ops", "platform", "models"},
    "workflow": BELOW_SERVING | {"serving", "train"},
    "benchmarks": BELOW_SERVING | {"serving", "train"},
}
# The numpy runtime: with what it imports from ccrec, it must import no jax.
NUMPY_RUNTIME = (
    "ccrec.serving",
    "ccrec.serving.bundle",
    "ccrec.serving.manifest",
    "ccrec.serving.runtime",
    "ccrec.serving.scoring",
    "ccrec.serving.nn",
    "ccrec.serving.evaluate",
)
JAX_FAMILY = ("jax", "jaxlib", "flax", "optax", "orbax")


def _modules() -> dict[str, str]:
  """Module name -> file, for every .py file under ccrec/."""
  out = {}
  for folder, _, files in os.walk(os.path.join(ROOT, "ccrec")):
    for name in files:
      if name.endswith(".py"):
        path = os.path.join(folder, name)
        parts = os.path.relpath(path, ROOT)[:-3].split(os.sep)
        if parts[-1] == "__init__":
          parts = parts[:-1]
        out[".".join(parts)] = path
  return out


MODULES = _modules()


def _layer(module: str) -> str | None:
  if module == "ccrec":
    return LAYER_OF["ccrec"]
  best = max(
      (p for p in LAYER_OF if p != "ccrec" and (module == p or module.startswith(p + "."))),
      key=len,
      default=None,
  )
  return LAYER_OF.get(best)


def _imports(module: str) -> list[tuple[int, str, bool, ast.AST]]:
  """(line, imported module, inside a function or class, node) for every import of `module`.

  `from ccrec.x import y` names module ccrec.x.y when that is a module, else ccrec.x.
  """
  path = MODULES[module]
  with open(path, encoding="utf-8") as f:
    tree = ast.parse(f.read(), path)
  package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
  nested = set()
  for node in ast.walk(tree):
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
      nested.update(id(n) for n in ast.walk(node) if n is not node)
  out = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
        base = ".".join(anchor + ([base] if base else []))
      names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
    else:
      continue
    out += [(node.lineno, name, id(node) in nested, node) for name in dict.fromkeys(names)]
  return out


def _where(module: str, line: int) -> str:
  return f"{os.path.relpath(MODULES[module], ROOT)}:{line}"


def test_every_module_is_in_a_layer():
  missing = sorted(m for m in MODULES if _layer(m) is None)
  assert not missing, (
      f"modules in no layer: {missing}; add them to LAYER_OF here and to " "docs/DESIGN.md (Layers)"
  )
  assert set(LAYER_OF.values()) == set(MAY_IMPORT)


def test_imports_follow_the_layers():
  bad = []
  for module in sorted(MODULES):
    mine = _layer(module)
    for line, imported, _, _ in _imports(module):
      if not imported.startswith("ccrec"):
        continue
      theirs = _layer(imported)
      if theirs != mine and theirs not in MAY_IMPORT[mine]:
        bad.append(
            f"{_where(module, line)} imports {imported} (layer {theirs}): layer {mine} "
            f"may import {sorted(MAY_IMPORT[mine]) or 'no other layer'}"
        )
  assert not bad, "imports against the layer order (docs/DESIGN.md, Layers):\n" + "\n".join(bad)


def _graph() -> dict[str, set[str]]:
  """ccrec module -> the ccrec modules it imports (at any depth of its code)."""
  graph = {m: set() for m in MODULES}
  for module in MODULES:
    for _, imported, _, _ in _imports(module):
      if imported in MODULES and imported != module:
        graph[module].add(imported)
  return graph


def test_no_import_cycles():
  graph, index, low, stack, on_stack, cycles = _graph(), {}, {}, [], set(), []

  def visit(v):  # Tarjan's strongly connected components
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in sorted(graph[v]):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      component = []
      while True:
        w = stack.pop()
        on_stack.discard(w)
        component.append(w)
        if w == v:
          break
      # A package's __init__ importing its own modules is no cycle of concern.
      real = [m for m in component if not any(o.startswith(m + ".") for o in component)]
      if len(real) > 1:
        cycles.append(sorted(component))

  for v in sorted(graph):
    if v not in index:
      visit(v)
  assert not cycles, f"modules that import each other: {cycles}"


def test_imports_inside_functions_say_why():
  bad = []
  for module in sorted(MODULES):
    with open(MODULES[module], encoding="utf-8") as f:
      lines = f.read().splitlines()
    for line, imported, nested, _ in _imports(module):
      if not nested:
        continue
      here = lines[line - 1]
      before = lines[line - 2].strip() if line > 1 else ""
      if "#" not in here and not before.startswith("#"):
        bad.append(
            f"{_where(module, line)} imports {imported} inside a function without a "
            "comment saying why"
        )
  assert not bad, "\n".join(bad)


@pytest.mark.parametrize("module", NUMPY_RUNTIME)
def test_numpy_runtime_reaches_no_jax(module):
  graph = _graph()
  seen, todo, path = {module}, [module], {module: [module]}
  while todo:
    m = todo.pop()
    for line, imported, _, _ in _imports(m):
      if imported.split(".")[0] in JAX_FAMILY:
        chain = " -> ".join(path[m])
        pytest.fail(f"{module} reaches {imported} through {chain} ({_where(m, line)})")
    for nxt in graph[m]:
      if nxt not in seen:
        seen.add(nxt)
        path[nxt] = path[m] + [nxt]
        todo.append(nxt)
