"""Reading spec files: YAML or TOML to a dict, within size bounds, and built-in specs by name.

YAML is read with PyYAML's safe loader (with YAML 1.2's booleans and floats,
see `yaml12`), TOML with tomllib: nothing in a spec can execute code. The
composed YAML node graph is checked before any object is built, so an alias
bomb, a recursive alias or a key given twice is refused with a message
instead of hanging the loader or being silently dropped.
"""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from hydranet.core import yaml12
from hydranet.core.errors import SpecError, did_you_mean
from hydranet.core.paths import dead_link, not_utf8, os_reason
from hydranet.core.spec_problems import format_path
from hydranet.core.yaml12 import SpecLoader

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib


#: Guards on what a spec file may expand to. A real spec is a few hundred bytes,
#: a few hundred values and six levels deep; these limits are far above that and
#: far below what would hang the loader or exhaust memory (a YAML alias bomb
#: is a few lines that expand to billions of values).
MAX_SPEC_BYTES = 1 << 20
MAX_SPEC_VALUES = 100_000
MAX_SPEC_DEPTH = 50

#: What a spec file's name ends with.
SPEC_SUFFIXES = (".yaml", ".yml", ".toml")
#: How to save a spec that is not UTF-8 as UTF-8, for `not_utf8`'s advice.
SAVE_AS = "UTF-8 (an editor's Save As or encoding menu: 'UTF-8')"


def read_spec_file(path: str | Path) -> dict[str, Any]:
    """Parse a YAML or TOML spec into a dict; unreadable, malformed or oversized files raise SpecError."""
    path = Path(path)
    source = str(path)
    if path.is_dir():
        raise SpecError([("", _a_folder(path))], source)
    if not path.is_file():
        if path.exists():  # /dev/null, a pipe, a socket: reading it could hang, or give nothing
            raise SpecError([("", f"{path} is not a regular file (a device, pipe or socket); pass a spec file")],
                            source)
        link = dead_link(path)
        if link:
            raise SpecError([("", f"{path} is a {link}; point it at the spec file, or pass the spec file")], source)
        hint = f" Built-in specs: {', '.join(builtin_spec_names())}." if builtin_spec_names() else ""
        raise SpecError([("", f"spec file not found: {path}.{hint}")], source)
    try:
        size = path.stat().st_size
        if size > MAX_SPEC_BYTES:
            raise SpecError([("", f"{path.name} is {size} bytes, over the {MAX_SPEC_BYTES}-byte limit for a spec "
                                  "(a spec is a few hundred bytes); is this the right file?")], source)
        raw = path.read_bytes()
        text = raw.decode("utf-8-sig")  # "UTF-8 with BOM" (Notepad, VS Code) is UTF-8: TOML refuses the mark
    except UnicodeDecodeError:
        raise SpecError([("", f"the spec file {not_utf8(raw, SAVE_AS)}")], source) from None
    except OSError as error:
        raise SpecError([("", f"cannot read spec file {path}: {os_reason(error)}")], source) from None
    if path.suffix.lower() == ".toml":
        try:
            data: Any = tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            raise SpecError([("", f"invalid TOML: {error}")], source) from None
        except RecursionError:
            raise SpecError([("", "invalid TOML: nested too deeply")], source) from None
    else:
        try:
            data = _safe_load_bounded(text)
        except yaml.YAMLError as error:
            raise SpecError([("", yaml12.error_message(error))], source) from None
        except _DuplicateKeys as error:
            raise SpecError(error.problems, source) from None
        except RecursionError:
            raise SpecError([("", "invalid YAML: nested too deeply")], source) from None
        except _TooBig as error:
            raise SpecError([("", f"YAML {error}")], source) from None
    if data is None:
        raise SpecError([("", "the spec is empty; it needs at least `tasks` and `data` (see `hydranet spec show demo`)")], source)
    if not isinstance(data, dict):
        raise SpecError([("", f"a spec must be a mapping of sections, not a {type(data).__name__}")], source)
    if nesting_depth(data) > MAX_SPEC_DEPTH:
        raise SpecError([("", f"the spec is nested more than {MAX_SPEC_DEPTH} levels deep "
                              "(a spec needs about six); is this the right file?")], source)
    return data


def _a_folder(path: Path) -> str:
    """A folder given where a spec file goes: name the spec files in it, if any."""
    try:
        specs = sorted(p.name for p in path.iterdir() if p.suffix.lower() in SPEC_SUFFIXES and p.is_file())
    except OSError:
        specs = []
    if not specs:
        return f"{path} is a folder, not a spec file, and holds no .yaml, .yml or .toml file; pass a spec file"
    more = f" (and {len(specs) - 10} more)" if len(specs) > 10 else ""
    return (f"{path} is a folder, not a spec file; pass one of the spec files in it: "
            f"{', '.join(str(path / name) for name in specs[:10])}{more}")


class _TooBig(Exception):
    """A YAML document whose aliases would expand past the limits."""


class _DuplicateKeys(Exception):
    """Keys given twice in one YAML mapping: (path, message) each."""

    def __init__(self, problems: list[tuple[str, str]]):
        super().__init__(problems)
        self.problems = problems


def _check_duplicate_keys(root: yaml.Node) -> None:
    """PyYAML keeps the last of two equal keys without a word; a spec with two `data:` sections is a mistake."""
    problems, seen, stack = [], set(), [(root, [])]
    while stack:
        node, path = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            stack.extend((child, [*path, index]) for index, child in enumerate(node.value))
        elif isinstance(node, yaml.MappingNode):
            marks: dict[str, yaml.Mark] = {}
            for key, value in node.value:
                name = key.value if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge" else None
                if name is not None and name in marks:
                    problems.append((format_path([*path, name]), f"given twice ({_where_twice(marks[name], key.start_mark)}); "
                                                                 "YAML would silently keep only the last: keep one"))
                elif name is not None:
                    marks[name] = key.start_mark
                stack.append((value, [*path, name if name is not None else "?"]))
    if problems:
        raise _DuplicateKeys(sorted(problems))


def _where_twice(first: yaml.Mark, second: yaml.Mark) -> str:
    """"lines 2 and 5", or "line 4, columns 8 and 19" for a flow mapping on one line (`{epochs: 3, epochs: 4}`)."""
    if first.line == second.line:
        return f"line {first.line + 1}, columns {first.column + 1} and {second.column + 1}"
    return f"lines {first.line + 1} and {second.line + 1}"


def _safe_load_bounded(text: str) -> Any:
    """`yaml.safe_load` (with YAML 1.2's booleans), but the composed node graph is checked before any object is built.

    Aliases are allowed (`&defaults` ... `*defaults` is handy), but one that
    refers to a node containing it, or a document that would expand to more
    than MAX_SPEC_VALUES values, is refused without being expanded.
    """
    loader = SpecLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_yaml_graph(node)
        _check_duplicate_keys(node)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _yaml_children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _check_yaml_graph(root: yaml.Node) -> None:
    """Count the values the document expands to (aliases counted each time), without recursion."""
    expanded: dict[int, int] = {}  # id(node) -> values it expands to, once finished
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            on_path.discard(key)
            expanded[key] = 1 + sum(expanded[id(child)] for child in _yaml_children(node))
            if expanded[key] > MAX_SPEC_VALUES:
                raise _TooBig(f"aliases expand to more than {MAX_SPEC_VALUES} values (an alias bomb?); "
                              "write the values out, or alias less")
        elif key in on_path:
            raise _TooBig(f"value at line {node.start_mark.line + 1} contains an alias to itself; "
                          "a spec cannot be recursive")
        elif key not in expanded:
            on_path.add(key)
            stack.append((node, True))
            stack.extend((child, False) for child in _yaml_children(node))


def nesting_depth(data: Any) -> int:
    """How deeply lists and dicts nest in `data` (acyclic), without recursion; stops early past the limit."""
    deepest, stack = 0, [(data, 1)]
    while stack and deepest <= MAX_SPEC_DEPTH:
        value, level = stack.pop()
        deepest = max(deepest, level)
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
        stack.extend((child, level + 1) for child in children)
    return deepest


def builtin_spec_names() -> list[str]:
    return sorted(p.name.rsplit(".", 1)[0] for p in resources.files("hydranet.specs").iterdir()
                  if p.name.endswith((".yaml", ".toml")))


def builtin_spec_path(name: str) -> Path:
    for suffix in (".yaml", ".toml"):
        candidate = resources.files("hydranet.specs") / f"{name}{suffix}"
        if candidate.is_file():
            return Path(str(candidate))
    raise SpecError([("", f"no built-in spec '{name}';{did_you_mean(name, builtin_spec_names())} "
                          f"built-in specs: {', '.join(builtin_spec_names())}")])


def find_spec(name_or_path: str | Path) -> Path:
    """A spec file path, or a built-in spec's name such as `demo`."""
    path = Path(name_or_path)
    if path.exists() or path.suffix.lower() in SPEC_SUFFIXES or "/" in str(name_or_path):
        return path
    return builtin_spec_path(str(name_or_path))
