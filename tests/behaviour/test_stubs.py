"""The type stubs (python/plait/_plait.pyi) name exactly what the extension
module defines: every stubbed class and method exists at runtime, and every
public runtime method is stubbed. (A dependency-free stand-in for
mypy.stubtest.)"""

import ast
from pathlib import Path

import plait._plait as ext

STUB = Path(ext.__file__).with_name("_plait.pyi")


def stub_classes():
    tree = ast.parse(STUB.read_text())
    out = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            names = set()
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AnnAssign)):
                    names.add(item.name if isinstance(item, ast.FunctionDef) else item.target.id)
            out[node.name] = names
    return out


def test_stubbed_names_exist():
    for cls, names in stub_classes().items():
        runtime = getattr(ext, cls)
        for name in names:
            assert hasattr(runtime, name), f"{cls}.{name} is stubbed but missing"


def test_public_runtime_methods_are_stubbed():
    stubs = stub_classes()
    for cls, names in stubs.items():
        runtime = getattr(ext, cls)
        inherited = set()
        for base in runtime.__mro__[1:]:
            inherited |= stubs.get(base.__name__, set())
        public = {n for n in vars(runtime) if not n.startswith("_")}
        missing = public - names - inherited
        assert not missing, f"{cls}: not in the stub: {sorted(missing)}"


def test_every_class_is_stubbed():
    classes = {n for n, v in vars(ext).items() if isinstance(v, type)}
    assert classes <= set(stub_classes())
